"""The virtual clock of a simulation: time passes when the orchestrator sleeps (or computes).

A sleep of ``s`` seconds moves to the fleet's next event when that comes later, but never more
than ``max_jump_s`` at once, so a timeout or a back-off is noticed at most that late. With
``charge_cpu`` the orchestrator's own CPU time also moves the clock (the loop's cost, as a fleet
would see it); work the simulator does for itself (its answers, its workers) runs inside
:meth:`VirtualClock.excluded` and is not charged. Without it (the default) a seeded simulation
is deterministic.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Protocol

#: Where a simulated clock starts (a Unix time, as the orchestrator's timeouts are stored).
START_S = 1_800_000_000.0


class Events(Protocol):
    """What the clock drives: the simulated fleet (:class:`hpc2edge.sim.fleet.SimFleet`)."""

    def next_event(self) -> float: ...

    def advance(self, to: float, *, loop_busy: bool = False) -> None: ...


class VirtualClock:
    """The orchestrator's clock in a simulation; see the module docstring."""

    def __init__(
        self, start: float = START_S, *, max_jump_s: float = 60.0, charge_cpu: bool = False
    ) -> None:
        if max_jump_s <= 0:
            raise ValueError("max_jump_s must be positive")
        self.start = start
        self.now = start
        self.max_jump_s = max_jump_s
        self.charge_cpu = charge_cpu
        self.fleet: Events | None = None
        #: Virtual seconds the orchestrator spent computing (``charge_cpu``) and sleeping.
        self.busy_s = 0.0
        self.slept_s = 0.0
        #: CPU seconds of the simulator's own work (:meth:`excluded`), charging or not.
        self.own_cpu_s = 0.0
        self._cpu = time.process_time()
        self._depth = 0

    def time(self) -> float:
        if self.charge_cpu:
            cpu = time.process_time()
            if cpu > self._cpu:
                self._move(self.now + (cpu - self._cpu), busy=True)
            self._cpu = cpu
        return self.now

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """CPU time spent inside is the simulator's own (its answers, its workers), not the
        orchestrator's: it does not move a charging clock, and it is counted in
        :attr:`own_cpu_s` (once, however deep the nesting)."""
        if self._depth:
            yield
            return
        self._depth += 1
        t0 = time.process_time()
        try:
            yield
        finally:
            self._depth -= 1
            spent = time.process_time() - t0
            self.own_cpu_s += spent
            if self.charge_cpu:
                self._cpu += spent

    def sleep(self, seconds: float) -> None:
        now = self.time()
        target = now + max(seconds, 0.0)
        nxt = self.fleet.next_event() if self.fleet is not None else math.inf
        if nxt > target:
            target = max(target, min(nxt, now + self.max_jump_s))
        self._move(target, busy=False)
        if self.charge_cpu:
            self._cpu = time.process_time()  # the fleet's own work is not the loop's

    def _move(self, to: float, *, busy: bool) -> None:
        dt = to - self.now
        if dt <= 0:
            return
        if busy:
            self.busy_s += dt
        else:
            self.slept_s += dt
        if self.fleet is not None:
            with self.excluded():
                self.fleet.advance(to, loop_busy=busy)
        self.now = to

    @property
    def elapsed_s(self) -> float:
        return self.now - self.start


__all__ = ["START_S", "Events", "VirtualClock"]
