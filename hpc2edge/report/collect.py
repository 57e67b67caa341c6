"""``hpc2edge report``: what a study found, as numbers (``report.json``) and as a page
(``report.html`` with PNGs, drawn by :mod:`hpc2edge.report.render`).

Everything comes from the study storage (the trials' and the study's user attributes the
orchestrator wrote) and, for the device fingerprints and the measurement context, from the
measurement store (the stored ``LatencyResult`` of each measurement a trial used). The page is
drawn from :func:`collect`'s dict only, so the page and ``--json`` cannot disagree.

Definitions (also stated on the page):

- *front*: :func:`hpc2edge.search.orchestrator.front_trials`, the feasible complete trials that
  are Pareto-optimal in (val MSE, latency p50); for the ``paper`` objective, the best trial.
- *speed-up* = baseline latency p50 / latency p50; *loss ratio* = baseline val MSE / val MSE
  (both > 1: better than the baseline). :func:`ratios` is the one place they are computed;
  ``hpc2edge search`` prints its front through :func:`front_rows` too. Where the trial has a
  paired measurement (:mod:`hpc2edge.search.pairing`) the speed-up is its median per-pair ratio
  (``speedup_source`` says which; the unpaired ratio stays as ``speedup_unpaired``).
- *constant predictor*: the training split's mean target, on the validation split (each
  training reports it as ``val_mse_constant``; every trial of a study shares the split, so it
  is one number, :func:`constant_predictor`). A model whose val MSE is not below it learned
  nothing (``no_better_than_constant``, the baseline included); loss ratios against a baseline
  that is not better than it say nothing about skill (:func:`baseline_caveat`).
- *hypervolume* after trial *n*: the area dominated by the feasible complete trials numbered
  <= *n* in (val MSE, latency ms), up to a reference point fixed for the whole curve (by default
  1.1 x the worst val MSE of those trials, and the latency budget, else 1.1 x their worst
  latency); its unit is MSE x ms.

Importing this module imports neither optuna nor matplotlib (it registers a command).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc2edge.config import mask_url
from hpc2edge.errors import StudyStorageError
from hpc2edge.search import records as stored
from hpc2edge.search.objectives import NO_BETTER_THAN_CONSTANT
from hpc2edge.search.settings import device_kinds
from hpc2edge.search.storage import open_storage

if TYPE_CHECKING:
    from hpc2edge.search.pairing import PairRecord

REPORT_FORMAT = "hpc2edge-report/1"
#: The stages of the searches this report reads (their task records and errors).
STAGES = ("measure", "train")
HV_MARGIN = 1.1  # the default reference point sits 10 % beyond the worst loss (and latency)
STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "running",
}


# --- rows -------------------------------------------------------------------------------------

#: What a flagged model is, in words (the CLI's legend and the page's).


def constant_predictor(attrs: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The constant predictor's val MSE of the trainings in ``attrs`` (trials' and the baseline's
    user attributes): ``{"val_mse", "trainings", "distinct_values"}``, or None when no training
    reported one. Every trial of a study shares the split, so ``distinct_values`` is 1; should it
    not be, ``val_mse`` is the median and each row is still judged by its own."""
    values = sorted(
        float(v)
        for a in attrs
        if isinstance(v := ((a or {}).get("train") or {}).get("val_mse_constant"), (int, float))
    )
    if not values:
        return None
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return {
        "val_mse": median,
        "trainings": len(values),
        "distinct_values": len({round(v, 12) for v in values}),
    }


def no_better_than_constant(val_mse: Any, constant: Any) -> bool | None:
    """True when ``val_mse`` is not below ``constant`` (None when either is unknown)."""
    if not isinstance(val_mse, (int, float)) or not isinstance(constant, (int, float)):
        return None
    return bool(val_mse >= constant)


def baseline_caveat(baseline_row: Mapping[str, Any] | None) -> str | None:
    """What to say of loss ratios against a baseline that is not better than the constant
    predictor (None when it is, or when that is unknown)."""
    if not baseline_row or not baseline_row.get("no_better_than_constant"):
        return None
    return (
        f"the baseline is no better than predicting the mean (val MSE "
        f"{baseline_row['val_mse']:.4g} >= {baseline_row['val_mse_constant']:.4g} of the "
        "constant predictor): loss ratios against it say nothing about skill"
    )


