"""Stored results, read as what they are: data written by another role.

Celery's Redis result backend trusts what it reads back. A result key holding garbage, a
compressed bomb, or a FAILURE naming ``os.system`` as its exception type made the reader raise
(``SecurityError``, ``TypeError``, a decompression of hundreds of MiB), and the worker that ran
the task reads its result key back before it writes, so a planted record stopped it too.

:class:`RedisBackend` (what ``result_backend`` names for every role) reads defensively:

- a stored payload over :data:`MAX_RESULT_BYTES` or carrying Celery's compression marker is
  refused before it is decoded (we never compress results);
- anything that does not decode to a result record reads as *no result* (PENDING), so a worker
  overwrites a planted record with its real one instead of failing on it;
- an exception in a FAILURE record becomes :class:`RemoteError` with the stored type name and a
  bounded message: no module is imported and no class looked up from what the record says.

:func:`parse` is what the orchestrator uses on a raw record: it returns a :class:`Stored`
(state, result or error) or raises :class:`BadResult`, which the search counts as a failed
*attempt* of that task (another worker may answer the retry), never as its own failure.
With message signing, the signed result must also come from a worker of the task's queue: the
result serializer of :mod:`hpc2edge.transport.signing` checks the signer certificate's role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import states
from celery.backends.base import COMPRESSED_PAYLOAD_MAGIC
from celery.backends.redis import RedisBackend as CeleryRedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

#: A result is a few KiB (a latency result with raw samples, a training summary).
MAX_RESULT_BYTES = 1024 * 1024
MAX_ERROR_CHARS = 2000
_KNOWN_STATES = frozenset(states.ALL_STATES)


class BadResult(ValueError):
    """A stored record that is not a result of the task it is stored for."""


class RemoteError(Exception):
    """An exception a worker reported, by name: ``type_name`` as stored, never imported."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __str__(self) -> str:
        return f"{self.type_name}: {self.args[0]}"


@dataclass(frozen=True)
class Stored:
    """A decoded, checked result record."""

    state: str
    result: Any = None
    #: For FAILURE: ``{"type": ..., "message": ...}``, bounded.
    error: dict[str, str] | None = None


def check_size(payload: Any) -> None:
    """Refuse an oversized or compressed payload before anything decodes it."""
    if isinstance(payload, memoryview):
        payload = payload.tobytes()
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    if isinstance(payload, bytes | bytearray):
        if len(payload) > MAX_RESULT_BYTES:
            raise BadResult(f"stored result of {len(payload)} bytes is over {MAX_RESULT_BYTES}")
        if payload.startswith(COMPRESSED_PAYLOAD_MAGIC):
            raise BadResult("stored result is compressed; hpc2edge never compresses results")


def error_of(exc: Any) -> dict[str, str]:
    """The bounded ``{"type", "message"}`` of a stored exception record (nothing imported)."""
    if isinstance(exc, dict):
        type_name = exc.get("exc_type")
        message = exc.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        return {
            "type": str(type_name)[:100] if isinstance(type_name, str) else "Error",
            "message": str(message if message is not None else "")[:MAX_ERROR_CHARS],
        }
    return {"type": "Error", "message": str(exc)[:MAX_ERROR_CHARS]}


def parse(meta: Any, task_id: str) -> Stored:
    """Check a decoded record read from ``task_id``'s key.

    Raises:
        BadResult: not a record, an unknown state, or one stored for another task (a record
            copied from another key: a signature covers the record, and so its task id).
    """
    if not isinstance(meta, dict):
        raise BadResult(f"stored result is a {type(meta).__name__}, not a record")
    state = meta.get("status")
    if state not in _KNOWN_STATES:
        raise BadResult(f"stored result has an unknown state {str(state)[:40]!r}")
    stored_id = meta.get("task_id")
    if stored_id is not None and stored_id != task_id:
        raise BadResult(f"stored result belongs to task {str(stored_id)[:80]!r}")
    if state == states.SUCCESS and stored_id is None:
        raise BadResult("stored result names no task")
    if state in states.EXCEPTION_STATES:
        return Stored(str(state), None, error_of(meta.get("result")))
    return Stored(str(state), meta.get("result"))


class RedisBackend(CeleryRedisBackend):
    """Celery's Redis result backend reading results as untrusted (see the module docstring)."""

    def decode(self, payload: Any) -> Any:
        check_size(payload)
        return super().decode(payload)

    def decode_result(self, payload: Any) -> Any:
        try:
            meta = self.decode(payload)
            if not isinstance(meta, dict) or meta.get("status") not in _KNOWN_STATES:
                raise BadResult("not a result record")
            return self.meta_from_decoded(meta)
        except Exception:
            # Not a result we wrote: for a worker about to store its own, there is none yet.
            return {"status": states.PENDING, "result": None}

    def _get_task_meta_for(self, task_id: Any) -> Any:
        meta = super()._get_task_meta_for(task_id)
        try:
            parse(meta, bytes_to_str(task_id))
        except BadResult:  # a record stored for another task, or no record at all
            return {"status": states.PENDING, "result": None}
        return meta

    def _store_result(
        self,
        task_id: Any,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Celery's, except that a SUCCESS always replaces what is stored.

        Celery keeps a stored SUCCESS against any later write, so that a lost duplicate cannot
        overwrite a result; but then a SUCCESS *planted* before the task ran could never be
        replaced by the real one. Our tasks are idempotent, so a duplicate's SUCCESS is as good
        as the first; only the other states (STARTED, a late FAILURE) still give way to one.
        """
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        if state != states.SUCCESS:
            current = self._get_task_meta_for(task_id)
            if current["status"] == states.SUCCESS:
                return result
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as ex:
            raise BackendStoreError(str(ex), state=state, task_id=task_id) from ex
        return result

    def exception_to_python(self, exc: Any) -> BaseException | None:
        if not exc:
            return None
        if isinstance(exc, BaseException):
            return exc
        error = error_of(exc)
        return RemoteError(error["type"], error["message"])
