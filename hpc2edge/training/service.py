"""The plain function behind ``hpc2edge.train``: a request in, a result dict out.

The Celery task (:mod:`hpc2edge.tasks`) only decodes, calls :func:`train_request` and returns its
dict. Everything that can go wrong with a trial (a malformed request, a spec outside its space,
missing data, a diverging or crashing or killed training, a time-out) comes back as a *result*
with ``status = "error"`` and a typed error (class name + message): the orchestrator records a
reason and the worker goes on with the next task.

**Idempotency.** Celery delivery is at-least-once (``acks_late``: a task whose worker died is
delivered again). A finished result is kept under the worker's state dir, keyed by
``trial_key``, in one JSON file per trial written atomically; a redelivered request for a
recorded trial returns the record (``"cached": true``) without training again. The record also
holds the request's digest: the same key with a *different* request is refused, since it would
silently return another trial's numbers. Only successful results are recorded: a failure may be
transient (OOM next to another job) and a retry is worth its cost. The records are local files,
not Redis keys, because the hpc role's ACL may not write arbitrary keys, and a result belongs to
the node that trained it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from hpc2edge.errors import DataError, Hpc2EdgeError, TrainingError, as_result
from hpc2edge.training.child import write_json_atomic
from hpc2edge.training.request import TrainRequest

RESULT_FORMAT = "hpc2edge-train-result/1"
RESULTS_DIR = "train-results"
RUNS_DIR = "train-runs"
EXTENSIONS_DIR = "torch-extensions"


def _key_name(trial_key: str) -> str:
    # Trial keys are free text: hash them into safe, fixed-length file names.
    return hashlib.sha256(trial_key.encode()).hexdigest()[:32]


class ResultStore:
    """Finished results by trial key: one JSON file each, written atomically (tmp + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, trial_key: str) -> Path:
        return self.root / f"{_key_name(trial_key)}.json"

    def get(self, trial_key: str) -> dict[str, Any] | None:
        """The record of ``trial_key`` (``{"trial_key", "request_sha256", "result"}``) or None."""
        try:
            record = json.loads(self._path(trial_key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("trial_key") != trial_key:
            return None
        return record

    def put(self, trial_key: str, request_sha256: str, result: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(trial_key)
        record = {"trial_key": trial_key, "request_sha256": request_sha256, "result": result}
        write_json_atomic(path, record)


def error_result(exc: BaseException, request: Any = None) -> dict[str, Any]:
    """A result that carries a typed error instead of metrics."""
    req = request if isinstance(request, dict) else {}
    key = req.get("trial_key")
    return {
        "format": RESULT_FORMAT,
        "status": "error",
        "trial_key": key if isinstance(key, str) and len(key) <= 200 else None,
        "cached": False,
        "error": as_result(exc, max_chars=8000),  # room for the training log's tail
    }


def train_request(
    request: Any,
    *,
    state_dir: Path,
    time_limit_s: float | None = None,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train the candidate in ``request`` (see :mod:`hpc2edge.training.request`) once.

    Args:
        request: the decoded task payload.
        state_dir: the worker's state dir: results under ``train-results/``, runs (log,
            checkpoint) under ``train-runs/``, DeepSpeed's compiled ops under
            ``torch-extensions/``.
        time_limit_s: kill a training that runs longer (``None``: no limit).
        environ: the training child's base environment (default: this process's).

    Returns:
        ``{"format", "status": "ok", "trial_key", "cached", **TrainResult, "error": None}`` or an
        error result (``status = "error"``, ``error = {"type", "message"}``).
    """
    from hpc2edge.training.launcher import launch

    started = time.time()
    # The child runs in its run folder: every path it is given must be absolute.
    state_dir = Path(state_dir).resolve()
    try:
        req = TrainRequest.from_json(request)
    except ValueError as exc:
        return error_result(exc, request)
    store = ResultStore(state_dir / RESULTS_DIR)
    digest = req.digest()
    record = store.get(req.trial_key)
    if record is not None:
        if record.get("request_sha256") != digest:
            return error_result(
                ValueError(
                    f"trial_key {req.trial_key!r} is already recorded for a different request"
                ),
                request,
            )
        return {**record["result"], "cached": True}
    try:
        missing = [p for p in req.data.paths if not Path(p).exists()]
        if missing:
            raise DataError(f"data.paths: not found on this node: {', '.join(missing[:5])}")
        result = launch(
            req,
            state_dir / RUNS_DIR / _key_name(req.trial_key),
            timeout_s=time_limit_s,
            environ=environ,
            extensions_dir=(state_dir / EXTENSIONS_DIR).resolve(),
        )
    except (Hpc2EdgeError, ValueError) as exc:
        return error_result(exc, request)
    except (OSError, KeyError) as exc:  # the node's disk, or a child's malformed report
        return error_result(TrainingError(f"{type(exc).__name__}: {exc}"), request)
    out = {
        "format": RESULT_FORMAT,
        "status": "ok",
        "trial_key": req.trial_key,
        "cached": False,
        **result.to_json(),
        "started_unix_s": started,
        "finished_unix_s": time.time(),
        "error": None,
    }
    store.put(req.trial_key, digest, out)
    return out