def ratios(
    baseline: Mapping[str, Any] | None, latency_ms: float | None, val_mse: float | None
) -> tuple[float | None, float | None]:
    """(speed-up, loss ratio) against ``baseline``: its latency / ``latency_ms`` and its val MSE /
    ``val_mse``; None where either side is missing (or zero). Unpaired: the two latencies come
    from two measurements (:func:`speedup_columns` prefers a paired one)."""
    base_ms = (baseline or {}).get("latency_ms")
    base_mse = (baseline or {}).get("val_mse")
    speedup = base_ms / latency_ms if base_ms and latency_ms else None
    loss_ratio = base_mse / val_mse if base_mse and val_mse else None
    return speedup, loss_ratio


def speedup_columns(unpaired: float | None, paired: PairRecord | None) -> dict[str, Any]:
    """A row's speed-up: the paired measurement's where the trial has one that succeeded
    (:mod:`hpc2edge.search.pairing`), else the unpaired ratio."""
    if paired is not None and paired.speedup is not None and paired.ci95 is not None:
        return {
            "speedup": paired.speedup,
            "speedup_source": "paired",
            "speedup_ci95": list(paired.ci95),
            "speedup_unpaired": unpaired,
        }
    return {
        "speedup": unpaired,
        "speedup_source": None if unpaired is None else "unpaired",
        "speedup_ci95": None,
        "speedup_unpaired": unpaired,
    }


def key_param_names(specs: Iterable[Mapping[str, Any] | None]) -> list[str]:
    """The spec parameters that differ between ``specs`` (all of them when none differ)."""
    seen: dict[str, set[str]] = {}
    for spec in specs:
        for k, v in ((spec or {}).get("params") or {}).items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    varying = [k for k, values in seen.items() if len(values) > 1]
    return varying or list(seen)


def model_row(
    attrs: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    *,
    trial: int | None,
    key_params: Sequence[str] = (),
    paired: PairRecord | None = None,
    constant: float | None = None,
) -> dict[str, Any]:
    """One model (a trial's or the baseline's user attributes) as a row of the front table;
    ``paired`` is its stored paired measurement against the baseline, if any. The row is judged
    against its own training's constant predictor, else ``constant`` (the study's)."""
    latency = attrs.get("latency") or {}
    train = attrs.get("train") or {}
    spec = attrs.get("spec") or {}
    speedup, loss_ratio = ratios(baseline, attrs.get("latency_ms"), attrs.get("val_mse"))
    ci = latency.get("ci95_ms")
    inp = spec.get("input") or {}
    own = train.get("val_mse_constant")
    const = float(own) if isinstance(own, (int, float)) else constant
    return {
        "trial": trial,
        "arch_id": attrs.get("arch_id"),
        "params": attrs.get("params"),
        "flops": attrs.get("flops"),
        "input": [inp.get("frames"), inp.get("size"), inp.get("size")] if inp else None,
        "key_params": {k: (spec.get("params") or {}).get(k) for k in key_params},
        "latency_ms": attrs.get("latency_ms"),
        "p90_ms": latency.get("p90_ms"),
        "ci95_ms": list(ci) if ci else None,
        "cached": latency.get("cached"),
        "unstable": latency.get("unstable"),
        "val_mse": attrs.get("val_mse"),
        "test_mse": (train.get("test") or {}).get("mse"),
        "rmse_speed_mm_s": train.get("val_rmse_speed_mm_s"),
        "rmse_power_w": train.get("val_rmse_power_w"),
        **speedup_columns(speedup, paired),
        "loss_ratio": loss_ratio,
        "val_mse_constant": const,
        "no_better_than_constant": no_better_than_constant(attrs.get("val_mse"), const),
    }


def study_constant(study: Any) -> dict[str, Any] | None:
    """:func:`constant_predictor` of a study's trials and baseline."""
    attrs = [t.user_attrs for t in study.get_trials(deepcopy=False)]
    return constant_predictor([*attrs, study.user_attrs.get("baseline")])


