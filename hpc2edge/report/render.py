"""How a report looks: PNGs drawn with matplotlib and one ``report.html`` that shows them.

Why one module of ~550 lines: one HTML page and the figures it shows, escaped in one place.

Input is :func:`hpc2edge.report.collect.collect`'s dict and nothing else. The page is self-contained
(inline CSS, no script, PNGs by relative path beside it). Every string that came from the study
(arch ids, reasons, worker names, settings) is HTML-escaped; every number in a table also sits
unrounded in a ``data-value`` attribute (JSON), and tables and rows carry ids and ``data-key`` /
``data-trial`` attributes, so a test or a script reads the page's numbers back exactly.

matplotlib is used through :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot): no global
backend state, no display needed.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc2edge.search.objectives import NO_BETTER_THAN_CONSTANT

PLOTS = {"pareto": "pareto.png", "hypervolume": "hypervolume.png", "params": "params.png"}
LOG_SPREAD = 10.0  # a log axis once the largest value is this many times the smallest
DPI = 130

# --- plots ------------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 5.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _log_if_spread(
    ax: Any, values: Iterable[float], axis: str, fmt: Callable[[float], str] = "{:g}".format
) -> bool:
    """A log scale on ``axis`` when ``values`` spread widely, with plain tick labels (0.2, 1, 5
    rather than 2 x 10^-1); minor ticks 2, 3 and 5 are labelled while the axis spans at most two
    decades."""
    from matplotlib.ticker import FuncFormatter

    v = [x for x in values if x and x > 0]
    if not v or max(v) / min(v) < LOG_SPREAD:
        return False
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    which = ax.xaxis if axis == "x" else ax.yaxis

    def minor(x: float, _pos: Any) -> str:
        lo, hi = which.get_view_interval()
        if x <= 0 or hi / max(lo, 1e-300) > 100:
            return ""
        mantissa = round(x / 10 ** math.floor(math.log10(x)), 6)
        return fmt(x) if mantissa in (2, 3, 5) else ""

    which.set_major_formatter(FuncFormatter(lambda x, _pos: fmt(x)))
    which.set_minor_formatter(FuncFormatter(minor))
    return True


def _reserve_rug(ax: Any, fraction: float = 0.12) -> None:
    """Empty the bottom ``fraction`` of the axes and shade it: trials without a loss are drawn
    there, on their latency, where no point with a loss can be."""
    lo, hi = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    bottom = lo - (hi - lo) * fraction / (1 - fraction)
    ax.set_ylim(bottom, hi)
    ax.set_yticks(ticks)  # no loss values on the band
    ax.axhspan(bottom, lo, color="0.93", zorder=0, lw=0)
    ax.text(0.005, fraction / 2, "no loss ", transform=ax.transAxes, ha="left", va="center",
            fontsize=7, color="0.4")  # fmt: skip


def plot_pareto(report: Mapping[str, Any], path: Path) -> None:
    """val MSE over latency: trials, the front (connected), pruned ones on the x axis, baseline,
    budget."""
    fig, ax = _figure()
    trials = report["trials"]
    base = report.get("baseline") or {}
    budget = report.get("latency_budget_ms")
    done = [t for t in trials if t["state"] == "complete" and t["val_mse"] is not None]
    rest = [t for t in done if not t["on_front"] and t["feasible"]]
    infeasible = [t for t in done if not t["feasible"]]
    front = sorted((t for t in done if t["on_front"]), key=lambda t: t["latency_ms"])
    pruned = [t["latency_ms"] for t in trials if t["state"] == "pruned" and t["latency_ms"]]
    failed = [t["latency_ms"] for t in trials if t["state"] == "failed" and t["latency_ms"]]
    xs = [t["latency_ms"] for t in done] + pruned + failed + [base.get("latency_ms") or 0]
    log = _log_if_spread(ax, xs, "x")
    if rest:
        ax.scatter([t["latency_ms"] for t in rest], [t["val_mse"] for t in rest], s=28,
                   color="0.55", alpha=0.8, label=f"complete ({len(rest)})", zorder=2)  # fmt: skip
    if infeasible:
        ax.scatter([t["latency_ms"] for t in infeasible], [t["val_mse"] for t in infeasible],
                   s=28, facecolors="none", edgecolors="0.45",
                   label=f"complete, over budget ({len(infeasible)})", zorder=2)  # fmt: skip
    if front:
        fx = [t["latency_ms"] for t in front]
        fy = [t["val_mse"] for t in front]
        what = "front" if report.get("objective") != "paper" else "best (1000·MSE + ms)"
        ax.step(fx, fy, where="post", color="C3", lw=1.5, zorder=3)
        ax.scatter(fx, fy, s=55, color="C3", edgecolors="k", linewidths=0.6, zorder=4,
                   label=f"{what} ({len(front)})")  # fmt: skip
        for t in front:
            ax.annotate(str(t["trial"]), (t["latency_ms"], t["val_mse"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=8, color="C3")  # fmt: skip
    if base.get("latency_ms") and base.get("val_mse"):
        ax.scatter([base["latency_ms"]], [base["val_mse"]], marker="*", s=220, color="gold",
                   edgecolors="k", linewidths=0.8, zorder=5, label="baseline")  # fmt: skip
    constant = (report.get("constant_predictor") or {}).get("val_mse")
    if constant and (done or base.get("val_mse")):
        ax.axhline(constant, ls=":", color="0.3", lw=1.2,
                   label=f"constant predictor (training mean) {constant:.4g}")  # fmt: skip
    rug = ax.get_xaxis_transform()  # x in data, y in axes coordinates
    if pruned or failed:
        _reserve_rug(ax)
    if pruned:
        ax.plot(pruned, [0.06] * len(pruned), ls="none", marker="|", ms=16, mew=1.6,
                color="C1", transform=rug, clip_on=False,
                label=f"pruned: over budget, not trained ({len(pruned)})")  # fmt: skip
    if failed:
        ax.plot(failed, [0.06] * len(failed), ls="none", marker="x", ms=7, mew=1.4,
                color="C7", transform=rug, clip_on=False,
                label=f"failed after measuring ({len(failed)})")  # fmt: skip
    if budget:
        ax.axvline(budget, ls="--", color="C1", lw=1.2, label=f"latency budget {budget:g} ms")
    search = report.get("search") or {}
    ax.set_xlabel(
        f"latency p50 (ms) at batch {search.get('batch_size', '?')}, "
        f"{search.get('precision', '?')}" + (", log scale" if log else "")
    )
    ax.set_ylabel("validation MSE (normalised targets)")
    ax.set_title(f"{report['study']}: loss against latency on the edge device", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.savefig(path, dpi=DPI)


def plot_hypervolume(report: Mapping[str, Any], path: Path) -> None:
    """The hypervolume of the feasible front after each trial, with its reference point."""
    fig, ax = _figure(8.0, 3.6)
    hv = report["hypervolume"]
    series = hv["series"]
    if series:
        ax.step([p["trial"] for p in series], [p["hypervolume"] for p in series], where="post",
                color="C0", lw=1.6)  # fmt: skip
        ax.set_xlim(left=min(p["trial"] for p in series) - 0.5)
    ref = hv.get("reference")
    if ref:
        ax.set_title(
            f"hypervolume of the feasible front; reference point: val MSE {ref['val_mse']:.4g}, "
            f"{ref['latency_ms']:.4g} ms",
            fontsize=10,
        )
    else:
        ax.set_title("hypervolume: no feasible complete trial yet", fontsize=10)
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (val MSE × ms)")
    ax.set_ylim(bottom=0)
    fig.savefig(path, dpi=DPI)


def plot_params(report: Mapping[str, Any], path: Path) -> None:
    """Latency over parameter count, by trial state."""
    fig, ax = _figure(8.0, 4.4)
    trials = [t for t in report["trials"] if t["params"] and t["latency_ms"]]
    base = report.get("baseline") or {}
    groups = (
        ("complete", "0.55", "o", lambda t: t["state"] == "complete" and not t["on_front"]),
        ("front", "C3", "o", lambda t: t["on_front"]),
        ("pruned (over budget)", "C1", "v", lambda t: t["state"] == "pruned"),
        ("failed", "C7", "x", lambda t: t["state"] == "failed"),
    )
    for label, color, marker, keep in groups:
        pts = [t for t in trials if keep(t)]
        if pts:
            ax.scatter([t["params"] for t in pts], [t["latency_ms"] for t in pts], s=30,
                       color=color, marker=marker, label=f"{label} ({len(pts)})")  # fmt: skip
    if base.get("params") and base.get("latency_ms"):
        ax.scatter([base["params"]], [base["latency_ms"]], marker="*", s=220, color="gold",
                   edgecolors="k", linewidths=0.8, label="baseline", zorder=5)  # fmt: skip
    ps = [t["params"] for t in trials] + [base.get("params") or 0]
    ms = [t["latency_ms"] for t in trials] + [base.get("latency_ms") or 0]
    logx = _log_if_spread(ax, ps, "x", "{:,.0f}".format)
    logy = _log_if_spread(ax, ms, "y")
    ax.set_xlabel("parameters" + (" (log scale)" if logx else ""))
    ax.set_ylabel("latency p50 (ms)" + (" (log scale)" if logy else ""))
    ax.set_title("latency against model size", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=DPI)


# --- HTML -------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(v: Any, spec: str, suffix: str = "") -> str:
    return "–" if v is None else format(v, spec) + suffix


def _flops(v: Any) -> str:
    if v is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return str(v)


def _ci(v: Any) -> str:
    return "–" if not v else f"{v[0]:.3f}–{v[1]:.3f}"


def _kv(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "–"
    return "; ".join(f"{k} {_plain(v)}" for k, v in d.items() if v is not None) or "–"


def _plain(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return "{" + _kv(v) + "}"
    return str(v)


def cell(key: str, value: Any, text: str, cls: str = "num", title: str | None = None) -> str:
    """A ``<td>`` with the exact value as JSON in ``data-value``; ``text`` is what shows."""
    t = f' title="{esc(title)}"' if title else ""
    data = esc(json.dumps(value, sort_keys=True, default=str))
    return f'<td class="{cls}" data-key="{esc(key)}" data-value="{data}"{t}>{esc(text)}</td>'


def _arch(arch_id: Any) -> str:
    return cell("arch_id", arch_id, str(arch_id or "–")[:12], "mono", title=arch_id)


FRONT_HEAD = (
    "trial", "arch id", "input", "key parameters", "params", "FLOPs", "p50 ms", "p90 ms",
    "CI95 of p50 (ms)", "val MSE", "test MSE", "RMSE mm/s", "RMSE W", "speed-up", "loss ratio",
)  # fmt: skip


def _p50(r: Mapping[str, Any]) -> str:
    """The p50 cell; an unstable measurement is marked, with why in its title."""
    why = r.get("unstable")
    text = _num(r["latency_ms"], ".3f") + (" (unstable)" if why else "")
    return cell("latency_ms", r["latency_ms"], text, "num unstable" if why else "num", why)


#: The mark of a val MSE that is not below the constant predictor's (see the legend).
CONSTANT_MARK = "✗"


def _val_mse(r: Mapping[str, Any], spec: str) -> str:
    """The val MSE cell; one not below the constant predictor's is marked, with why in its
    title."""
    if not r.get("no_better_than_constant"):
        return cell("val_mse", r["val_mse"], _num(r["val_mse"], spec))
    why = f"{NO_BETTER_THAN_CONSTANT} (val MSE {r.get('val_mse_constant', 0):.4g})"
    text = f"{_num(r['val_mse'], spec)} {CONSTANT_MARK}"
    return cell("val_mse", r["val_mse"], text, "num no-skill", why)


def _row_class(r: Mapping[str, Any], base: str = "") -> str:
    classes = [c for c in (base, "no-skill" if r.get("no_better_than_constant") else "") if c]
    return f' class="{" ".join(classes)}"' if classes else ""


def constant_notes(report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The legend of :data:`CONSTANT_MARK` when a row carries it, and the caveat on loss ratios
    against a baseline that is not better than the constant predictor."""
    out = []
    if any(r.get("no_better_than_constant") for r in rows):
        const = (report.get("constant_predictor") or {}).get("val_mse")
        value = "" if const is None else f" (val MSE {const:.4g})"
        out.append(
            f'<p class="note no-skill-legend">{esc(CONSTANT_MARK)}: {esc(NO_BETTER_THAN_CONSTANT)}'
            f"{esc(value)}: the model learned nothing.</p>"
        )
    if report.get("baseline_caveat"):
        out.append(f'<p class="warning" id="baseline-caveat">Loss ratios: '
                   f"{esc(report['baseline_caveat'])}.</p>")  # fmt: skip
    return "".join(out)


