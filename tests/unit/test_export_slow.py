"""The 200 seeded samples of each space through export and the ONNX Runtime check (~5 min).

Marked ``slow``, not ``unit``: 400 exports would make ``pytest -m unit`` take minutes.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hpc2edge.models.export import export_onnx  # noqa: E402
from tests.unit.test_export import N_SAMPLES, one_torch_thread, samples  # noqa: E402, F401

pytestmark = pytest.mark.slow


def test_cnn3d_200_samples_export_and_match_onnx_runtime():
    for spec in samples("cnn3d", N_SAMPLES):
        export_onnx(spec, seed=0)  # raises ExportError beyond 1e-4


# One test per sample: each stays far below the per-test timeout, and a failure names its sample.
@pytest.mark.parametrize("index", range(N_SAMPLES))
def test_swin3d_200_samples_export_and_match_onnx_runtime(index):
    export_onnx(samples("swin3d", N_SAMPLES)[index], seed=0)
