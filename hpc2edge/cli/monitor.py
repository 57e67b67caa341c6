"""The ``hpc2edge monitor`` command: Flower in the foreground as the monitor role."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hpc2edge.config import load_settings
from hpc2edge.ops.flower import DEFAULT_PORT, exec_flower, plan
from hpc2edge.transport.flowerguard import DEFAULT_ADDRESS, DEFAULT_USER
from hpc2edge.util.net import is_loopback


@click.command("monitor")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--address",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="Interface to listen on. /metrics and /healthcheck need no password: keep loopback and "
    "use `ssh -L` unless a firewall or proxy guards the port.",
)
@click.option("--user", default=DEFAULT_USER, show_default=True, help="Basic-auth user name.")
@click.option(
    "--read-only",
    is_flag=True,
    help="Switch off Flower's controls (revoke, shutdown, pool, send task): watch only.",
)
@click.pass_context
def monitor_cmd(ctx: click.Context, port: int, address: str, user: str, read_only: bool) -> None:
    """Run Flower in the foreground as the monitor role, with HTTP basic auth.

    With a config of role `monitor` Flower uses it; otherwise it runs as the monitor role of the
    local stack (`.hpc2edge/conf/monitor.toml`). The password is created on first use in the
    secrets folder (flower.password, 0600) and never printed.
    """
    from hpc2edge.transport import broker

    obj = ctx.obj or {}
    config_path: Path | None = obj.get("config")
    settings = load_settings(config_path, dict(os.environ))
    try:
        launch = plan(
            settings,
            config_path=config_path,
            environ=os.environ,
            port=port,
            address=address,
            user=user,
            read_only=read_only,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    broker.client(launch.settings).close()  # the broker refuses us: say why now, not in a loop
    click.echo(
        f"Flower on {launch.url} as broker user {launch.settings.username!r}; "
        f"basic auth user {launch.user!r}, password in {launch.password_file}"
    )
    if not is_loopback(address):
        click.echo(
            f"warning: listening on {address}: /metrics and /healthcheck answer without a "
            "password; guard the port (firewall, proxy) or use `ssh -L`",
            err=True,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    exec_flower(launch.argv, launch.env)