def _model_cells(r: Mapping[str, Any]) -> list[str]:
    inp = r.get("input")
    return [
        _arch(r["arch_id"]),
        cell("input", inp, "×".join(str(x) for x in inp) if inp else "–"),
        cell("key_params", r["key_params"], _kv(r["key_params"]), "params"),
        cell("params", r["params"], _num(r["params"], ",")),
        cell("flops", r["flops"], _flops(r["flops"])),
        _p50(r),
        cell("p90_ms", r["p90_ms"], _num(r["p90_ms"], ".3f")),
        cell("ci95_ms", r["ci95_ms"], _ci(r["ci95_ms"])),
        _val_mse(r, ".4g"),
        cell("test_mse", r["test_mse"], _num(r["test_mse"], ".4g")),
        cell("rmse_speed_mm_s", r["rmse_speed_mm_s"], _num(r["rmse_speed_mm_s"], ".1f")),
        cell("rmse_power_w", r["rmse_power_w"], _num(r["rmse_power_w"], ".1f")),
        cell("speedup", r["speedup"], _num(r["speedup"], ".2f", "×")),
        cell("loss_ratio", r["loss_ratio"], _num(r["loss_ratio"], ".2f", "×")),
    ]


def _protocol(c: Mapping[str, Any]) -> str:
    if "protocol" not in c:
        return "–"  # not known without the store
    return _kv(c["protocol"]) if c["protocol"] else "the backend's default"


