"""Who is who in a deployment: the roles and the queues their workers serve.

The one place these names are defined. A role is a broker user, a client certificate and a
config file; a queue is served by exactly one worker role, and the broker's ACL, the task ids
(:mod:`hpc2edge.transport.taskids`) and the result signatures (:mod:`hpc2edge.transport.signing`)
all follow this table.
"""

from __future__ import annotations

import re

ORCHESTRATOR = "orchestrator"  # sends tasks, reads results; the search's host
HPC = "hpc"  # training workers on the cluster
EDGE = "edge"  # measuring workers on the devices
MONITOR = "monitor"  # Flower: reads events and queue depths
ADMIN = "admin"  # the broker's administrator: ACL, scripts, dead letters

ROLES = (ORCHESTRATOR, HPC, EDGE, MONITOR, ADMIN)
SIGNING_ROLES = (ORCHESTRATOR, HPC, EDGE)  # the roles that sign messages (security.sign)

QUEUE_TRAIN = "train"
QUEUE_EDGE = "edge"
QUEUES = (QUEUE_TRAIN, QUEUE_EDGE)
ROLE_OF_QUEUE = {QUEUE_TRAIN: HPC, QUEUE_EDGE: EDGE}  # the worker role that serves each queue
#: Tasks that go to one queue only (``hpc2edge.ping`` goes to any).
QUEUE_OF_TASK = {"hpc2edge.train": QUEUE_TRAIN, "hpc2edge.measure": QUEUE_EDGE}
WORKER_ROLES = tuple(ROLE_OF_QUEUE.values())

# --- device kinds --------------------------------------------------------------------------
# A device kind (``orin-agx``, ``orin-nano``, ``cpu-x86``) is a set of interchangeable units:
# every unit of a kind consumes the kind's queue, so units add throughput and share
# measurements. The default kind keeps the plain ``edge`` queue; any other kind has
# ``edge.<kind>``. A kind name is lowercase letters, digits and inner hyphens, at most 32
# characters, so it is safe in a queue name, a Redis key, an ACL pattern and a task id.
DEFAULT_KIND = "default"
KIND_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
#: A kind's queue begins with this (``edge.orin-agx``).
KIND_QUEUE_PREFIX = f"{QUEUE_EDGE}."


def check_kind(kind: object) -> str:
    """``kind`` if it is a legal device kind name; ValueError saying what a legal one is."""
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
        raise ValueError(
            f"device kind {str(kind)[:60]!r} is not a kind name: lowercase letters, digits and "
            "inner hyphens, 1-32 characters (e.g. orin-agx, cpu-x86)"
        )
    return kind


def edge_queue(kind: str) -> str:
    """The queue the units of ``kind`` consume: ``edge`` for the default kind, else
    ``edge.<kind>``."""
    check_kind(kind)
    return QUEUE_EDGE if kind == DEFAULT_KIND else KIND_QUEUE_PREFIX + kind


def kind_of_queue(queue: object) -> str | None:
    """The device kind whose units consume ``queue``, or None for a queue that is no kind's."""
    if queue == QUEUE_EDGE:
        return DEFAULT_KIND
    if isinstance(queue, str) and queue.startswith(KIND_QUEUE_PREFIX):
        kind = queue[len(KIND_QUEUE_PREFIX) :]
        if KIND_RE.fullmatch(kind) and kind != DEFAULT_KIND:
            return kind
    return None


def is_edge_queue(queue: object) -> bool:
    return kind_of_queue(queue) is not None


def is_task_queue(queue: object) -> bool:
    """One of the queues tasks go to: ``train``, ``edge`` or any ``edge.<kind>``."""
    return queue in QUEUES or is_edge_queue(queue)


def role_of_queue(queue: object) -> str | None:
    """The worker role that serves ``queue`` (``train``, ``edge`` or any ``edge.<kind>``)."""
    if queue == QUEUE_TRAIN:
        return HPC
    return EDGE if is_edge_queue(queue) else None


def task_queue_ok(task: str, queue: str) -> bool:
    """``task`` may be sent to ``queue``: measure only to edge queues, train only to train,
    anything else (``hpc2edge.ping``) to any queue."""
    home = QUEUE_OF_TASK.get(task)
    if home is None:
        return True
    if home == QUEUE_EDGE:
        return is_edge_queue(queue)
    return queue == home


TASK_SIGNERS = (ORCHESTRATOR,)  # whose signed tasks workers run
RESULT_SIGNERS = WORKER_ROLES  # whose signed results the orchestrator accepts
