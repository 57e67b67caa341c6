"""The LatencyBackend contract suite (:class:`hpc2edge.latency.base.LatencyBackend`).

A backend passes when this runs green on it::

    from hpc2edge.testing.latency import LatencyBackendContract

    class TestMyBackend(LatencyBackendContract):
        @pytest.fixture
        def backend(self):
            return MyBackend(...)

Every test prepares the contract model (:func:`contract_model`: a tiny MLP at
:data:`SHAPE`, batch axis dynamic) and checks identification, outputs against a numpy reference,
both timed series per batch size, and the refusals (unprepared batch size, unknown precision,
corrupt model). A backend that replays recordings (``table``) needs recordings of that model:
:func:`contract_records`, replayed by :func:`recorded_table`.
"""

from __future__ import annotations

import functools
import hashlib
import json

import pytest

from hpc2edge.errors import MeasurementError
from hpc2edge.latency.backends.table import Record, TableBackend
from hpc2edge.latency.base import LatencyBackend, Reference, reference_input
from hpc2edge.latency.protocol import Protocol
from hpc2edge.testing.models import TinyModel, tiny_model

#: The contract model's input, one sample: channels, frames, height, width after the batch.
SHAPE = (1, 4, 8, 8)
REFERENCE_SEED = 3


@functools.lru_cache(maxsize=1)
def contract_model() -> TinyModel:
    """The model every contract test runs (built once; needs ``onnx``)."""
    return tiny_model(SHAPE)


@functools.lru_cache(maxsize=1)
def contract_reference() -> Reference:
    """The contract model's outputs on the reference input (batch 1, seed 3), from numpy."""
    model = contract_model()
    x = reference_input(SHAPE, 1, REFERENCE_SEED)
    return Reference(seed=REFERENCE_SEED, outputs=tuple(model.reference(x).ravel()))


def contract_records() -> list[Record]:
    """Recordings of the contract model at fp32, batches 1, 2 and 4, as a device would make them.

    Compute takes ``0.5 * batch`` ms and end to end ``0.6 * batch`` ms, plus a repeating
    0-0.04 ms wobble over 64 samples; the recorded outputs are the reference's.
    """
    sha = hashlib.sha256(contract_model().onnx_bytes).hexdigest()
    return [
        Record(
            sha,
            "fp32",
            b,
            tuple(0.5 * b + 0.01 * (i % 5) for i in range(64)),
            tuple(0.6 * b + 0.01 * (i % 5) for i in range(64)),
            outputs=contract_reference().outputs,
        )
        for b in (1, 2, 4)
    ]


def recorded_table() -> TableBackend:
    """A ``table`` backend replaying :func:`contract_records`."""
    return TableBackend(contract_records())


class LatencyBackendContract:
    """What every latency backend does. Subclass it and provide a ``backend`` fixture."""

    @pytest.fixture
    def backend(self) -> LatencyBackend:
        raise NotImplementedError("a LatencyBackendContract subclass provides a backend fixture")

    @pytest.fixture
    def model(self) -> TinyModel:
        return contract_model()

    @pytest.fixture
    def reference(self) -> Reference:
        return contract_reference()

    def test_prepare_identifies_the_model(self, backend: LatencyBackend, model: TinyModel) -> None:
        prepared = backend.prepare(model.onnx_bytes, "fp32", SHAPE, [2, 4])
        assert prepared.onnx_sha256 == hashlib.sha256(model.onnx_bytes).hexdigest()
        assert prepared.batch_sizes == (1, 2, 4)  # batch 1 is always prepared: the output check
        assert prepared.input_shape == SHAPE and prepared.precision == "fp32"
        backend.release(prepared)

    def test_outputs_match_the_reference(
        self, backend: LatencyBackend, model: TinyModel, reference: Reference
    ) -> None:
        prepared = backend.prepare(model.onnx_bytes, "fp32", SHAPE, [1])
        check = backend.check_outputs(prepared, reference)
        assert check.ok and check.max_abs_error <= 1e-4

    def test_wrong_reference_is_flagged(
        self, backend: LatencyBackend, model: TinyModel, reference: Reference
    ) -> None:
        prepared = backend.prepare(model.onnx_bytes, "fp32", SHAPE, [1])
        wrong = Reference(seed=reference.seed, outputs=tuple(v + 0.5 for v in reference.outputs))
        check = backend.check_outputs(prepared, wrong)
        assert not check.ok and check.max_abs_error == pytest.approx(0.5, abs=1e-3)

    def test_measure_gives_both_series_per_batch(
        self, backend: LatencyBackend, model: TinyModel
    ) -> None:
        prepared = backend.prepare(model.onnx_bytes, "fp32", SHAPE, [1, 2])
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

    def test_unprepared_batch_size_is_refused(
        self, backend: LatencyBackend, model: TinyModel
    ) -> None:
        prepared = backend.prepare(model.onnx_bytes, "fp32", SHAPE, [1])
        with pytest.raises(MeasurementError, match="not prepared"):
            backend.measure(prepared, 8, Protocol.quick())

    @pytest.mark.parametrize("precision", ["fp64", "FP16", ""])
    def test_unknown_precision_is_refused(
        self, backend: LatencyBackend, model: TinyModel, precision: str
    ) -> None:
        with pytest.raises(MeasurementError, match="unknown precision"):
            backend.prepare(model.onnx_bytes, precision, SHAPE, [1])

    def test_corrupt_model_is_refused(self, backend: LatencyBackend) -> None:
        with pytest.raises(MeasurementError):
            backend.prepare(b"\x08\x07not an onnx model" * 10, "fp32", SHAPE, [1])
        with pytest.raises(MeasurementError):
            backend.prepare(b"", "fp32", SHAPE, [1])

    def test_fingerprint_is_json(self, backend: LatencyBackend) -> None:
        fp = backend.fingerprint()
        assert fp["backend"] == backend.name
        json.dumps(fp)


__all__ = [
    "REFERENCE_SEED",
    "SHAPE",
    "LatencyBackendContract",
    "contract_model",
    "contract_records",
    "contract_reference",
    "recorded_table",
]
