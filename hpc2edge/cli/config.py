"""The ``hpc2edge config`` commands: show the effective settings, check them and their files."""

from __future__ import annotations

import click

from hpc2edge.cli.context import command_settings
from hpc2edge.config import render_masked


@click.group("config")
def config_group() -> None:
    """Show or check the effective configuration."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective configuration as TOML, secrets masked."""
    click.echo(render_masked(command_settings(ctx)), nl=False)


@config_group.command("check")
@click.option("--connect", is_flag=True, help="Also log in to the broker with these settings.")
@click.pass_context
def config_check(ctx: click.Context, connect: bool) -> None:
    """Validate the configuration and the files it names (certificates, key, password)."""
    settings = command_settings(ctx, require_files=True)
    click.echo(
        f"ok: {settings.source} is valid (role {settings.role}, "
        f"broker {settings.broker.host}:{settings.broker.port})"
    )
    if connect:
        from hpc2edge.transport import broker

        with broker.client(settings) as c:
            click.echo(f"ok: logged in as {settings.username!r} over {broker.tls_version(c)}")
