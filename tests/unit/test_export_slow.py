"""The 200 seeded samples of each space through export and the ONNX Runtime check (~5 min).

Marked ``slow``, not ``unit``: 400 exports would make ``pytest -m unit`` take minutes.

Each export builds the sample (``build_model``), traces its forward at batch 1, and the check
runs PyTorch's forward at batch 2 against ONNX Runtime (any non-finite output fails it: the
error is NaN). With the graph's output asserted to be ``[batch, 2]`` here, this also covers what
a separate "build the 200 swin3d samples and run them forward" test did (shape ``(1, 2)``,
finite); the cnn3d ones also run forward in the unit tier (test_models_build.py).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hpc2edge.models.export import OUTPUT_NAME, export_onnx  # noqa: E402
from hpc2edge.space import ArchSpec  # noqa: E402
from tests.unit.test_export import N_SAMPLES, one_torch_thread, samples  # noqa: E402, F401

pytestmark = pytest.mark.slow


def export_and_check(spec: ArchSpec) -> None:
    data = export_onnx(spec, seed=0)  # raises ExportError beyond 1e-4 (or a non-finite output)
    (out,) = onnx.load_from_string(data).graph.output
    assert out.name == OUTPUT_NAME
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 2]


def test_cnn3d_200_samples_export_and_match_onnx_runtime():
    for spec in samples("cnn3d", N_SAMPLES):
        export_and_check(spec)


# One test per sample: each stays far below the per-test timeout, and a failure names its sample.
@pytest.mark.parametrize("index", range(N_SAMPLES))
def test_swin3d_200_samples_export_and_match_onnx_runtime(index):
    export_and_check(samples("swin3d", N_SAMPLES)[index])
