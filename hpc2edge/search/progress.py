"""What a running search prints: a line per finished trial, and a progress line when counts change.

An orchestrator callback (:attr:`hpc2edge.search.orchestrator.Orchestrator.callbacks`); it reads
the in-memory counts on every event and the study and queue depths only for a line it prints.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Prints a line per finished trial and, when counts change, a progress line (stderr)."""

    def __init__(self, orchestrator: Any, *, stream: Any = None, every_s: float = 30.0) -> None:
        self.o = orchestrator
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.t0 = time.monotonic()
        self._last: tuple[Any, ...] | None = None
        self._last_t = 0.0

    def __call__(self, event: str, job: Any) -> None:
        if event == "finished":
            a = job.attrs
            if job.state == "complete":
                what = f"val MSE {a['val_mse']:.5f}, {a['latency_ms']:.3f} ms"
                if (a.get("latency") or {}).get("cached"):
                    what += " (latency from the store)"
            else:
                what = a.get("reason", "")
            dup = f" (same network as {a['duplicate_of']})" if a.get("duplicate_of") else ""
            self._print(f"{job.label} {job.state}{dup}: {what}")
        self.tick()

    def tick(self, force: bool = False) -> None:
        # Called on every event: decide from the in-memory counts; read the study and the
        # queue depths only for a line that is printed.
        p = self.o.counts()
        key = (p["complete"], p["pruned"], p["failed"])
        now = time.monotonic()
        if not force and key == self._last and now - self._last_t < self.every_s:
            return
        self._last, self._last_t = key, now
        depths = " ".join(f"{q} {n}" for q, n in sorted(self.o.dispatcher.queue_depths().items()))
        front = self.o.front()
        best = ""
        if front:
            t = min(front, key=lambda t: t.values[0])
            best = f" | front {len(front)}, best loss {t.values[0]:.5f}"
        self._print(
            f"[{now - self.t0:6.1f} s] done {p['complete'] + p['pruned'] + p['failed']}/"
            f"{self.o.config.trials} (complete {p['complete']}, pruned {p['pruned']}, failed "
            f"{p['failed']}), in flight {p['in_flight']}"
            + (f" | queued: {depths}" if depths else "")
            + best
        )

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
