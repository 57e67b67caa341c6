"""One contract suite, run against every latency backend (docs/design.md, "Layout": testing/).

``onnxruntime`` and ``table`` run everywhere; ``tensorrt`` runs where TensorRT and pycuda import
(a Jetson or an NVIDIA host) and is skipped with the reason otherwise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpc2edge.errors import MeasurementError
from hpc2edge.latency import get_backend
from hpc2edge.latency.backends.table import Record, TableBackend
from hpc2edge.latency.base import Reference, reference_input
from hpc2edge.latency.protocol import Protocol

from ..support.onnx_models import tiny_model

pytestmark = pytest.mark.unit

SHAPE = (1, 4, 8, 8)
MODEL = tiny_model(SHAPE)
REF = Reference(seed=3, outputs=tuple(MODEL.reference(reference_input(SHAPE, 1, 3)).ravel()))


def _table_backend() -> TableBackend:
    import hashlib

    sha = hashlib.sha256(MODEL.onnx_bytes).hexdigest()
    records = [
        Record(
            sha,
            "fp32",
            b,
            tuple(0.5 * b + 0.01 * (i % 5) for i in range(64)),
            tuple(0.6 * b + 0.01 * (i % 5) for i in range(64)),
            outputs=REF.outputs,
        )
        for b in (1, 2, 4)
    ]
    return TableBackend(records)


@pytest.fixture(params=["onnxruntime", "table", "tensorrt"])
def backend(request, tmp_path):
    if request.param == "table":
        return _table_backend()
    if request.param == "tensorrt":
        pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack / NVIDIA host)")
        pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
        return get_backend("tensorrt", cache_dir=tmp_path)
    return get_backend("onnxruntime", intra_op_threads=1)


def test_prepare_identifies_the_model(backend):
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [2, 4])
    import hashlib

    assert prepared.onnx_sha256 == hashlib.sha256(MODEL.onnx_bytes).hexdigest()
    assert prepared.batch_sizes == (1, 2, 4)  # batch 1 is always prepared: the output check
    assert prepared.input_shape == SHAPE and prepared.precision == "fp32"
    backend.release(prepared)


def test_outputs_match_the_reference(backend):
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [1])
    check = backend.check_outputs(prepared, REF)
    assert check.ok and check.max_abs_error <= 1e-4


def test_wrong_reference_is_flagged(backend):
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [1])
    wrong = Reference(seed=REF.seed, outputs=tuple(v + 0.5 for v in REF.outputs))
    check = backend.check_outputs(prepared, wrong)
    assert not check.ok and check.max_abs_error == pytest.approx(0.5, abs=1e-3)


def test_measure_gives_both_series_per_batch(backend):
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [1, 2])
    protocol = Protocol.quick()
    for batch in (1, 2):
        m = backend.measure(prepared, batch, protocol)
        assert m.batch_size == batch
        for run in (m.compute, m.end_to_end):
            assert run.stats.n >= protocol.min_runs
            assert run.stats.n == len(run.stats.samples_ms)
            assert 0 < run.stats.min_ms <= run.stats.median_ms <= run.stats.p99_ms
            assert run.stopped_by in ("converged", "max_runs", "max_time")
            assert run.warmup_runs >= protocol.warmup_min_runs
        json.dumps(m.to_json())


def test_unprepared_batch_size_is_refused(backend):
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [1])
    with pytest.raises(MeasurementError, match="not prepared"):
        backend.measure(prepared, 8, Protocol.quick())


@pytest.mark.parametrize("precision", ["fp64", "FP16", ""])
def test_unknown_precision_is_refused(backend, precision):
    with pytest.raises(MeasurementError, match="unknown precision"):
        backend.prepare(MODEL.onnx_bytes, precision, SHAPE, [1])


def test_corrupt_model_is_refused(backend):
    with pytest.raises(MeasurementError):
        backend.prepare(b"\x08\x07not an onnx model" * 10, "fp32", SHAPE, [1])
    with pytest.raises(MeasurementError):
        backend.prepare(b"", "fp32", SHAPE, [1])


def test_fingerprint_is_json(backend):
    fp = backend.fingerprint()
    assert fp["backend"] == backend.name
    json.dumps(fp)


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
    a = _table_backend()
    b = _table_backend()
    pa = a.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [2])
    pb = b.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [2])
    ma = a.measure(pa, 2, Protocol())
    mb = b.measure(pb, 2, Protocol())
    assert ma.to_json() == mb.to_json()
    assert ma.compute.stats.median_ms == pytest.approx(1.02)


def test_table_never_invents_numbers():
    backend = _table_backend()
    with pytest.raises(MeasurementError, match="no recording"):
        backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [8])
    with pytest.raises(MeasurementError, match="no recording"):
        backend.prepare(tiny_model(SHAPE, seed=1).onnx_bytes, "fp32", SHAPE, [1])


def test_table_file_round_trip(tmp_path):
    from hpc2edge.latency.backends.table import save_table

    path = tmp_path / "t.json"
    save_table(path, _table_backend()._records.values())
    backend = TableBackend(path)
    prepared = backend.prepare(MODEL.onnx_bytes, "fp32", SHAPE, [4])
    assert backend.measure(prepared, 4, Protocol.quick()).compute.stats.median_ms > 2
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(MeasurementError, match="not a"):
        TableBackend(tmp_path / "bad.json")


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown latency backend"):
        get_backend("openvino")
