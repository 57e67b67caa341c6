"""One orchestrator per study: a lease in the study storage, kept alive by a heartbeat.

The lease is a study attribute (host, pid, heartbeat time). :meth:`Lease.take` refuses a study
whose lease another live process renewed less than :data:`STALE_S` ago; a lease left by a dead
process on this host is taken over at once. :meth:`Lease.beat` is called from the orchestrator's
every clock tick (each step, each look of a long ``confirm_front``) and writes at most every
``STALE_S / 4``, so a live orchestrator never looks stale.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Protocol

from hpc2edge.errors import SearchError
from hpc2edge.util import procs

ATTR = "orchestrator_lease"
STALE_S = 60.0


class Clock(Protocol):
    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class LeaseHeld(SearchError):
    """Another orchestrator runs this study."""


class Lease:
    """The study's lease for this process."""

    def __init__(self, study: Any, clock: Clock, stale_s: float = STALE_S) -> None:
        self.study = study
        self.clock = clock
        self.stale_s = stale_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self._beat_at: float | None = None

    def take(self) -> None:
        lease = self.study.user_attrs.get(ATTR)
        if lease and (lease.get("host"), lease.get("pid")) != (self.me["host"], self.me["pid"]):
            age = self.clock.time() - float(lease.get("heartbeat", 0))
            dead_here = lease.get("host") == self.me["host"] and not procs.pid_exists(
                lease.get("pid")
            )
            if age < self.stale_s and not dead_here:
                raise LeaseHeld(
                    f"study {self.study.study_name!r} is being run by pid {lease.get('pid')} on "
                    f"{lease.get('host')} (heartbeat {age:.0f} s ago); stop it first, or wait "
                    f"{self.stale_s:.0f} s if it is gone"
                )
        self._beat_at = None
        self.beat()

    def beat(self) -> None:
        """Renew the lease (at most every ``stale_s / 4``).

        Raises:
            LeaseHeld: another orchestrator took the study meanwhile (this one stalled for
                longer than ``stale_s``): this one must stop, not take it back.
        """
        now = self.clock.time()
        if self._beat_at is not None and now - self._beat_at < self.stale_s / 4:
            return
        if self._beat_at is not None:
            lease = self.study.user_attrs.get(ATTR)
            holder = (lease.get("host"), lease.get("pid")) if isinstance(lease, dict) else None
            if holder is not None and holder != (self.me["host"], self.me["pid"]):
                self._beat_at = None
                raise LeaseHeld(
                    f"study {self.study.study_name!r} was taken over by pid {holder[1]} on "
                    f"{holder[0]} while this run stalled; this run stops"
                )
        self.study.set_user_attr(ATTR, {**self.me, "heartbeat": now})
        self._beat_at = now

    def release(self) -> None:
        """Give the lease up, if it is still ours (the next run need not wait for it to age)."""
        lease = self.study.user_attrs.get(ATTR) or {}
        if lease.get("pid") == self.me["pid"] and lease.get("host") == self.me["host"]:
            self.study.set_user_attr(ATTR, None)
        self._beat_at = None


__all__ = ["ATTR", "STALE_S", "Clock", "Lease", "LeaseHeld"]