def front_rows(study: Any, baseline: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The feasible front, by latency, as :func:`model_row` rows (with ``confirm_p50_ms``)."""
    from hpc2edge.search import pairing
    from hpc2edge.search.orchestrator import front_trials

    keys = key_param_names(
        [t.user_attrs.get("spec") for t in study.get_trials(deepcopy=False)]
        + [(baseline or {}).get("spec")]
    )
    confirm = study.user_attrs.get("confirm") or {}
    paired = pairing.stored(study.user_attrs, pairing.ATTR)
    constant = (study_constant(study) or {}).get("val_mse")
    rows = []
    for t in front_trials(study):
        row = model_row(
            t.user_attrs,
            baseline,
            trial=t.number,
            key_params=keys,
            paired=paired.get(t.number),
            constant=constant,
        )
        row["confirm_p50_ms"] = (confirm.get(str(t.number)) or {}).get("p50_ms")
        rows.append(row)
    return rows


def kind_fronts(study: Any, baseline: Mapping[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """For a study that targets several device kinds, the front on each other kind: trials on
    the (val MSE, p50 on that kind) front, with the speed-up against the baseline there."""
    from hpc2edge.search import pairing
    from hpc2edge.search.objectives import kind_front

    out: dict[str, list[dict[str, Any]]] = {}
    constant = (study_constant(study) or {}).get("val_mse")
    for kind, primary in device_kinds(study.user_attrs):
        if primary:
            continue
        key = f"latency_ms@{kind}"
        base_ms = (baseline or {}).get(key)
        paired = pairing.stored(study.user_attrs, pairing.attr_name(kind, primary))
        rows = []
        for t in kind_front(study, key):
            a = t.user_attrs
            ms = float(a[key])
            unpaired = base_ms / ms if isinstance(base_ms, (int, float)) and ms else None
            own = (a.get("train") or {}).get("val_mse_constant")
            const = float(own) if isinstance(own, (int, float)) else constant
            rows.append(
                {
                    "trial": t.number,
                    "arch_id": a.get("arch_id"),
                    "params": a.get("params"),
                    "latency_ms": ms,
                    "p90_ms": (a.get(f"latency@{kind}") or {}).get("p90_ms"),
                    "unstable": (a.get(f"latency@{kind}") or {}).get("unstable"),
                    "val_mse": a.get("val_mse"),
                    **speedup_columns(unpaired, paired.get(t.number)),
                    "val_mse_constant": const,
                    "no_better_than_constant": no_better_than_constant(a.get("val_mse"), const),
                }
            )
        out[kind] = rows
    return out


def trial_records(study: Any, front: set[int]) -> list[dict[str, Any]]:
    """Every trial: state, the numbers it got, and why it ended when it did not complete."""
    from hpc2edge.search.objectives import CONSTRAINT_ATTR

    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        constraint = a.get(CONSTRAINT_ATTR)
        errors = stored.errors(a, STAGES)
        constant = (a.get("train") or {}).get("val_mse_constant")
        out.append(
            {
                "trial": t.number,
                "state": STATES.get(t.state.name, t.state.name.lower()),
                "arch_id": a.get("arch_id"),
                "params": a.get("params"),
                "flops": a.get("flops"),
                "latency_ms": a.get("latency_ms"),
                "val_mse": a.get("val_mse"),
                "val_mse_constant": constant,
                "no_better_than_constant": no_better_than_constant(a.get("val_mse"), constant),
                "values": t.values,
                "constraint_latency_ms": constraint,
                "feasible": constraint is None or constraint <= 0,
                "on_front": t.number in front,
                "cached": stored.cached(a),
                "duplicate_of": a.get("duplicate_of"),
                "reason": a.get("reason"),
                "errors": errors,
            }
        )
    return out


def counts(study: Any, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Trials per state, tasks sent (attempts, as the orchestrator counts), reuse."""
    by_state = {s: sum(1 for r in records if r["state"] == s) for s in set(STATES.values())}
    sent = stored.tasks_sent((t.user_attrs for t in study.get_trials(deepcopy=False)), STAGES)
    return {
        "trials": len(records),
        **by_state,
        "duplicates": sum(1 for r in records if r["duplicate_of"]),
        "tasks_sent": sent,
        "measurements_reused": sum(1 for r in records if r["cached"]),
        "front": sum(1 for r in records if r["on_front"]),
    }


# --- hypervolume ------------------------------------------------------------------------------


def hypervolume(
    records: Sequence[Mapping[str, Any]],
    *,
    budget_ms: float | None,
    reference: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Hypervolume of the feasible complete trials after each trial number (module docstring)."""
    from hpc2edge.search.objectives import hypervolume_2d

    points = {
        r["trial"]: (float(r["val_mse"]), float(r["latency_ms"]))
        for r in records
        if r["state"] == "complete" and r["feasible"] and r["val_mse"] is not None
    }
    if reference is not None:
        rule = "given with --hv-reference"
    elif points:
        worst_mse = max(p[0] for p in points.values())
        worst_ms = max(p[1] for p in points.values())
        if budget_ms is not None:
            reference = (HV_MARGIN * worst_mse, float(budget_ms))
            rule = f"{HV_MARGIN:g} x the worst val MSE of the feasible trials; the latency budget"
        else:
            reference = (HV_MARGIN * worst_mse, HV_MARGIN * worst_ms)
            rule = f"{HV_MARGIN:g} x the worst val MSE and the worst latency of the feasible trials"
    else:
        return {"reference": None, "rule": "no feasible complete trial", "series": [], "final": 0.0}
    series = []
    done: list[tuple[float, float]] = []
    for r in sorted(records, key=lambda r: r["trial"]):
        if r["trial"] in points:
            done.append(points[r["trial"]])
        series.append({"trial": r["trial"], "hypervolume": hypervolume_2d(done, reference)})
    return {
        "reference": {"val_mse": reference[0], "latency_ms": reference[1]},
        "rule": rule,
        "unit": "val MSE x ms",
        "series": series,
        "final": series[-1]["hypervolume"] if series else 0.0,
    }


# --- measurement context ----------------------------------------------------------------------

_DEVICE_FIELDS = (
    "hostname", "device_model", "cpu_model", "machine", "cpu_count", "memory_total_bytes",
    "platform", "python", "l4t_release", "jetpack_version", "nvpmodel", "jetson_clocks",
)  # fmt: skip


def measurement_context(
    attrs: Sequence[Mapping[str, Any]], store: Any | None, batch_size: int | None
) -> dict[str, Any]:
    """Devices and measurement contexts of the measurements the trials (and baseline) used.

    With a store, from each stored ``LatencyResult`` (full fingerprints, protocol, versions,
    power mode); without one, from the summaries in the trials' attributes.
    """
    from hpc2edge.store.measurements import DeviceContext

    ids: dict[str, set[int]] = {}
    for a in attrs:
        mid = (a.get("latency") or {}).get("measurement_id")
        if mid is not None and a.get("arch_id"):
            ids.setdefault(str(a["arch_id"]), set()).add(int(mid))
    if store is None:
        groups: dict[str, dict[str, Any]] = {}
        for a in attrs:
            lat = a.get("latency") or {}
            if not lat:
                continue
            ctx = {
                "device": lat.get("device"),
                "backend": lat.get("backend"),
                "precision": lat.get("precision"),
                "batch_size": lat.get("batch_size", batch_size),
                "worker": lat.get("worker"),
            }
            g = groups.setdefault(json.dumps(ctx, sort_keys=True), {**ctx, "measurements": 0})
            g["measurements"] += 1
        return {"source": "trials", "devices": [], "contexts": list(groups.values())}
    devices: dict[str, dict[str, Any]] = {}
    contexts: dict[str, dict[str, Any]] = {}
    for arch_id, wanted in sorted(ids.items()):
        for m in store.measurements(arch_id):
            if m.id not in wanted:
                continue
            r = m.results
            device = r.get("device") or {}
            dc = DeviceContext.from_fingerprints(device, r.get("backend_fingerprint") or {})
            d = devices.setdefault(
                dc.device_key,
                {
                    "device_key": dc.device_key,
                    **{k: device.get(k) for k in _DEVICE_FIELDS},
                    "versions": device.get("versions") or {},
                    "measurements": 0,
                },
            )
            d["measurements"] += 1
            ctx = {
                "device": dc.name,
                "device_key": dc.device_key,
                "backend": r.get("backend"),
                "backend_fingerprint": r.get("backend_fingerprint") or {},
                "precision": r.get("precision"),
                "batch_size": m.batch_size,
                "protocol": r.get("protocol") or {},
                "power_mode": json.loads(dc.power_mode) if dc.power_mode else None,
                "versions": device.get("versions") or {},
            }
            g = contexts.setdefault(
                json.dumps(ctx, sort_keys=True, default=str),
                {**ctx, "measurements": 0, "throttled": 0},
            )
            g["measurements"] += 1
            g["throttled"] += bool((r.get("throttle") or {}).get("throttled"))
    return {
        "source": "store",
        "devices": list(devices.values()),
        "contexts": list(contexts.values()),
    }


# --- the whole report -------------------------------------------------------------------------


def collect(
    study: Any,
    store: Any | None = None,
    *,
    storage: str = "",
    store_note: str = "",
    hv_reference: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Every number of the report, JSON-able (see the module docstring)."""
    ua = study.user_attrs
    search = ua.get("search") or {}
    objective = search.get("objective") or {}
    baseline = ua.get("baseline")
    front = front_rows(study, baseline)
    records = trial_records(study, {int(r["trial"]) for r in front})
    constant = study_constant(study)
    base_row = None
    if baseline:
        keys = list(front[0]["key_params"]) if front else key_param_names([baseline.get("spec")])
        base_row = {
            **model_row(
                baseline,
                baseline,
                trial=None,
                key_params=keys,
                constant=(constant or {}).get("val_mse"),
            ),
            "state": baseline.get("state"),
            "reason": baseline.get("reason"),
        }
    attrs = [t.user_attrs for t in study.get_trials(deepcopy=False)] + (
        [baseline] if baseline else []
    )
    return {
        "format": REPORT_FORMAT,
        "study": study.study_name,
        "storage": mask_url(storage),
        "generated_unix_s": round(time.time(), 3),
        "search": search,
        "search_id": ua.get("search_id"),
        "plan": ua.get("plan"),
        "objective": objective.get("name"),
        "latency_budget_ms": objective.get("latency_budget_ms"),
        "counts": counts(study, records),
        "baseline": base_row,
        "constant_predictor": constant,
        "baseline_caveat": baseline_caveat(base_row),
        "front": front,
        "devices": [k for k, _ in device_kinds(ua)],
        "fronts_by_kind": kind_fronts(study, baseline),
        "trials": records,
        "hypervolume": hypervolume(
            records, budget_ms=objective.get("latency_budget_ms"), reference=hv_reference
        ),
        "measurement_context": {
            **measurement_context(attrs, store, search.get("batch_size")),
            "note": store_note,
        },
    }


def load(
    study_name: str, url: str, store_url: str | None, *, store_required: bool = False
) -> tuple[Any, Any | None, str]:
    """(study, measurement store or None, a note on the store) for a report.

    Raises:
        StudyStorageError: no storage at ``url``, no study of that name in it, or (when
            ``store_required``) no measurement store at ``store_url``.
    """
    import optuna

    storage = open_storage(url)
    names = sorted(s.study_name for s in storage.get_all_studies())
    if study_name not in names:
        raise StudyStorageError(
            f"no study {study_name!r} in {mask_url(url)} (studies: {', '.join(names) or 'none'})"
        )
    study = optuna.load_study(study_name=study_name, storage=storage)
    if store_url is None:
        return study, None, "no measurement store given"
    from hpc2edge.store.measurements import MeasurementStore, StoreError

    path = Path(store_url.removeprefix("sqlite:///"))
    if store_url.startswith("sqlite:///") and not path.is_file():
        if store_required:
            raise StudyStorageError(f"no measurement store at {path}")
        return study, None, f"no measurement store at {path}: context from the trials only"
    try:
        return study, MeasurementStore(store_url), ""
    except StoreError as exc:
        if store_required:
            raise
        return study, None, f"{exc}: context from the trials only"


def write(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """``report.json``, the PNGs and ``report.html`` in ``out``; returns their paths."""
    from hpc2edge.report import render  # matplotlib: only when a report is written

    out.mkdir(parents=True, exist_ok=True)
    files = render.write(report, out)
    path = out / "report.json"
    path.write_text(dumps(report) + "\n")
    return {"json": path, **files}


def dumps(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False, default=str)


__all__ = [
    "NO_BETTER_THAN_CONSTANT",
    "REPORT_FORMAT",
    "baseline_caveat",
    "collect",
    "constant_predictor",
    "front_rows",
    "hypervolume",
    "key_param_names",
    "load",
    "measurement_context",
    "model_row",
    "no_better_than_constant",
    "ratios",
    "study_constant",
    "trial_records",
    "write",
]
