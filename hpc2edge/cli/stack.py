"""The local stack's commands, ``up``, ``down`` and ``status``, and ``ping`` (any broker)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from hpc2edge.cli.context import BadInput, command_settings, print_json
from hpc2edge.ops.flower import DEFAULT_PORT
from hpc2edge.roles import is_task_queue


@click.command("up")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for each worker to answer.",
)
@click.option("--monitor", is_flag=True, help="Also start Flower (monitor role, basic auth).")
@click.option(
    "--edge",
    "edge",
    multiple=True,
    metavar="KIND=BACKEND[:OPT=V,...]",
    help="Start the units of a device kind instead of one default edge worker (repeatable): "
    "e.g. cpu-1t=onnxruntime:threads=1, cpu-2t=onnxruntime:threads=2,units=2, "
    "orin=table:table=orin.json. Options: threads (onnxruntime), table (table), units (all).",
)
@click.option(
    "--monitor-port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True
)
@click.pass_context
def up_cmd(
    ctx: click.Context, timeout_s: float, monitor: bool, monitor_port: int, edge: tuple[str, ...]
) -> None:
    """Start broker, one train worker and the edge workers in the background (one of the
    default kind, or the units --edge asks for)."""
    from hpc2edge.ops import stack

    settings = command_settings(ctx)
    try:
        stack.edge_units(edge, settings)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    result = stack.up(
        settings,
        timeout_s=timeout_s,
        monitor_port=monitor_port if monitor else None,
        edge=edge,
    )
    started = ", ".join(result["started"]) or "nothing new (already up)"
    click.echo(f"started: {started}; state in {result['state_dir']}")
    for queue, answer in result["workers"].items():
        click.echo(
            f"  {queue:>5}: {answer['hostname']} answered in {answer['round_trip_ms']:.1f} ms"
        )
    if "monitor" in result:
        m = result["monitor"]
        click.echo(f"  flower: {m['url']} (user {m['user']!r}, password in {m['password_file']})")


@click.command("down")
@click.pass_context
def down_cmd(ctx: click.Context) -> None:
    """Stop exactly the processes `hpc2edge up` started."""
    from hpc2edge.ops import stack

    stopped = stack.down(command_settings(ctx))
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True)
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool, timeout_s: float) -> None:
    """Broker reachability and TLS version, workers per queue, queue depths.

    Exits 1 when the broker cannot be reached.
    """

    from hpc2edge.ops import stack

    st = stack.status(command_settings(ctx), timeout_s=timeout_s)
    if as_json:
        print_json(asdict(st))
    else:
        state = f"reachable over {st.tls_version}" if st.reachable else "UNREACHABLE"
        click.echo(f"broker  {st.broker} as {st.user!r}: {state}")
        if st.error:
            click.echo(f"  {st.error}")
        for queue, hosts in st.workers.items():
            depth = st.queue_depths.get(queue, "?")
            click.echo(
                f"queue   {queue:<5} depth {depth:<5} workers {len(hosts)}: "
                f"{', '.join(hosts) or '-'}"
            )
        if st.reachable:
            from hpc2edge.cli.devices import summary_lines

            for line in summary_lines(command_settings(ctx)):
                click.echo(line)
        for name, alive in st.local_processes.items():
            click.echo(f"local   {name:<12} {'running' if alive else 'not running'}")
        if st.monitor_url:
            click.echo(f"monitor {st.monitor_url}")
    if not st.reachable:
        raise click.exceptions.Exit(1)


def _check_queue(_ctx: Any, _param: Any, value: str) -> str:
    if not is_task_queue(value):
        raise click.BadParameter(f"{value!r} is not train, edge or edge.<kind> (a device kind)")
    return value


@click.command("ping")
@click.option("--queue", required=True, callback=_check_queue, help="train, edge or edge.<kind>.")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the worker's whole answer.")
@click.pass_context
def ping_cmd(ctx: click.Context, queue: str, timeout_s: float, as_json: bool) -> None:
    """Send hpc2edge.ping through the broker to a worker of QUEUE and print who answered."""
    from hpc2edge.transport import probes

    answer = probes.ping(command_settings(ctx), queue, timeout_s=timeout_s)
    if as_json:
        print_json(answer)
        return
    v = answer["versions"]
    click.echo(
        f"{queue}: {answer['hostname']} (queue {answer['queue']}) answered in "
        f"{answer['round_trip_ms']:.1f} ms; python {v['python']}, celery {v['celery']}, "
        f"hpc2edge {v['hpc2edge']}"
    )
