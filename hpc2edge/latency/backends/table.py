"""The ``table`` backend: deterministic replay of recorded measurements.

For tests and simulation (every abstraction ships a deterministic fake: docs/design.md, "Layout"). A
table maps (ONNX sha256, precision, batch size) to recorded samples of both series; ``measure``
replays them in order, cycling, through the *same* protocol as the real backends. Time is simulated:
a virtual clock advances by each replayed sample, so warm-up, minimum time and the stopping rule
behave as on the device, and the same table always gives the same result, however fast or busy
the host is. It never invents numbers: a model or batch size that was not recorded is a
:class:`~hpc2edge.errors.MeasurementError`.

File format (JSON)::

    {"format": "hpc2edge-latency-table/1",
     "records": [{"onnx_sha256": "...", "precision": "fp32", "batch_size": 1,
                  "compute_ms": [...], "end_to_end_ms": [...],
                  "outputs": [...]}]}          # optional: batch-1 outputs on the reference input
"""

from __future__ import annotations

import itertools
import json
import math
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hpc2edge.errors import MeasurementError
from hpc2edge.latency.base import LatencyBackend, Prepared
from hpc2edge.latency.protocol import Clock, TimedCall

FORMAT = "hpc2edge-latency-table/1"


@dataclass(frozen=True)
class Record:
    """Recorded samples of one (model, precision, batch size)."""

    onnx_sha256: str
    precision: str
    batch_size: int
    compute_ms: tuple[float, ...]
    end_to_end_ms: tuple[float, ...]
    outputs: tuple[float, ...] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        def samples(key: str) -> tuple[float, ...]:
            values = tuple(float(v) for v in data[key])
            if not values or any(not math.isfinite(v) or v <= 0 for v in values):
                raise ValueError(f"{key} must be a non-empty list of positive numbers")
            return values

        outputs = data.get("outputs")
        return cls(
            onnx_sha256=str(data["onnx_sha256"]),
            precision=str(data["precision"]),
            batch_size=int(data["batch_size"]),
            compute_ms=samples("compute_ms"),
            end_to_end_ms=samples("end_to_end_ms"),
            outputs=None if outputs is None else tuple(float(v) for v in outputs),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "onnx_sha256": self.onnx_sha256,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "compute_ms": list(self.compute_ms),
            "end_to_end_ms": list(self.end_to_end_ms),
        }
        if self.outputs is not None:
            out["outputs"] = list(self.outputs)
        return out


def save_table(path: Path, records: Iterable[Record]) -> None:
    """Write ``records`` as a table file."""
    body = {"format": FORMAT, "records": [r.to_json() for r in records]}
    path.write_text(json.dumps(body, indent=1) + "\n")


class TableBackend(LatencyBackend):
    """Replays recorded samples; see the module docstring."""

    name = "table"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")

    def __init__(self, table: str | Path | Sequence[Record] = (), device: str = "replay") -> None:
        if isinstance(table, (str, Path)):
            try:
                data = json.loads(Path(table).read_text())
            except (OSError, ValueError) as exc:
                raise MeasurementError(f"cannot read latency table {table}: {exc}") from None
            if data.get("format") != FORMAT:
                raise MeasurementError(f"{table}: not a {FORMAT} file")
            try:
                records = [Record.from_json(r) for r in data["records"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise MeasurementError(f"{table}: malformed record: {exc}") from None
        else:
            records = list(table)
        self.device = device
        self._now = [0.0]  # the virtual clock, reset for each measured batch by _clock
        self._records = {(r.onnx_sha256, r.precision, r.batch_size): r for r in records}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device,
            "records": len(self._records),
            "host": platform.node(),
        }

    def _record(self, prepared: Prepared, batch_size: int) -> Record:
        key = (prepared.onnx_sha256, prepared.precision, batch_size)
        try:
            return self._records[key]
        except KeyError:
            raise MeasurementError(
                f"no recording for model {prepared.onnx_sha256[:12]}, {prepared.precision}, "
                f"batch {batch_size}"
            ) from None

    def _prepare(
        self,
        onnx_bytes: bytes,
        sha256: str,
        precision: str,
        input_shape: tuple[int, ...],
        batch_sizes: tuple[int, ...],
    ) -> Prepared:
        prepared = Prepared(
            backend=self.name,
            onnx_sha256=sha256,
            precision=precision,
            input_shape=input_shape,
            batch_sizes=batch_sizes,
            build_s=0.0,
        )
        for batch in batch_sizes:
            self._record(prepared, batch)  # every batch size must be recorded, or fail now
        return prepared

    def _infer(self, prepared: Prepared, x: np.ndarray) -> np.ndarray:
        record = self._record(prepared, 1)
        if record.outputs is None:
            raise MeasurementError(
                f"the recording of {prepared.onnx_sha256[:12]} has no outputs to check against"
            )
        return np.asarray(record.outputs, dtype=np.float32).reshape(1, -1)

    def _replay(self, samples: tuple[float, ...], clock_state: list[float]) -> TimedCall:
        cycle = itertools.cycle(samples)

        def timed() -> float:
            sample = next(cycle)
            clock_state[0] += sample / 1000.0  # the virtual clock advances by the sample
            return sample

        return timed

    def _compute_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        return self._replay(self._record(prepared, batch_size).compute_ms, self._now)

    def _end_to_end_call(self, prepared: Prepared, batch_size: int) -> TimedCall:
        return self._replay(self._record(prepared, batch_size).end_to_end_ms, self._now)

    def _clock(self, prepared: Prepared, batch_size: int) -> Clock:
        self._now = [0.0]
        state = self._now

        def sleep(seconds: float) -> None:
            state[0] += seconds

        return Clock(now=lambda: state[0], sleep=sleep)
