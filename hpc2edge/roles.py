"""Who is who in a deployment: the roles and the queues their workers serve.

The one place these names are defined. A role is a broker user, a client certificate and a
config file; a queue is served by exactly one worker role, and the broker's ACL, the task ids
(:mod:`hpc2edge.transport.taskids`) and the result signatures (:mod:`hpc2edge.transport.signing`)
all follow this table.
"""

from __future__ import annotations

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

TASK_SIGNERS = (ORCHESTRATOR,)  # whose signed tasks workers run
RESULT_SIGNERS = WORKER_ROLES  # whose signed results the orchestrator accepts
