"""The ``hpc2edge dashboard`` command: optuna-dashboard behind basic auth and a Host check."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from hpc2edge.cli.context import STORAGE_OPTION, command_settings
from hpc2edge.config import mask_url, study_storage_url
from hpc2edge.ops.dashboard import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_USER,
    dashboard_url,
    ensure_password,
    make_dashboard_server,
    password_path,
)
from hpc2edge.search.storage import open_storage
from hpc2edge.util.net import is_loopback


@click.command("dashboard")
@STORAGE_OPTION
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Interface to listen on. Basic auth sends the password in clear: keep loopback and "
    "use `ssh -L`.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--user", default=DEFAULT_USER, show_default=True, help="Basic-auth user name.")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME[:PORT]",
    help="Also accept this Host header (a name a proxy or tunnel forwards); repeatable.",
)
@click.pass_context
def dashboard_cmd(
    ctx: click.Context,
    url: str | None,
    host: str,
    port: int,
    user: str,
    allow_hosts: Sequence[str],
) -> None:
    """Run optuna-dashboard on the study storage in the foreground (Ctrl-C stops it).

    Behind HTTP basic auth: user `admin` (--user), password in <secrets>/dashboard.password
    (created on first use, 0600; default .hpc2edge/secrets/dashboard.password). Requests whose
    Host header is not this address (or localhost / 127.0.0.1 / [::1] on loopback) get 400, a
    defence against DNS rebinding. From another machine: `ssh -N -L 8080:127.0.0.1:8080
    user@this-host`, then open http://localhost:8080.
    """
    settings = command_settings(ctx)
    url = study_storage_url(settings, url)
    storage = open_storage(url)
    names = [s.study_name for s in storage.get_all_studies()]
    pw_file = password_path(settings)
    password = ensure_password(pw_file)
    try:
        server = make_dashboard_server(
            storage, host, port, user=user, password=password, extra_hosts=allow_hosts
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--user") from None
    click.echo(
        f"optuna-dashboard on {dashboard_url(host, port)} for {mask_url(url)} "
        f"({len(names)} {'study' if len(names) == 1 else 'studies'}); Ctrl-C stops it"
    )
    click.echo(f"login: user {user!r}, password in {pw_file}")
    if not is_loopback(host):
        click.echo(
            f"WARNING: listening on {host}: the dashboard's basic auth travels in clear (no "
            "TLS); anyone on the path can read the password and the studies. Bind 127.0.0.1 and "
            f"use `ssh -N -L {port}:127.0.0.1:{port} user@this-host` instead, or put a TLS "
            "proxy in front (and --allow-host its name).",
            err=True,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("dashboard stopped", err=True)
    finally:
        server.server_close()
