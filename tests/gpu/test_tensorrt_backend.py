"""The TensorRT backend on a real GPU: build, cache, output check and timing.

Skipped (with the reason) where TensorRT or pycuda is missing, e.g. on CI and on CPU hosts. On a
Jetson: run with the venv created with --system-site-packages.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

pytest.importorskip(
    "tensorrt",
    reason="TensorRT is not installed (JetPack on a Jetson; `pip install 'hpc2edge[tensorrt]'`)",
)
pytest.importorskip("pycuda.driver", reason="pycuda is not installed (JetPack; hpc2edge[tensorrt])")
onnx = pytest.importorskip("onnx", reason="onnx builds the test model")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hpc2edge.errors import EngineBuildError  # noqa: E402
from hpc2edge.latency.backends.tensorrt import TensorRTBackend  # noqa: E402
from hpc2edge.latency.base import Reference, reference_input  # noqa: E402
from hpc2edge.latency.protocol import Protocol  # noqa: E402

INPUT_SHAPE = (1, 4, 8, 8)  # (C, T, H, W) without the batch axis
FEATURES = int(np.prod(INPUT_SHAPE))
SEED = 7


def _weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((FEATURES, 2)) / np.sqrt(FEATURES)).astype(np.float32)
    b = np.array([0.25, -0.5], dtype=np.float32)
    return w, b


def _numpy_model(x: np.ndarray) -> np.ndarray:
    w, b = _weights()
    return x.reshape(x.shape[0], -1).astype(np.float64) @ w + b


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    """Flatten -> MatMul -> Add: [N, 1, 4, 8, 8] -> [N, 2], batch axis dynamic."""
    w, b = _weights()
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *INPUT_SHAPE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def reference() -> Reference:
    x = reference_input(INPUT_SHAPE, 1, SEED)
    return Reference(seed=SEED, outputs=tuple(float(v) for v in _numpy_model(x).ravel()))


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = TensorRTBackend(cache_dir=tmp_path_factory.mktemp("trt-cache"), workspace_mib=256)
    yield b
    b.close()


def test_fingerprint(backend):
    fp = backend.fingerprint()
    assert fp["backend"] == "tensorrt"
    assert fp["tensorrt_version"] and fp["device_name"] and fp["total_memory_bytes"] > 0
    assert fp["compute_capability"].count(".") == 1


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_prepare_check_measure(backend, onnx_bytes, reference, precision):
    prepared = backend.prepare(onnx_bytes, precision, INPUT_SHAPE, (1, 2))
    try:
        assert prepared.batch_sizes == (1, 2)
        assert prepared.info["profile"] == {"min": 1, "opt": 2, "max": 2}
        check = backend.check_outputs(prepared, reference)
        assert check.ok, check
        x = reference_input(INPUT_SHAPE, 2, SEED + 1)
        got = backend._infer(prepared, x)
        assert got.shape == (2, 2)
        np.testing.assert_allclose(got, _numpy_model(x), atol=check.tolerance)
        for batch in (1, 2):
            m = backend.measure(prepared, batch, Protocol.quick())
            for series in (m.compute, m.end_to_end):
                s = series.stats
                assert s.n >= Protocol.quick().min_runs
                assert 0 < s.min_ms <= s.median_ms <= s.max_ms < 1000
                assert series.stopped_by in ("converged", "max_runs", "max_time")
            # Copies and host work are on top of the execution.
            assert m.end_to_end.stats.median_ms > 0.5 * m.compute.stats.median_ms
    finally:
        backend.release(prepared)
    assert prepared.handle is None


def test_engine_cache_hit(backend, onnx_bytes):
    first = backend.prepare(onnx_bytes, "fp32", INPUT_SHAPE, (1, 4))
    backend.release(first)
    plan = backend.cache_dir / "engines" / f"{first.info['engine_key']}.plan"
    assert plan.is_file() and (backend.cache_dir / "timing.cache").is_file()
    second = backend.prepare(onnx_bytes, "fp32", INPUT_SHAPE, (1, 4))
    backend.release(second)
    assert second.info["engine_cache"] == "hit"
    assert second.info["engine_key"] == first.info["engine_key"]
    if first.info["engine_cache"] == "miss":
        assert second.build_s < first.build_s
    other = backend.prepare(onnx_bytes, "fp16", INPUT_SHAPE, (1, 4))
    backend.release(other)
    assert other.info["engine_key"] != first.info["engine_key"]


def test_int8_builds_and_is_checked(backend, onnx_bytes, reference):
    prepared = backend.prepare(onnx_bytes, "int8", INPUT_SHAPE, (1,))
    try:
        assert prepared.info["int8_calibration"] == "placeholder ranges"
        check = backend.check_outputs(prepared, reference)
        assert np.isfinite(check.max_abs_error)  # ok or not: the service marks it failing
        m = backend.measure(prepared, 1, Protocol.quick())
        assert m.compute.stats.median_ms > 0
    finally:
        backend.release(prepared)


def test_parser_errors_are_engine_build_errors(backend):
    with pytest.raises(EngineBuildError, match="cannot parse"):
        backend.prepare(b"not an onnx model", "fp32", INPUT_SHAPE, (1,))


def test_wrong_input_shape_is_refused(backend, onnx_bytes):
    with pytest.raises(EngineBuildError, match="expected"):
        backend.prepare(onnx_bytes, "fp32", (1, 4, 8, 9), (1,))
