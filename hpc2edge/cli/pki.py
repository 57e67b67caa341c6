"""The ``hpc2edge tls`` commands: the private CA, role and device certificates (the admin's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from hpc2edge.cli.context import command_settings


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


@tls_group.command("add-device")
@click.argument("name")
@_CA_DIR_OPTION
@click.option("--force", is_flag=True, help="Replace an existing certificate of that name.")
@click.pass_context
def tls_add_device(ctx: click.Context, name: str, directory: Path | None, force: bool) -> None:
    """Issue another edge certificate (edge-NAME.pem) for a new device."""
    from hpc2edge.pki import ca

    target = directory or command_settings(ctx).tls.ca_cert.parent
    try:
        issued = ca.add_device(target, name, force=force)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    click.echo(f"edge device {name}: {issued.cert} (key {issued.key.name}, 0600)")
    signing = ca.signing_files(target, f"edge-{name}")
    click.echo(
        f"signing: {signing.cert} (key {signing.key.name}, 0600); added to "
        f"{ca.signers_dir(target, 'results')}/: copy it to the orchestrator and the workers"
    )
