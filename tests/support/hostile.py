"""Hostile task messages: real kombu envelopes produced by the app, with one field broken.

:func:`envelope` builds what kombu's Redis transport puts into a queue list (``LPUSH`` of the
JSON of the virtual transport's message dict), by publishing through the app's own
``send_task_message`` onto kombu's in-memory transport: no broker needed, so the unit tests of
:func:`hpc2edge.transport.envelope.check` and the integration tests push the same bytes.

:data:`MALFORMED` names each broken shape; :func:`malformed` makes it for a queue.
"""

from __future__ import annotations

import base64
import copy
import json
import pickle
import zlib
from collections.abc import Callable
from typing import Any

import kombu

from hpc2edge.transport import taskids


def envelope(
    app: Any,
    queue: str,
    name: str = "hpc2edge.ping",
    *,
    task_id: str | None = None,
    args: Any = (),
    kwargs: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """The kombu Redis envelope of task ``name`` sent to ``queue`` (``options``: e.g.
    ``expiration``, as ``send_task(expires=...)`` sets it)."""
    task_id = task_id or taskids.new(queue)
    message = app.amqp.as_task_v2(task_id, name, args=args, kwargs=kwargs or {})
    with kombu.Connection("memory://") as conn:
        producer = conn.Producer()
        app.amqp.send_task_message(producer, name, message, queue=app.amqp.queues[queue], **options)
        # The raw envelope as the transport stores it (what a Redis list would hold).
        found: dict[str, Any] = producer.channel.basic_get(queue, no_ack=True).serializable()
    return found


def dumps(env: Any) -> str:
    return env if isinstance(env, str) else json.dumps(env)


def with_body(env: dict[str, Any], body: Any) -> dict[str, Any]:
    """``env`` with its body replaced by the JSON of ``body``, base64 as kombu encodes it."""
    out = copy.deepcopy(env)
    out["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(env: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(env)
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node[p]
        node[leaf] = value
        return out

    return change


def _pickle(env: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(env)
    out["content-type"] = "application/x-python-serialize"
    out["content-encoding"] = "binary"
    out["body"] = base64.b64encode(pickle.dumps(((), {}, {}))).decode()
    return out


def _oversize(env: dict[str, Any]) -> dict[str, Any]:
    return with_body(env, [["x" * (300 * 1024)], {}, {}])


#: 64 MiB of zeros compressed to about 64 KiB: what a worker that inflated it would allocate.
BOMB_BYTES = 64 * 2**20


def _zlib_bomb(env: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(env)
    out["headers"]["compression"] = "application/x-gzip"
    out["body"] = base64.b64encode(zlib.compress(b"\0" * BOMB_BYTES, 9)).decode()
    return out


def _callbacks(env: dict[str, Any]) -> dict[str, Any]:
    sig = {
        "task": "celery.accumulate",
        "args": [],
        "kwargs": {},
        "options": {},
        "subtask_type": None,
    }
    embed = {"callbacks": [sig], "errbacks": None, "chain": None, "chord": None}
    return with_body(env, [[], {}, embed])


def _other_queue(queue: str) -> str:
    return "train" if queue == "edge" else "edge"


#: name -> (queue -> raw message text or a change of a valid envelope of that queue)
MALFORMED: dict[str, Callable[[str], Any]] = {
    "not-json": lambda q: "x",
    "json-array": lambda q: "[]",
    "json-number": lambda q: "42",
    "body-not-base64": lambda q: _set("body", "!!! not base64 ***"),
    "body-encoding-rot13": lambda q: _set("properties.body_encoding", "rot13"),
    "headers-list": lambda q: _set("headers", ["task", "hpc2edge.ping"]),
    "body-string": lambda q: lambda env: with_body(env, "s"),
    "body-short-list": lambda q: lambda env: with_body(env, [1, 2]),
    "timelimit-string": lambda q: _set("headers.timelimit", "x"),
    "unknown-task": lambda q: _set("headers.task", "hpc2edge.no_such_task"),
    "celery-builtin": lambda q: _set("headers.task", "celery.accumulate"),
    "foreign-task-id": lambda q: _set("headers.id", taskids.new(_other_queue(q))),
    "pickle": lambda q: _pickle,
    "oversize": lambda q: _oversize,
    "zlib-bomb": lambda q: _zlib_bomb,
    "embed-callbacks": lambda q: _callbacks,
    # Found in review: each escaped the first version of the check and stopped the worker.
    "deep-json": lambda q: "[" * 100_000 + "]" * 100_000,  # RecursionError, 200 KB
    "huge-timelimit": lambda q: _set("headers.timelimit", [10**400, None]),  # OverflowError
    "no-delivery-info": lambda q: _set("properties.delivery_info", {}),  # KeyError in kombu
    "foreign-routing-key": lambda q: _set(
        "properties.delivery_info", {"exchange": "", "routing_key": _other_queue(q)}
    ),
}

#: case -> a fragment of the reason (what an operator reading the dead letter sees)
REASONS = {
    "not-json": "not JSON",
    "json-array": "not an object",
    "json-number": "not an object",
    "body-not-base64": "base64",
    "body-encoding-rot13": "rot13",
    "headers-list": "headers",
    "body-string": "[args, kwargs, embed]",
    "body-short-list": "[args, kwargs, embed]",
    "timelimit-string": "timelimit",
    "unknown-task": "hpc2edge.no_such_task",
    "celery-builtin": "celery.accumulate",
    "foreign-task-id": "not issued for queue",
    "pickle": "pickle",
    "oversize": "limit",
    "zlib-bomb": "compression",
    "embed-callbacks": "callbacks",
    "deep-json": "not JSON",
    "huge-timelimit": "timelimit",
    "no-delivery-info": "delivery_info",
    "foreign-routing-key": "delivery_info",
}


def malformed(app: Any, queue: str, case: str) -> str:
    """The raw list entry of ``case`` for ``queue``, built on a fresh valid ping envelope."""
    made = MALFORMED[case](queue)
    if isinstance(made, str):
        return made
    return dumps(made(envelope(app, queue)))
