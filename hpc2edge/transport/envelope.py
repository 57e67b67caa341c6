"""The one check every task message passes before a worker touches it.

A message on a task queue is a kombu envelope (JSON) around a Celery protocol-2 task: headers,
properties and a base64 body. Anyone who can write the queue can write anything there, and
kombu and Celery each trust some part of it (kombu builds its ``Message`` from ``properties``,
Celery reads ``headers["timelimit"]`` as numbers, the pool unpacks the body as
``[args, kwargs, embed]``); a wrong type in any of them raised out of the worker's event loop and
ended the process. :func:`check` validates the whole envelope against what our own orchestrator
sends and returns it unchanged, or raises :class:`BadMessage` with one line that says why and
nothing of the attacker's text beyond a bounded excerpt.

Pure functions of the raw text: the intake (:mod:`hpc2edge.transport.intake`) calls them with
the queue a message came from, and unit tests call them directly.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hpc2edge.transport import taskids

#: What a task message may weigh, raw. Ours carry ids, keys and numbers (a few KiB); model bytes
#: travel through the artifact store. A bigger one is refused before it is parsed.
MAX_MESSAGE_BYTES = 256 * 1024
#: How much of a refused message is kept (dead-letter excerpt, logs).
EXCERPT_CHARS = 512
#: Content types a worker may be sent: JSON, or Celery's signed ``auth`` (``application/data``).
JSON_TYPE = "application/json"
SIGNED_TYPE = "application/data"

_STR_OR_NONE = (str, type(None))
#: Protocol-2 headers and the types Celery will use them as; any other header is refused.
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "lang": (str,),
    "task": (str,),
    "id": (str,),
    "shadow": _STR_OR_NONE,
    "eta": _STR_OR_NONE,
    "expires": _STR_OR_NONE,
    "group": _STR_OR_NONE,
    "group_index": (int, type(None)),
    "retries": (int,),
    "timelimit": (list,),
    "root_id": _STR_OR_NONE,
    "parent_id": _STR_OR_NONE,
    "argsrepr": _STR_OR_NONE,
    "kwargsrepr": _STR_OR_NONE,
    "origin": _STR_OR_NONE,
    "ignore_result": (bool,),
    "replaced_task_nesting": (int,),
    "stamped_headers": (list, type(None)),
    "stamps": (dict,),
    "redelivered": (bool,),
}
_REQUIRED_HEADERS = ("lang", "task", "id")
# Celery leaves optional headers null (ignore_result, retries, timelimit...): any may be null.
_HEADER_TYPES = {
    k: v if k in _REQUIRED_HEADERS else (*v, type(None)) for k, v in _HEADER_TYPES.items()
}
_PROPERTY_TYPES: dict[str, tuple[type, ...]] = {
    "correlation_id": (str,),
    "reply_to": (str,),
    "delivery_mode": (int,),
    "delivery_info": (dict,),
    "priority": (int,),
    "body_encoding": (str,),
    "delivery_tag": (str,),
    "expiration": (str, type(None)),  # kombu's copy of the task's expiry, in ms
}
#: Properties kombu may add in later versions, harmless as scalars (headers stay strict: Celery
#: copies them into the task's request, where an unknown key could shadow a real one).
_LENIENT = {"properties"}
_ENVELOPE_KEYS = frozenset({"body", "content-encoding", "content-type", "headers", "properties"})
#: Celery's canvas fields in the body's third element: we never send any; a message that does
#: would make the worker run further tasks of the sender's choosing after ours.
_EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")


class BadMessage(ValueError):
    """A message that must not reach Celery: ``reason`` is one line, safe to log and store."""

    def __init__(
        self,
        reason: str,
        *,
        task: str | None = None,
        task_id: str | None = None,
        origin: str | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.task = task
        self.task_id = task_id
        #: The ``origin`` header: who the *sender* says it is (host and pid), a hint only.
        self.origin = origin


@dataclass(frozen=True)
class Checked:
    """A message that passed: its parsed envelope, for kombu, and what the intake logs."""

    envelope: dict[str, Any]
    task: str
    task_id: str
    redelivered: bool


def excerpt(raw: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """The first ``limit`` characters of ``raw``, printable, with the full size when cut."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters in all)"


