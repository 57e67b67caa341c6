"""The ``hpc2edge dead-letters`` command: what the workers' intake refused, and why."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict

import click

from hpc2edge.cli.context import command_settings, print_json
from hpc2edge.roles import is_task_queue


def _check_queues(_ctx: object, _param: object, values: Sequence[str]) -> Sequence[str]:
    for q in values:
        if not is_task_queue(q):
            raise click.BadParameter(f"{q!r} is not train, edge or edge.<kind> (a device kind)")
    return values


@click.command("dead-letters")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    callback=_check_queues,
    help="Only this queue: train, edge or edge.<kind> (repeatable; default: every queue "
    "whose workers announced themselves within the hour).",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--clear",
    is_flag=True,
    help="Then delete every record of these queues (not only those printed).",
)
@click.pass_context
def dead_letters_cmd(
    ctx: click.Context, queues: Sequence[str], limit: int, as_json: bool, clear: bool
) -> None:
    """Messages the workers refused (malformed, forged, oversized, or that stopped a worker).

    Each was taken off its queue and never run. A record says when, which worker, why, the
    sender's claimed origin, the task and id where readable, and an excerpt of at most 512
    characters. Needs a role that can read hpc2edge:dead:* (orchestrator, monitor or admin).
    """

    from hpc2edge.transport import broker, deadletters, liveness

    settings = command_settings(ctx)
    with broker.client(settings) as c, broker.translate_errors("reading the dead letters"):
        chosen = list(queues) or liveness.known_queues(c)
        records = deadletters.read(c, chosen, limit=limit)
        cleared = deadletters.clear(c, chosen) if clear else 0
    if as_json:
        print_json([asdict(r) for r in records])
    elif not records:
        click.echo(f"no dead letters on {', '.join(chosen)}")
    for r in records if not as_json else []:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.time_unix_s))
        task = f"{r.task or '?'}[{r.task_id or '?'}]"
        line = f"{when}Z {r.queue:<5} {r.worker} {task} from {r.origin or '?'}: {r.reason}"
        click.echo(deadletters.printable(line))  # stored records are written by workers
    if clear and not as_json:
        click.echo(f"cleared {cleared} record(s)")
