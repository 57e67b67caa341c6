"""The ``hpc2edge tls`` commands: the private CA, role certificates and device identities
(the admin's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from hpc2edge.cli.context import command_settings
from hpc2edge.config import Settings
from hpc2edge.roles import DEFAULT_KIND


@click.group("tls")
def tls_group() -> None:
    """Create the private CA and the role certificates."""


def _echo_signers(target: Path) -> None:
    from hpc2edge.pki import ca

    click.echo(f"task signers (workers trust): {ca.signers_dir(target, 'tasks')}/")
    click.echo(f"result signers (all trust): {ca.signers_dir(target, 'results')}/")


@tls_group.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write (default: <state_dir>/tls).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Extra DNS name or IP of the broker (repeatable); localhost is always in.",
)
@click.option("--force", is_flag=True, help="Replace existing certificates and keys.")
@click.pass_context
def tls_init(ctx: click.Context, directory: Path | None, hosts: Sequence[str], force: bool) -> None:
    """Create a CA, the broker certificate, one client certificate per role and the
    message-signing certificates (RSA) with the signers/ folders."""
    from hpc2edge.pki import ca

    target = directory or command_settings(ctx).tls.ca_cert.parent
    issued = ca.init(target, hosts, force=force)
    for name, item in issued.items():
        click.echo(f"{name:>17}: {item.cert}  (key {item.key.name}, 0600)")
    click.echo(f"broker SANs: {', '.join(ca.server_names(hosts))}")
    _echo_signers(target)


_CA_DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder holding the CA (default: <state_dir>/tls).",
)


@tls_group.command("init-signing")
@_CA_DIR_OPTION
@click.option("--force", is_flag=True, help="Replace the signing certificates and signers/.")
@click.pass_context
def tls_init_signing(ctx: click.Context, directory: Path | None, force: bool) -> None:
    """Issue the message-signing certificates from an existing CA (made before signing existed)."""
    from hpc2edge.pki import ca

    target = directory or command_settings(ctx).tls.ca_cert.parent
    for name, item in ca.init_signing(target, force=force).items():
        click.echo(f"{name:>17}: {item.cert}  (key {item.key.name}, 0600)")
    _echo_signers(target)


class _BadInput(click.ClickException):
    """A bad name or kind: one clear line, exit code 2 (as click's usage errors), nothing
    written."""

    exit_code = 2


_SECRETS_OPTION = click.option(
    "--secrets",
    "secrets_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder of the broker's password files and devices.json (default: the "
    "config's, or `secrets` beside --dir).",
)


def _device_folders(
    settings: Settings, directory: Path | None, secrets_dir: Path | None
) -> tuple[Path, Path]:
    """(CA folder, secrets folder) of a device command: the options, else the settings' (the
    layout `broker start` renders the device users from), and with --dir alone the `secrets`
    folder beside it, as `k8s secrets` assumes."""
    from hpc2edge import config

    ca_dir = directory or settings.tls.ca_cert.parent
    if secrets_dir is not None:
        return ca_dir, secrets_dir
    return ca_dir, (ca_dir.parent / "secrets" if directory else config.secrets_dir(settings))


def _check_names(name: str, kind: str | None = None) -> None:
    from hpc2edge.pki import ca
    from hpc2edge.roles import check_kind

    try:
        ca.check_device_name(name)
        if kind is not None:
            check_kind(kind)
    except ValueError as exc:
        raise _BadInput(str(exc)) from None


def _k8s_hint(ca_dir: Path, secrets_dir: Path) -> str:
    return (
        "a broker run from k8s/ keeps this across Pod restarts once its Secrets are applied "
        f"again: `hpc2edge k8s secrets --dir {ca_dir} --secrets {secrets_dir} | kubectl apply "
        "-f -`"
    )


@tls_group.command("add-device")
@click.argument("name")
@click.option(
    "--kind",
    default=DEFAULT_KIND,
    show_default=True,
    help="The device kind: its queue is edge (default) or edge.KIND.",
)
@_CA_DIR_OPTION
@_SECRETS_OPTION
@click.option(
    "--write-config",
    "config_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the device's config file (TOML, no secret inside) here.",
)
@click.option(
    "--force", is_flag=True, help="Re-issue an existing device: new certificate and password."
)
@click.pass_context
def tls_add_device(
    ctx: click.Context,
    name: str,
    kind: str,
    directory: Path | None,
    secrets_dir: Path | None,
    config_out: Path | None,
    force: bool,
) -> None:
    """Issue an edge device's identity: certificate, own broker user edge-NAME, password.

    The device gets its TLS and signing certificates (edge-NAME.pem, edge-NAME-sign.pem, the
    latter added to signers/results/), its own Redis ACL user edge-NAME with the edge role's
    commands but only its kind's queue, results, unacked, dead-letter and liveness keys, a fresh
    random password (SECRETS/edge-NAME.password, 0600) and an entry in SECRETS/devices.json.
    `broker start`, `broker acl` and `k8s secrets` render the user from that registry; a broker
    that is running and reachable as admin with this config gets it at once (ACL SETUSER).
    Prints what to copy to the device and its config file.
    """
    from hpc2edge.ops import localbroker
    from hpc2edge.pki import ca, devices
    from hpc2edge.roles import edge_queue

    _check_names(name, kind)
    settings = command_settings(ctx)
    ca_dir, secrets = _device_folders(settings, directory, secrets_dir)
    issued = devices.issue(ca_dir, secrets, name, kind, force=force)
    device = issued.device
    click.echo(f"device {name} (kind {kind}, queue {edge_queue(kind)}): broker user {device.user}")
    click.echo(f"  certificate: {issued.tls.cert} (key {issued.tls.key.name}, 0600)")
    click.echo(
        f"  signing: {issued.signing.cert} (key {issued.signing.key.name}, 0600); added to "
        f"{ca.signers_dir(ca_dir, 'results')}/: copy it to the orchestrator and the workers"
    )
    click.echo(f"  password: {issued.password_file} (0600, new)")
    click.echo(f"  registry: {devices.registry_path(secrets)}")
    sync = localbroker.sync_devices(settings, secrets, add=[device.user])
    if sync.applied:
        click.echo(f"broker: user {device.user} {sync.detail} (ACL SETUSER)")
    else:
        click.echo(
            f"broker: not applied now ({sync.detail}); `hpc2edge broker start` creates the "
            "user from the registry, `hpc2edge broker sync-devices` applies it to a running broker"
        )
    click.echo(f"  {_k8s_hint(ca_dir, secrets)}")
    tls_files = [ca_dir / "ca.pem", issued.tls.cert, issued.tls.key, issued.signing.cert]
    tls_files += [issued.signing.key, ca_dir / ca.SIGNERS_DIR]
    click.echo(f"copy to the device's tls/: {', '.join(str(p) for p in tls_files)}/")
    click.echo(f"copy to the device's secrets/: {issued.password_file}")
    click.echo("and beside those two folders, its config file:")
    text = devices.device_config(
        device, broker_host=settings.broker.host, broker_port=settings.broker.port
    )
    click.echo(text, nl=False)
    if config_out is not None:
        config_out.parent.mkdir(parents=True, exist_ok=True)
        config_out.write_text(text)
        click.echo(f"wrote {config_out}")


@tls_group.command("revoke-device")
@click.argument("name")
@_CA_DIR_OPTION
@_SECRETS_OPTION
@click.pass_context
def tls_revoke_device(
    ctx: click.Context, name: str, directory: Path | None, secrets_dir: Path | None
) -> None:
    """Revoke an edge device: its broker user, open connections and result signatures.

    Marks the device revoked in SECRETS/devices.json and deletes its password file; removes its
    user from the running broker (ACL SETUSER reset, CLIENT KILL USER, ACL DELUSER, as admin
    with this config) and from the local broker's rendered ACL, so a restart keeps it out; takes
    its certificate out of signers/results/. Its TLS certificate stays valid for the handshake
    (Redis 7.0 cannot map a certificate to a user): the user and password are what is revoked.
    Exits 2 for an unknown NAME, 1 when the broker could not be reached (the registry is updated
    all the same; the message says what to run). Revoking again re-applies it to the broker.
    """
    from hpc2edge.errors import BrokerError
    from hpc2edge.ops import localbroker
    from hpc2edge.pki import devices

    _check_names(name)
    settings = command_settings(ctx)
    ca_dir, secrets = _device_folders(settings, directory, secrets_dir)
    try:
        revocation = devices.revoke(ca_dir, secrets, name)
    except ValueError as exc:
        raise _BadInput(str(exc)) from None
    device = revocation.device
    when = revocation.revoked_at.isoformat()
    if revocation.already:
        click.echo(f"device {name} is already revoked (since {when}); applying it again")
    else:
        click.echo(f"device {name} revoked at {when} in {devices.registry_path(secrets)}")
    if revocation.untrusted is not None:
        click.echo(
            f"  removed {revocation.untrusted}: the orchestrator and the workers re-read "
            "signers/results/ only when they start: copy the folder to them and restart them"
        )
    sync = localbroker.sync_devices(settings, secrets, remove=[device.user])
    if sync.acl_file is not None:
        click.echo(f"  rewrote {sync.acl_file}: a broker restart keeps {device.user} out")
    click.echo(f"  {_k8s_hint(ca_dir, secrets)}")
    if not sync.applied:
        raise BrokerError(
            f"{device.user} was not removed from a running broker ({sync.detail}). The "
            "registry is updated, so `hpc2edge broker start` leaves the user out; for a broker "
            f"that is running, run `hpc2edge tls revoke-device {name}` again once it is "
            "reachable as admin (or `hpc2edge broker sync-devices`)"
        )
    click.echo(
        f"broker: user {device.user} removed, {sync.killed} open connection(s) closed "
        f"({sync.detail})"
    )
