"""The ``hpc2edge broker`` commands: a local TLS-only broker, its ACL and its scripts."""

from __future__ import annotations

from pathlib import Path

import click

from hpc2edge.cli.context import command_settings
from hpc2edge.roles import ADMIN, ROLES

_DIR_OPTION = click.option(
    "--dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder holding tls/, secrets/ and broker/ (default: from the config, .hpc2edge).",
)


@click.group("broker")
def broker_group() -> None:
    """Run a local TLS-only Redis broker (single-machine deployments)."""


@broker_group.command("start")
@_DIR_OPTION
@click.pass_context
def broker_start(ctx: click.Context, state_dir: Path | None) -> None:
    """Start redis-server with broker/redis.conf and broker/users.acl (TLS, ACL, AOF).

    The ACL also holds a user for every active device of the registry (`tls add-device`).
    """
    from hpc2edge.ops import localbroker, stack

    settings = stack.prepare(command_settings(ctx, state_dir=state_dir))
    pid = localbroker.start(settings)
    click.echo(
        f"broker up: rediss://{settings.broker.host}:{settings.broker.port} (pid {pid}), "
        f"role configs in {settings.state_dir / 'conf'}"
    )


@broker_group.command("preload")
@click.pass_context
def broker_preload(ctx: click.Context) -> None:
    """Load the Lua scripts the roles may run (EVALSHA only) into a running broker, as admin.

    `broker start` does this itself. A broker started another way (the Kubernetes StatefulSet)
    needs it after every (re)start: Redis forgets scripts when it stops. Run it with the admin
    role's config (HPC2EDGE_CONFIG or --config naming role "admin"), from a machine with the same
    kombu and redis-py versions as the sites.
    """
    from hpc2edge.ops import localbroker
    from hpc2edge.transport import broker

    settings = command_settings(ctx)
    if settings.role != ADMIN:
        raise click.UsageError(f"preload needs the admin role's config, not {settings.role!r}")
    with broker.client(settings) as c:
        loaded = localbroker.preload_scripts(c)
    for name, sha in loaded.items():
        click.echo(f"loaded {name}: {sha}")


@broker_group.command("acl")
@click.option(
    "--secrets",
    "secrets_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder of <user>.password files; missing ones are created (random, 0600).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the rendered users.acl (0600).",
)
def broker_acl(secrets_dir: Path, out: Path) -> None:
    """Render broker/users.acl with each user's password hash, for a remote broker.

    The file holds only SHA-256 hashes; the password files go to the sites that need them. It
    has a user for every active device of SECRETS/devices.json (`tls add-device`), and none for
    a revoked one.
    """
    from hpc2edge.ops import localbroker
    from hpc2edge.pki import devices

    passwords = localbroker.ensure_secrets(secrets_dir)
    logins = devices.logins(secrets_dir)
    localbroker.write_acl(out, passwords, device_logins=logins)
    users = [*ROLES, *(login.user for login in logins)]
    click.echo(f"wrote {out} for users {', '.join(users)}; passwords in {secrets_dir}")


@broker_group.command("sync-devices")
@click.option(
    "--secrets",
    "secrets_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder holding devices.json (default: the config's secrets folder).",
)
@click.pass_context
def broker_sync_devices(ctx: click.Context, secrets_dir: Path | None) -> None:
    """Apply the device registry to the running broker, as admin: create every active device's
    user, remove every revoked one (and close its connections).

    `tls add-device` and `tls revoke-device` do this for one device; run this when they could
    not reach the broker. Also rewrites the local broker's rendered ACL file.
    """
    from hpc2edge import config
    from hpc2edge.errors import BrokerError
    from hpc2edge.ops import localbroker
    from hpc2edge.pki import devices

    settings = command_settings(ctx)
    folder = secrets_dir or config.secrets_dir(settings)
    registry = devices.load(folder)
    active = [d.user for d in registry.active()]
    revoked = [d.user for d in registry.devices if d.user not in active]
    sync = localbroker.sync_devices(settings, folder, add=active, remove=revoked)
    if not sync.applied:
        raise BrokerError(f"the device registry {folder} was not applied: {sync.detail}")
    click.echo(
        f"broker: {len(active)} device user(s) set, {len(revoked)} removed "
        f"({sync.killed} open connection(s) closed), {sync.detail}"
    )


@broker_group.command("stop")
@_DIR_OPTION
@click.pass_context
def broker_stop(ctx: click.Context, state_dir: Path | None) -> None:
    """Stop the broker started from this state folder."""
    from hpc2edge.ops import localbroker

    settings = command_settings(ctx, state_dir=state_dir)
    if localbroker.stop(settings.state_dir):
        click.echo("broker stopped")
    else:
        click.echo("no broker of this state folder was running")