def check(
    raw: str | bytes,
    queue: str,
    *,
    tasks: Collection[str],
    content_types: Collection[str],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Checked:
    """Validate one raw message taken from ``queue``.

    Args:
        raw: the list entry as Redis returned it.
        queue: the queue it was taken from; the task id must be one minted for it
            (:func:`hpc2edge.transport.taskids.new`), which is what confines its result key.
        tasks: task names this queue may carry.
        content_types: the body content types this worker accepts.
        max_bytes: refuse anything larger, before parsing.

    Raises:
        BadMessage: why it cannot be run.
    """
    size = len(raw)
    if size > max_bytes:
        raise BadMessage(f"message of {size} bytes is over the {max_bytes}-byte limit")
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadMessage(f"envelope is not JSON ({type(exc).__name__})") from None
    if not isinstance(envelope, dict):
        raise BadMessage(f"envelope is a JSON {_json_type(envelope)}, not an object")
    extra = sorted(set(envelope) - _ENVELOPE_KEYS)
    if extra:
        raise BadMessage(f"unknown envelope field {_name(extra[0])}")
    raw_headers = envelope.get("headers")
    about = _about(raw_headers)
    try:
        headers = _typed_fields(raw_headers, "headers", _HEADER_TYPES)
    except BadMessage as exc:
        raise BadMessage(exc.reason, **about) from None
    missing = [h for h in _REQUIRED_HEADERS if h not in headers]
    if missing:
        raise BadMessage(f"header {missing[0]!r} missing (not a Celery protocol-2 task)")
    task, task_id = headers["task"], headers["id"]

    def bad(reason: str) -> BadMessage:
        return BadMessage(reason, **about)

    if task not in tasks:
        raise bad(f"task {_name(task)} is not served on queue {queue!r}")
    if taskids.queue_of(task_id) != queue:
        raise bad(f"task id {_name(task_id)} was not issued for queue {queue!r}")
    _check_headers(headers, bad)
    try:
        properties = _typed_fields(envelope.get("properties"), "properties", _PROPERTY_TYPES)
    except BadMessage as exc:
        raise bad(exc.reason) from None
    if properties.get("body_encoding") != "base64":
        raise bad(f"body encoding {_name(properties.get('body_encoding'))} is not base64")
    if not isinstance(properties.get("delivery_tag"), str):
        raise bad("properties.delivery_tag missing")
    # kombu reads both keys when it records the delivery; a restore would route by them.
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or info.get("routing_key") != queue:
        raise bad(f"properties.delivery_info does not route to {queue!r}")
    if info.get("exchange") not in ("", queue):
        raise bad(f"properties.delivery_info names another exchange than {queue!r}")
    content_type = envelope.get("content-type")
    if content_type not in content_types:
        raise bad(f"content type {_name(content_type)} is not accepted{_serializer(content_type)}")
    if envelope.get("content-encoding") not in ("utf-8", "binary"):
        raise bad(f"content encoding {_name(envelope.get('content-encoding'))} is not accepted")
    body = envelope.get("body")
    if not isinstance(body, str):
        raise bad("body is not a string")
    try:
        decoded = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise bad("body is not valid base64") from None
    if content_type == JSON_TYPE:
        _check_json_body(decoded, bad)
    redelivered = bool(headers.get("redelivered") or info.get("redelivered"))
    return Checked(envelope, task, task_id, redelivered)


def _about(headers: Any) -> dict[str, str | None]:
    """Task, id and origin of a message, where they are strings, for the record of a refusal."""
    if not isinstance(headers, dict):
        return {"task": None, "task_id": None, "origin": None}
    keys = {"task": "task", "task_id": "id", "origin": "origin"}
    return {k: v[:200] if isinstance(v := headers.get(h), str) else None for k, h in keys.items()}


def _typed_fields(value: Any, where: str, types: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadMessage(f"{where} is a JSON {_json_type(value)}, not an object")
    for key, item in value.items():
        expected = types.get(key)
        if expected is None and where in _LENIENT and isinstance(item, str | int | type(None)):
            continue
        if expected is None:
            raise BadMessage(f"unknown {where} field {_name(key)}")
        # bool is an int in Python: a header that must be a number never takes true/false.
        if not isinstance(item, expected) or (
            isinstance(item, bool) and bool not in expected and int in expected
        ):
            raise BadMessage(f"{where}.{key} is a JSON {_json_type(item)}")
    return value


def _check_headers(headers: dict[str, Any], bad: Any) -> None:
    if headers["lang"] != "py":
        raise bad(f"header lang {_name(headers['lang'])} is not 'py'")
    limits = headers.get("timelimit") or [None, None]
    if len(limits) != 2 or not all(_limit_ok(x) for x in limits):
        raise bad("header timelimit is not [hard, soft] seconds")
    if (headers.get("retries") or 0) < 0:
        raise bad("header retries is negative")
    for key in ("eta", "expires"):
        if headers.get(key) is not None:
            try:
                datetime.fromisoformat(headers[key])
            except ValueError:
                raise bad(f"header {key} is not an ISO 8601 time") from None
    if headers.get("stamped_headers") or headers.get("stamps"):
        raise bad("stamped headers are not used by hpc2edge")


def _limit_ok(x: Any) -> bool:
    if x is None:
        return True
    return finite(x) and x > 0


def finite(x: Any) -> bool:
    """A real number that is not NaN or infinite (bool is not; an int too big for a float is
    not either: ``math.isfinite(10**400)`` raises)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _check_json_body(decoded: bytes, bad: Any) -> None:
    try:
        body = json.loads(decoded)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad("body is not JSON") from None
    if not (isinstance(body, list) and len(body) == 3):
        raise bad(f"body is a JSON {_json_type(body)}, not [args, kwargs, embed]")
    args, kwargs, embed = body
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(embed, dict):
        raise bad("body is not [list, object, object]")
    if any(embed.get(k) for k in _EMBED_KEYS) or set(embed) - set(_EMBED_KEYS):
        raise bad("body asks for callbacks, errbacks, chains or chords")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _name(value: Any) -> str:
    return repr(value)[:80]


def _serializer(content_type: Any) -> str:
    from kombu.serialization import registry

    name = registry.type_to_name.get(content_type) if isinstance(content_type, str) else None
    return f" ({name})" if name else ""
