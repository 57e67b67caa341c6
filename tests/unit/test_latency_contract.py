"""The LatencyBackend contract suite (:mod:`hpc2edge.testing.latency`) on every backend.

``onnxruntime`` and ``table`` run everywhere; ``tensorrt`` runs where TensorRT and pycuda import
(a Jetson or an NVIDIA host) and is skipped with the reason otherwise. Then what only one backend
does.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpc2edge.errors import MeasurementError
from hpc2edge.latency import get_backend
from hpc2edge.latency.backends.table import TableBackend
from hpc2edge.latency.base import reference_input
from hpc2edge.latency.protocol import Protocol
from hpc2edge.testing.latency import (
    SHAPE,
    LatencyBackendContract,
    contract_model,
    contract_records,
    recorded_table,
)
from hpc2edge.testing.models import tiny_model

pytestmark = pytest.mark.unit

MODEL = contract_model()


class TestOnnxRuntimeBackend(LatencyBackendContract):
    @pytest.fixture
    def backend(self):
        return get_backend("onnxruntime", intra_op_threads=1)


class TestTableBackend(LatencyBackendContract):
    @pytest.fixture
    def backend(self):
        return recorded_table()


class TestTensorRTBackend(LatencyBackendContract):
    @pytest.fixture
    def backend(self, tmp_path):
        pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack / NVIDIA host)")
        pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
        return get_backend("tensorrt", cache_dir=tmp_path)


# --- backend-specific ---------------------------------------------------------------------------


def test_onnxruntime_refuses_precisions_it_cannot_run():
    with pytest.raises(MeasurementError, match="does not support fp16"):
        get_backend("onnxruntime").prepare(MODEL.onnx_bytes, "fp16", SHAPE, [1])


def test_onnxruntime_refuses_a_wrong_input_shape():
    with pytest.raises(MeasurementError, match="shape"):
        get_backend("onnxruntime").prepare(MODEL.onnx_bytes, "fp32", (1, 4, 16, 16), [1])


def test_onnxruntime_output_equals_numpy():
    backend = get_backend("onnxruntime")
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [2])
    x = reference_input(SHAPE, 2, 11)
    np.testing.assert_allclose(backend._infer(prepared, x), MODEL.reference(x), atol=1e-5)


def test_table_replay_is_deterministic():
    a = recorded_table()
    b = recorded_table()
    pa = a.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [2])
    pb = b.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [2])
    ma = a.measure(pa, 2, Protocol())
    mb = b.measure(pb, 2, Protocol())
    assert ma.to_json() == mb.to_json()
    assert ma.compute.stats.median_ms == pytest.approx(1.02)


def test_table_never_invents_numbers():
    backend = recorded_table()
    with pytest.raises(MeasurementError, match="no recording"):
        backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [8])
    with pytest.raises(MeasurementError, match="no recording"):
        backend.prepare(tiny_model(SHAPE, seed=1).onnx_bytes, "fp32", SHAPE, [1])


def test_table_file_round_trip(tmp_path):
    from hpc2edge.latency.backends.table import save_table

    path = tmp_path / "t.json"
    save_table(path, contract_records())
    backend = TableBackend(path)
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [4])
    assert backend.measure(prepared, 4, Protocol.quick()).compute.stats.median_ms > 2
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(MeasurementError, match="not a"):
        TableBackend(tmp_path / "bad.json")


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown latency backend"):
        get_backend("openvino")
