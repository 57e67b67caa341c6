"""The rest of the 200 seeded swin3d samples through export and the ONNX Runtime check (~4 min)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hpc2edge.models.export import export_onnx  # noqa: E402
from tests.unit.test_export import N_SAMPLES, N_SWIN_EXPORTS_FAST, samples  # noqa: E402

pytestmark = pytest.mark.slow  # not unit: `pytest -m unit` stays fast


@pytest.mark.parametrize("index", range(N_SWIN_EXPORTS_FAST, N_SAMPLES))
def test_swin3d_200_samples_export_and_match_onnx_runtime(index):
    torch.set_num_threads(1)  # see test_export.one_torch_thread
    export_onnx(samples("swin3d", N_SAMPLES)[index], seed=0)
