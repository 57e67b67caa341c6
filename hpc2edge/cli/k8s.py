"""The ``hpc2edge k8s`` commands: the Secrets the ``k8s/`` manifests mount."""

from __future__ import annotations

from pathlib import Path

import click

from hpc2edge.ops.k8s import (
    BROKER_SERVICE,
    DEFAULT_NAMESPACE,
    InputError,
    check_namespace,
    ensure_passwords,
    render,
    secret_data,
    server_names,
)
from hpc2edge.transport.flowerguard import DEFAULT_USER


class _UsageProblem(click.ClickException):
    """Bad input files or options: one clear message, exit code 2 (as click's usage errors)."""

    exit_code = 2


@click.group("k8s")
def k8s_group() -> None:
    """Kubernetes deployment of the broker and Flower (k8s/)."""


@k8s_group.command("secrets")
@click.option(
    "--dir",
    "tls_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The folder `hpc2edge tls init` wrote.",
)
@click.option(
    "--secrets",
    "secrets_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of <user>.password and flower.password (default: `secrets` beside --dir).",
)
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True)
@click.option(
    "--flower-user", default=DEFAULT_USER, show_default=True, help="Flower's basic-auth user."
)
@click.option(
    "--create-passwords",
    is_flag=True,
    help="Create missing password files (random, 0600) in --secrets instead of failing.",
)
def k8s_secrets(
    tls_dir: Path,
    secrets_dir: Path | None,
    namespace: str,
    flower_user: str,
    create_passwords: bool,
) -> None:
    """Print the Secrets the k8s/ manifests mount, for `kubectl apply -f -`.

    Carries ca.pem, the broker's certificate and key, the rendered users.acl (password hashes),
    the monitor role's client files and Flower's basic-auth credentials. Writes nothing, but
    --create-passwords creates the missing password files.
    """
    secrets_dir = secrets_dir if secrets_dir is not None else tls_dir.parent / "secrets"
    try:
        check_namespace(namespace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--namespace'") from None
    if create_passwords:
        if not tls_dir.is_dir():
            raise _UsageProblem(f"{tls_dir} is not a folder: run `hpc2edge tls init` first")
        for path in ensure_passwords(secrets_dir):
            click.echo(f"created {path} (0600)", err=True)
    try:
        data = secret_data(tls_dir, secrets_dir, flower_user=flower_user)
        text = render(data, namespace)
        names = server_names(tls_dir)
    except InputError as exc:
        raise _UsageProblem("\n  ".join(["cannot build the Secrets:", *exc.problems])) from None
    except ValueError as exc:
        raise _UsageProblem(str(exc)) from None
    if BROKER_SERVICE not in names:
        click.echo(
            f"warning: {tls_dir / 'server.pem'} does not name {BROKER_SERVICE}, the Service "
            f"Flower connects to; rerun `hpc2edge tls init --force --host {BROKER_SERVICE} ...`",
            err=True,
        )
    click.echo(text, nl=False)
