"""The settings a trial's meaning depends on: recorded when a study starts, checked on resume.

A study's trials are comparable only if they were measured and trained the same way. Everything
that changes what a trial's numbers mean is recorded in two study attributes at the first run:
``search`` (space, objective and budget, ordering, the edge's batch size, precision and protocol,
pinned parameters) and ``plan`` (data files, epochs, learning rate, batch sizes, seed, split
fractions, engine). A later run of the same study must ask for the same; a difference is refused
with one line naming the first setting that differs, its old and its new value.

A setting missing from a record written by an older version (``protocol``, ``export_seed`` and
``stages`` before schema 2) is adopted and recorded: the study did not say, so the run may, and
from then on it is checked like the others.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from hpc2edge.errors import SearchError

#: Names printed for nested plan settings (the CLI's option names, where there is one).
NAMES = {
    "plan.data_paths": "data",
    "plan.hparams.lr": "lr",
    "plan.hparams.lr_step_epochs": "lr step epochs",
    "plan.hparams.lr_gamma": "lr gamma",
    "plan.hparams.batch_size_per_gpu": "train batch size",
    "plan.epochs": "epochs",
    "plan.test_fraction": "test fraction",
    "plan.resources.engine": "engine",
    "search.objective.name": "objective",
    "search.objective.latency_budget_ms": "latency budget (ms)",
    "search.latency_first": "latency first",
    "search.batch_size": "batch size",
}


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}`` (lists stay values)."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(flatten(f"{prefix}.{k}", v))
    return out


def difference(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> str | None:
    """The first setting that differs, as one line; None when the run may resume the study.

    ``recorded`` and ``asked`` map ``search`` and ``plan`` to their records.
    """
    old = _flat(recorded)
    new = _flat(asked)
    for key in sorted(set(old) | set(new), key=_order):
        part, field = key.split(".")[:2]
        if field not in (recorded.get(part) or {}):
            continue  # not recorded by the version that started the study: adopted
        if _canon(old.get(key)) != _canon(new.get(key)):
            name = NAMES.get(key, key.split(".", 1)[1])
            was = f"has {_show(old[key])}" if key in old else "does not set it"
            now = f"asks {_show(new[key])}" if key in new else "does not set it"
            return f"{name}: the study {was}, this run {now}"
    return None


def _flat(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for part in ("search", "plan") for k, v in flatten(part, record.get(part)).items()}


def asked(
    *,
    space: str,
    objective: dict[str, Any],
    config: Any,
    pipeline: Any,
    plan: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """What a run asks for, as it is recorded: ``search`` and ``plan``."""
    return {
        "search": {
            "space": space,
            "objective": objective,
            "latency_first": config.latency_first,
            "batch_size": config.batch_size,
            "precision": config.precision,
            "protocol": config.protocol,
            "pin": config.pin,
            "export_seed": config.export_seed,
            "stages": [describe(s) for s in pipeline.stages],
        },
        "plan": plan,
    }


def describe(stage: Any) -> dict[str, Any]:
    """A stage as recorded: its class and its fields (what it measures or trains, where)."""
    return {"class": type(stage).__name__, **dataclasses.asdict(stage)}


def adopted(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's settings that the study's record does not hold (an older version's record)."""
    out: dict[str, dict[str, Any]] = {}
    for part in ("search", "plan"):
        mine = asked.get(part) or {}
        theirs = recorded.get(part)
        if isinstance(theirs, Mapping):
            missing = {k: v for k, v in mine.items() if k not in theirs}
            if missing:
                out[part] = missing
    return out


def check(study_name: str, recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> None:
    """Raise :class:`SearchError` when the run asks for other settings than the study has.

    Also refused: a record this version cannot read (not a mapping), and a study written by a
    newer version (its ``schema`` is above :data:`~hpc2edge.search.records.SCHEMA`).
    """
    from hpc2edge.search.records import SCHEMA, SCHEMA_ATTR

    schema = recorded.get(SCHEMA_ATTR, 1)
    if not isinstance(schema, int) or schema > SCHEMA:
        raise SearchError(
            f"study {study_name!r} was written by a newer hpc2edge (schema {schema!r}; this one "
            f"reads up to {SCHEMA}): upgrade, or pick another --study name"
        )
    for part in ("search", "plan"):
        if recorded.get(part) is not None and not isinstance(recorded.get(part), Mapping):
            raise SearchError(f"study {study_name!r} has an unreadable {part!r} record")
    diff = difference(upgraded(recorded), asked)
    if diff:
        raise SearchError(
            f"study {study_name!r} was started with other settings ({diff}); rerun with the "
            "same options or pick another --study name"
        )


def upgraded(recorded: Mapping[str, Any]) -> Mapping[str, Any]:
    """``recorded`` with measure stages written before device kinds read as today's: the
    study's device (``device: ""``) is the default kind, primary, without a budget of its own;
    another one (``device: "nano"``) was a secondary kind."""
    search = recorded.get("search")
    if not isinstance(search, Mapping) or not isinstance(search.get("stages"), list):
        return recorded
    stages = search["stages"]
    out = []
    for st in stages:
        if isinstance(st, Mapping) and st.get("class") == "MeasureStage" and "primary" not in st:
            device = st.get("device") or ""
            st = {k: v for k, v in st.items() if k != "on_queue"}  # now the kind's queue
            st = {**st, "device": device or "default", "primary": not device, "budget_ms": None}
        out.append(st)
    return {**recorded, "search": {**search, "stages": out}}


def device_kinds(user_attrs: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The study's device kinds as ``(kind, primary)``, the primary first, from its recorded
    stages (a study recorded before stages: the default kind alone)."""
    search = upgraded(user_attrs).get("search")
    stages = search.get("stages") if isinstance(search, Mapping) else None
    kinds = [
        (str(st["device"]), bool(st.get("primary")))
        for st in stages or ()
        if isinstance(st, Mapping) and st.get("class") == "MeasureStage" and st.get("device")
    ]
    return sorted(kinds, key=lambda k: not k[1]) or [("default", True)]


def _order(key: str) -> tuple[int, str]:
    # The commonest mistakes first: training settings, then the rest.
    return (0 if key.startswith("plan.") else 1, key)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    text = _canon(value) if isinstance(value, (list, dict)) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


__all__ = [
    "adopted",
    "asked",
    "check",
    "describe",
    "device_kinds",
    "difference",
    "flatten",
    "upgraded",
]
