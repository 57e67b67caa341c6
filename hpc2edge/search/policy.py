"""What each queue gets next: the send policy, and the capacity it fills.

Trials are asked ahead into a ready pool (``parallel`` candidates in flight, more than the free
slots of any one queue), so the orchestrator has a choice. Each step it offers a policy, per
queue, every task that could be sent now (its stage is ready, its candidate exported, its
back-off over) and sends the first ``free`` of the policy's order, where ``free`` is the queue's
capacity less the tasks already on it. Capacity per queue is ``1 + queue_ahead`` slots per live
worker (a device measures one model at a time, a train worker trains one; the rest wait on the
broker's queue, so a worker that finishes starts its next task at once), or ``parallel`` where
the workers are not counted.

:class:`Fifo` (the default) sends in the order the jobs were taken up: trials re-attached from
the storage in their order, the baseline, then trials as they are asked. A policy
that reorders (a surrogate that sends the device the candidates most likely to be on the front,
a fleet that balances device kinds) is one class with an :meth:`SendPolicy.order` method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hpc2edge.search.records import Job
    from hpc2edge.search.stages import Stage


@dataclass(frozen=True)
class Ready:
    """A task that could be sent now."""

    job: Job
    stage: Stage


class SendPolicy(Protocol):
    def order(self, queue: str, ready: Sequence[Ready]) -> Sequence[Ready]:
        """``ready`` (in ask order) in the order ``queue`` should get them."""
        ...


class Fifo:
    """First asked, first sent."""

    def order(self, queue: str, ready: Sequence[Ready]) -> Sequence[Ready]:
        return ready


#: The most slots a queue gets from counted workers (far beyond a real fleet or cluster).
MAX_SLOTS = 1024


@dataclass(frozen=True)
class Capacity:
    """Task slots per queue; a queue not named has ``default`` slots."""

    slots: Mapping[str, int]
    default: int

    def of(self, queue: str) -> int:
        return max(0, int(self.slots.get(queue, self.default)))

    @classmethod
    def from_workers(
        cls, live: Mapping[str, int], queues: Sequence[str], default: int, *, ahead: int = 0
    ) -> Capacity:
        """``1 + ahead`` slots per live worker on each queue the study needs (at least one
        worker counted, at most :data:`MAX_SLOTS` slots: worker heartbeats are written by the
        workers, so a count is a claim)."""
        return cls(
            {
                q: min(MAX_SLOTS, max(1, int(live.get(q, 0))) * (1 + ahead))
                for q in queues
                if q in live
            },
            default,
        )


__all__ = ["MAX_SLOTS", "Capacity", "Fifo", "Ready", "SendPolicy"]
