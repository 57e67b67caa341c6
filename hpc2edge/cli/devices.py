"""The ``hpc2edge devices`` command: every device kind's units, and an operator's release.

What it prints comes from the units' own reports and the orchestrator's decisions
(:mod:`hpc2edge.transport.fleet`); reports are written by the units, so every string shown is
checked there and escaped here before it reaches the terminal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from hpc2edge.cli.context import command_settings, print_json

if TYPE_CHECKING:
    from hpc2edge.config import Settings
    from hpc2edge.transport.fleet import Fleet, Review

#: The rule's default (hpc2edge.transport.fleet.DEFAULT_TOLERANCE), here so that `--help`
#: loads no transport module.
TOLERANCE = 1.5


@dataclass(frozen=True)
class KindView:
    """One kind as read now: its queue's depth, its units and the rule's decisions."""

    kind: str
    queue: str
    depth: int | None
    fleet: Fleet
    review: Review


def read_kinds(client: Any, tolerance: float, now: float) -> list[KindView]:
    """Every kind a unit announced (:func:`~hpc2edge.transport.liveness.known_queues`)."""
    from hpc2edge.roles import kind_of_queue
    from hpc2edge.transport import fleet, liveness

    views = []
    for queue in liveness.known_queues(client, now):
        kind = kind_of_queue(queue)
        if kind is None:
            continue
        units = fleet.read_fleet(client, queue)
        depth = int(client.llen(queue))
        views.append(KindView(kind, queue, depth, units, fleet.decide(units, now, tolerance)))
    return views


def _unit_json(view: KindView, unit: str, now: float) -> dict[str, Any]:
    from hpc2edge.transport.fleet import status_of

    report, decision = view.fleet.reports[unit], view.review.decisions[unit]
    return {
        "unit": unit,
        "status": status_of(report, decision).value,
        "seen_s_ago": round(now - report.seen_unix_s, 1),
        "report": report.to_json(),
        "decision": decision.to_json(),
    }


def _kind_json(view: KindView, now: float) -> dict[str, Any]:
    return {
        "kind": view.kind,
        "queue": view.queue,
        "depth": view.depth,
        "reference_ms": view.review.reference_ms,
        "reference_unit": view.review.reference_unit,
        "units": [_unit_json(view, u, now) for u in sorted(view.fleet.reports)],
        "malformed": view.fleet.malformed,
        "left_off": view.fleet.left_off,
        "decisions_error": view.fleet.entries_error,
    }


def _stack_text(stack: dict[str, Any]) -> str:
    """``tensorrt 10.3.0, jetpack 6.0, power MAXN``: the backend with its version first."""
    backend = str(stack.get("backend", "?"))
    parts = [f"{backend} {stack[backend]}" if backend in stack else backend]
    parts += [f"{k} {stack[k]}" for k in ("onnxruntime", "tensorrt", "jetpack") if k in stack]
    parts = list(dict.fromkeys(parts))  # the backend's own version once
    if "power_mode" in stack:
        parts.append(f"power {stack['power_mode']}")
    return ", ".join(parts)


def _kind_lines(view: KindView, now: float) -> list[str]:
    from hpc2edge.transport.fleet import Verdict, status_of

    r = view.review
    reference = (
        f"reference {r.reference_ms:.3g} ms ({r.reference_unit})"
        if r.reference_ms
        else "no reference"
    )
    count = len(view.fleet.reports)
    lines = [
        f"kind {view.kind} (queue {view.queue}): depth {view.depth}, {count} unit(s), {reference}"
    ]
    for unit in sorted(view.fleet.reports):
        report, d = view.fleet.reports[unit], r.decisions[unit]
        status = status_of(report, d).value
        ref = "ref -" if d.reference_p50_ms is None else f"ref {d.reference_p50_ms:.3g} ms"
        if d.ratio is not None:
            ref += f" ({d.ratio:.2f}x)"
        lines.append(
            f"  {unit:<24} {status:<11} seen {now - report.seen_unix_s:4.0f} s ago  "
            f"{report.measurements:>6} measured  {ref:<22} {_stack_text(report.stack)}"
        )
        if d.verdict is Verdict.QUARANTINED and not d.recorded and status != "quarantined":
            lines.append(f"    review would quarantine it: {d.reason}")
        elif d.reason:
            lines.append(f"    {d.reason}")
    for name, problem in sorted(view.fleet.malformed.items()):
        lines.append(f"  malformed report {name}: {problem}")
    if view.fleet.left_off:
        lines.append(f"  ... {view.fleet.left_off} more report(s) not read")
    if view.fleet.entries_error:
        lines.append(f"  ({view.fleet.entries_error})")
    return lines


def summary_lines(settings: Settings, now: float | None = None) -> list[str]:
    """One line per kind for ``hpc2edge status``: units, busy, quarantined (and gone)."""
    from hpc2edge.errors import Hpc2EdgeError
    from hpc2edge.transport import broker
    from hpc2edge.transport.fleet import UnitStatus, status_of

    now = time.time() if now is None else now
    try:
        with broker.client(settings) as c, broker.translate_errors("reading the device kinds"):
            views = read_kinds(c, TOLERANCE, now)
    except Hpc2EdgeError as exc:
        return [f"kinds   unavailable: {exc}"]
    lines = []
    for view in views:
        states = [status_of(view.fleet.reports[u], d) for u, d in view.review.decisions.items()]
        live = [s for s in states if s is not UnitStatus.GONE]
        busy, held = states.count(UnitStatus.BUSY), states.count(UnitStatus.QUARANTINED)
        gone = f"  gone {len(states) - len(live)}" if len(live) < len(states) else ""
        lines.append(
            f"kind    {view.kind:<12} units {len(live)}  busy {busy}  quarantined {held}{gone}"
        )
    return lines


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--release",
    "release_unit",
    metavar="UNIT",
    default=None,
    help="Release UNIT from quarantine; it resumes on its next heartbeat.",
)
@click.option(
    "--review",
    "record",
    is_flag=True,
    help="Record the rule's decisions now (the orchestrator does this during a search).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(1.0),
    default=TOLERANCE,
    show_default=True,
    help="A unit whose reference is more than this times the kind's fastest is quarantined.",
)
@click.pass_context
def devices_cmd(
    ctx: click.Context,
    as_json: bool,
    release_unit: str | None,
    record: bool,
    tolerance: float,
) -> None:
    """Device kinds and their units: state, last seen, measurements, software, reference check.

    A unit is idle, busy, quarantined (it stopped consuming its queue) or gone (no report for
    three heartbeats). Its reference is the median of the reference model's compute time,
    shown against the kind's fastest unit that is not throttled. Reading needs the
    orchestrator's or the admin's login (the monitor sees no decisions); --release and
    --review write the decisions, which only those two may.
    """
    from hpc2edge.roles import is_edge_queue
    from hpc2edge.transport import broker, fleet, liveness
    from hpc2edge.transport.deadletters import printable

    settings = command_settings(ctx)
    with broker.client(settings) as c, broker.translate_errors("reading the device kinds"):
        now = time.time()
        if release_unit is not None:
            queues = [q for q in liveness.known_queues(c, now) if is_edge_queue(q)]
            try:
                released = fleet.release(c, release_unit, queues, now)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--release") from None
            if not released:
                raise click.ClickException(
                    f"{printable(release_unit)} is not quarantined on {', '.join(queues)}"
                )
            if not as_json:
                click.echo(f"released {release_unit} on {', '.join(released)}")
        if record:
            for queue in [q for q in liveness.known_queues(c, now) if is_edge_queue(q)]:
                fleet.review(c, queue, tolerance, now)
        views = read_kinds(c, tolerance, now)
    if as_json:
        print_json({"kinds": [_kind_json(v, now) for v in views]})
        return
    if not views:
        click.echo("no device kinds: no edge unit has announced itself")
    for view in views:
        for line in _kind_lines(view, now):
            click.echo(printable(line))