def _table(table_id: str, head: Sequence[str], rows: Sequence[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty" id="{esc(table_id)}-empty">{esc(empty)}</p>'
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (
        f'<table id="{esc(table_id)}"><thead><tr>{th}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def kind_front_tables(report: Mapping[str, Any]) -> str:
    """One front per other device kind of a study that targets several (its p50 there)."""
    out = []
    for kind, front in (report.get("fronts_by_kind") or {}).items():
        head = ["trial", "arch", "params", "p50 ms", "p90 ms", "val MSE", "speed-up"]
        rows = [
            f'<tr data-trial="{int(r["trial"])}">'
            + cell("trial", r["trial"], str(r["trial"]))
            + cell("arch_id", r["arch_id"], str(r["arch_id"] or "")[:12], "label")
            + cell("params", r["params"], _num(r["params"], ","))
            + _p50(r)
            + cell("p90_ms", r["p90_ms"], _num(r["p90_ms"], ".3f"))
            + _val_mse(r, ".5f")
            + cell("speedup", r["speedup"], _num(r["speedup"], ".2f", "×"))
            + "</tr>"
            for r in front
        ]
        out.append(
            f"<h3>Front on device kind {esc(kind)}</h3>"
            + _table(f"front-{kind}", head, rows, f"No feasible complete trial on {kind}.")
            + constant_notes({**report, "baseline_caveat": None}, front)
        )
    return "\n".join(out)


def front_table(report: Mapping[str, Any]) -> str:
    confirm = any(r.get("confirm_p50_ms") is not None for r in report["front"])
    head = [*FRONT_HEAD, "confirmed p50 ms"] if confirm else list(FRONT_HEAD)
    rows = []
    base = report.get("baseline")
    shown: list[Mapping[str, Any]] = list(report["front"])
    constant = (report.get("constant_predictor") or {}).get("val_mse")
    if constant is not None and report["front"]:
        # The yardstick of every loss: the training split's mean, the same for every trial.
        before = ("arch_id", "input", "key_params", "params", "flops", "latency_ms", "p90_ms",
                  "ci95_ms")  # fmt: skip
        after = ("test_mse", "rmse_speed_mm_s", "rmse_power_w", "speedup", "loss_ratio")
        why = "the training split's mean target for every sample, on the validation split"
        rows.append(
            '<tr class="constant" data-trial="constant">'
            + cell("trial", None, "constant predictor", "label", why)
            + "".join(cell(k, None, "–") for k in before)
            + cell("val_mse", constant, _num(constant, ".4g"))
            + "".join(cell(k, None, "–") for k in after)
            + (cell("confirm_p50_ms", None, "") if confirm else "")
            + "</tr>"
        )
    if base and base.get("latency_ms") is not None:
        shown.append(base)
        extra = [cell("confirm_p50_ms", None, "")] if confirm else []
        rows.append(
            f'<tr{_row_class(base, "baseline")} data-trial="baseline">'
            + cell("trial", None, "baseline", "label")
            + "".join(_model_cells(base) + extra)
            + "</tr>"
        )
    for r in report["front"]:
        extra = (
            [cell("confirm_p50_ms", r["confirm_p50_ms"], _num(r["confirm_p50_ms"], ".3f"))]
            if confirm
            else []
        )
        rows.append(
            f'<tr{_row_class(r)} data-trial="{int(r["trial"])}">'
            + cell("trial", r["trial"], str(r["trial"]))
            + "".join(_model_cells(r) + extra)
            + "</tr>"
        )
    table = _table("front", head, rows, "No trial completed within the constraints: no front.")
    return table + constant_notes(report, shown)


COUNT_LABELS = (
    ("trials", "trials"), ("complete", "complete"), ("pruned", "pruned (over the budget)"),
    ("failed", "failed"), ("running", "running"), ("duplicates", "duplicates of an earlier trial"),
    ("front", "on the front"), ("tasks_sent.measure", "measure tasks sent"),
    ("tasks_sent.train", "train tasks sent"),
    ("measurements_reused", "measurements reused from the store"),
)  # fmt: skip


def counts_table(report: Mapping[str, Any]) -> str:
    rows = []
    for key, label in COUNT_LABELS:
        value: Any = report["counts"]
        for part in key.split("."):
            value = value[part]
        rows.append(f'<tr><th scope="row">{esc(label)}</th>{cell(key, value, str(value))}</tr>')
    return f'<table id="counts" class="narrow"><tbody>{"".join(rows)}</tbody></table>'


def ended_tables(report: Mapping[str, Any]) -> str:
    pruned, failed = [], []
    for t in report["trials"]:
        head = f'<tr data-trial="{int(t["trial"])}">' + cell("trial", t["trial"], str(t["trial"]))
        if t["state"] == "pruned":
            pruned.append(
                head
                + _arch(t["arch_id"])
                + cell("latency_ms", t["latency_ms"], _num(t["latency_ms"], ".3f"))
                + cell("reason", t["reason"], t["reason"] or "–", "text")
                + "</tr>"
            )
        elif t["state"] == "failed":
            failed.append(
                head
                + _arch(t["arch_id"])
                + cell("latency_ms", t["latency_ms"], _num(t["latency_ms"], ".3f"))
                + cell("reason", t["reason"], t["reason"] or "–", "text")
                + cell("errors", t["errors"], "; ".join(t["errors"]) or "–", "text")
                + "</tr>"
            )
    base = report.get("baseline") or {}
    if base and base.get("state") not in (None, "complete", "running"):
        failed.append(
            '<tr data-trial="baseline">'
            + cell("trial", None, "baseline", "label")
            + _arch(base.get("arch_id"))
            + cell("latency_ms", base.get("latency_ms"), _num(base.get("latency_ms"), ".3f"))
            + cell("reason", base.get("reason"), base.get("reason") or "–", "text")
            + cell("errors", [], "–", "text")
            + "</tr>"
        )
    return (
        "<h2>Pruned trials</h2>"
        + _table("pruned", ["trial", "arch id", "p50 ms", "reason"], pruned, "None.")
        + "<h2>Failed trials</h2>"
        + _table(
            "failed", ["trial", "arch id", "p50 ms", "reason", "earlier errors"], failed, "None."
        )
    )


def context_tables(report: Mapping[str, Any]) -> str:
    mc = report["measurement_context"]
    parts = []
    if mc.get("note"):
        parts.append(f'<p class="note">{esc(mc["note"])}</p>')
    devices = []
    for d in mc["devices"]:
        mem = d.get("memory_total_bytes")
        jetson = {k: d.get(k) for k in ("l4t_release", "jetpack_version")}
        power = {k: d.get(k) for k in ("nvpmodel", "jetson_clocks")}
        devices.append(
            "<tr>"
            + cell("hostname", d.get("hostname"), d.get("hostname") or "–", "text")
            + cell("device_model", d.get("device_model"), d.get("device_model") or "–", "text")
            + cell("cpu_model", d.get("cpu_model"), d.get("cpu_model") or "–", "text")
            + cell("machine", d.get("machine"), d.get("machine") or "–", "text")
            + cell("cpu_count", d.get("cpu_count"), _num(d.get("cpu_count"), "d"))
            + cell("memory_total_bytes", mem, _num(mem / 2**30 if mem else None, ".1f", " GiB"))
            + cell("jetson", jetson, _kv(jetson), "text")
            + cell("power_mode", power, _kv(power), "text")
            + cell("versions", d.get("versions"), _kv(d.get("versions")), "text")
            + cell(
                "device_key",
                d.get("device_key"),
                str(d.get("device_key"))[:12],
                "mono",
                title=d.get("device_key"),
            )
            + cell("measurements", d.get("measurements"), str(d.get("measurements")))
            + "</tr>"
        )
    head = ["host", "model", "CPU", "machine", "cores", "memory", "L4T / JetPack",
            "power mode", "versions", "device key", "measurements"]  # fmt: skip
    parts.append(_table("devices", head, devices, "No stored measurement to take devices from."))
    contexts = []
    for c in mc["contexts"]:
        contexts.append(
            "<tr>"
            + cell("device", c.get("device"), c.get("device") or "–", "text")
            + cell("backend", c.get("backend"), c.get("backend") or "–", "text")
            + cell(
                "backend_fingerprint",
                c.get("backend_fingerprint"),
                _kv(c.get("backend_fingerprint")),
                "text",
            )
            + cell("precision", c.get("precision"), c.get("precision") or "–", "text")
            + cell("batch_size", c.get("batch_size"), _num(c.get("batch_size"), "d"))
            + cell("protocol", c.get("protocol"), _protocol(c), "text")
            + cell("power_mode", c.get("power_mode"), _kv(c.get("power_mode")), "text")
            + cell("versions", c.get("versions"), _kv(c.get("versions")), "text")
            + cell("measurements", c.get("measurements"), str(c.get("measurements")))
            + cell("throttled", c.get("throttled"), _num(c.get("throttled"), "d"))
            + "</tr>"
        )
    head = ["device", "backend", "runtime", "precision", "batch", "protocol", "power mode",
            "versions", "measurements", "throttled"]  # fmt: skip
    parts.append(_table("contexts", head, contexts, "No measurement."))
    return "".join(parts)


def headline(report: Mapping[str, Any]) -> str:
    front = [r for r in report["front"] if r["speedup"] is not None]
    if not front:
        return ""
    out = []
    if report.get("baseline_caveat"):
        out.append(f'<li class="warning">Against the baseline: {esc(report["baseline_caveat"])}'
                   "</li>")  # fmt: skip
    fast = max(front, key=lambda r: r["speedup"])
    good = min(front, key=lambda r: r["val_mse"])
    const = (report.get("constant_predictor") or {}).get("val_mse")
    if const:
        out.append(
            f"<li>Lowest loss on the front: val MSE {_num(good['val_mse'], '.4g')}, "
            f"<b>{good['val_mse'] / const:.2f}×</b> the constant predictor's "
            f"({_num(const, '.4g')}; below 1× it learned something)</li>"
        )
    for what, r in (("Fastest", fast), ("Lowest loss", good)):
        out.append(
            f"<li>{what} on the front: trial {int(r['trial'])} "
            f"(<span class=mono>{esc(str(r['arch_id'])[:12])}</span>), "
            f"<b>{_num(r['speedup'], '.2f', '×')}</b> speed-up at loss ratio "
            f"<b>{_num(r['loss_ratio'], '.2f', '×')}</b> against the baseline</li>"
        )
        if fast is good:
            break
    return f'<ul class="headline">{"".join(out)}</ul>'


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1280px;padding:0 16px;color:#222}
h1{font-size:22px;margin-bottom:4px}
h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:8px 0;font-size:12.5px}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.mono,.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
td.params{font-size:11.5px;max-width:260px}
td.text{max-width:420px;overflow-wrap:break-word}tr.baseline{background:#fff8dc}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption,.note,.defs{color:#555;font-size:12.5px}table.narrow td{min-width:60px}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}.headline{font-size:15px}
tr.constant{background:#f0f0f0;color:#444}td.no-skill{color:#b00020;font-weight:600}
.warning{color:#b00020}
"""


def pareto_caption(report: Mapping[str, Any]) -> str:
    """What the Pareto plot shows, naming only what is drawn."""
    states = {t["state"] for t in report["trials"] if t["latency_ms"]}
    parts = ["Validation MSE against latency p50. Grey: complete trials",
             "red, connected: the feasible front"]  # fmt: skip
    if (report.get("baseline") or {}).get("val_mse"):
        parts.append("star: the baseline")
    if "pruned" in states:
        parts.append(
            "orange ticks in the shaded band: trials pruned over the latency budget (measured, "
            "never trained, so they have no loss)"
        )
    if "failed" in states:
        parts.append("grey crosses in the band: trials that failed after their latency was known")
    if report.get("latency_budget_ms"):
        parts.append("dashed: the budget")
    if (report.get("constant_predictor") or {}).get("val_mse"):
        parts.append("dotted: the constant predictor's val MSE (no better is no skill)")
    return "; ".join(parts) + "."


def render_html(report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """The page (plots: name -> file name relative to the page)."""
    s = report.get("search") or {}
    budget = report.get("latency_budget_ms")
    hv = report["hypervolume"]
    ref = hv.get("reference")
    sub = (
        f"space {esc(s.get('space'))} · objective {esc(report.get('objective'))}"
        + (f" · latency budget {esc(f'{budget:g}')} ms" if budget else " · no latency budget")
        + f" · batch {esc(s.get('batch_size'))}, {esc(s.get('precision'))}"
        + (" · latency first" if s.get("latency_first") else " · measure and train at once")
    )
    hv_text = (
        f"Reference point: val MSE {ref['val_mse']:.6g}, latency {ref['latency_ms']:.6g} ms "
        f"({esc(hv['rule'])}). Final hypervolume {hv['final']:.6g} {esc(hv.get('unit', ''))}."
        if ref
        else "No feasible complete trial: no hypervolume."
    )
    figs = {
        "pareto": pareto_caption(report),
        "hypervolume": "Hypervolume of the feasible front after each trial number. " + hv_text,
        "params": "Latency p50 against the number of parameters.",
    }

    def figure(name: str) -> str:
        if name not in plots:
            return ""
        return (
            f'<figure id="fig-{name}"><img src="{esc(plots[name])}" alt="{esc(name)} plot">'
            f"<figcaption>{figs[name]}</figcaption></figure>"
        )

    settings = {k: report.get(k) for k in ("search", "plan", "search_id", "storage")}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hpc2edge report: {esc(report["study"])}</title><style>{CSS}</style></head>
<body data-format="{esc(report["format"])}">
<h1>Study <span id="study-name">{esc(report["study"])}</span></h1>
<p class="sub">{sub}</p>
{headline(report)}
<h2>Summary</h2>
{counts_table(report)}
<h2>Pareto front</h2>
{figure("pareto")}
<p class="defs">Ratios against the baseline: speed-up = baseline p50 / p50;
loss ratio = baseline val MSE / val MSE; above 1× is better than the baseline. The constant
predictor predicts the training split's mean target for every sample: a val MSE not below its
val MSE ({esc(CONSTANT_MARK)}) learned nothing. Latency:
median of the compute series on the edge device (p50), its 95&nbsp;% confidence interval
and p90. Losses on the normalised targets (speed / 900, power / 215); RMSEs in physical
units.</p>
{front_table(report)}
{kind_front_tables(report)}
<h2>Hypervolume</h2>
{figure("hypervolume")}
<h2>Latency and size</h2>
{figure("params")}
{ended_tables(report)}
<h2>Devices and measurement context</h2>
{context_tables(report)}
<h2>Settings</h2>
<pre id="settings">{esc(json.dumps(settings, indent=2, sort_keys=True, default=str))}</pre>
<p class="defs">Generated by hpc2edge from the study storage and the measurement store;
the same numbers are in report.json.</p>
</body></html>
"""


def write(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """The PNGs and ``report.html`` in ``out``; returns ``{name: path}`` (``html`` included)."""
    drawers = {"pareto": plot_pareto, "hypervolume": plot_hypervolume, "params": plot_params}
    files: dict[str, Path] = {}
    for name, draw in drawers.items():
        path = out / PLOTS[name]
        draw(report, path)
        files[name] = path
    page = out / "report.html"
    page.write_text(render_html(report, {k: p.name for k, p in files.items()}), encoding="utf-8")
    files["html"] = page
    return files


__all__ = ["PLOTS", "plot_hypervolume", "plot_params", "plot_pareto", "render_html", "write"]
