"""Task ids that cannot be guessed and that name the queue whose workers may answer them.

Celery stores a task's result under ``celery-task-meta-<task id>``. Ids derived from the study
and trial (``h2e-<search>-<study>-trial-N-train-K``) let anyone who could write a result key
write the result of a task before it was even sent. So the key is random, 128 bits from
:mod:`secrets`, and begins with the queue: ``train-<32 hex>``, ``edge-<32 hex>``,
``edge.orin-agx-<32 hex>``. The broker's ACL gives each worker role only its own queue's
result keys (``celery-task-meta-edge*`` to ``edge``; a device's own user only its kind's), so
an edge device cannot write a training result, and the intake refuses a message whose id was
not issued for the queue it came from. The derived name stays, as a label.
"""

from __future__ import annotations

import re
import secrets

from hpc2edge.roles import role_of_queue

_QUEUE = r"[a-z][a-z0-9_.-]*"  # train, edge, edge.<kind> (roles.KIND_RE)
_ID = re.compile(rf"({_QUEUE})-([0-9a-f]{{32}})")  # whole string only (fullmatch: no newline)


def new(queue: str) -> str:
    """A fresh task id for a task sent to ``queue``."""
    if not re.fullmatch(_QUEUE, queue):
        raise ValueError(f"queue name {queue!r} cannot prefix a task id")
    return f"{queue}-{secrets.token_hex(16)}"


def queue_of(task_id: object) -> str | None:
    """The queue ``task_id`` was issued for, or None when it is not one of ours."""
    if not isinstance(task_id, str):
        return None
    match = _ID.fullmatch(task_id)
    return match.group(1) if match else None


def role_of(task_id: object) -> str | None:
    """The worker role allowed to answer ``task_id``, or None for an id that is not ours."""
    queue = queue_of(task_id)
    return None if queue is None else role_of_queue(queue)
