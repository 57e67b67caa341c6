"""The ``hpc2edge`` command.

Entry point only: it reads the environment, loads settings, calls library functions and turns
hpc2edge errors into one line on stderr with a non-zero exit (2 for configuration errors) rather
than a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from hpc2edge import __version__, cli_settings, filemodes
from hpc2edge.config import render_masked
from hpc2edge.errors import Hpc2EdgeError

_settings = cli_settings.settings


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $HPC2EDGE_CONFIG, else built-in "
    "defaults for the local stack under .hpc2edge/).",
)
@click.version_option(__version__, prog_name="hpc2edge")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """hpc2edge: neural architecture search on HPC with the edge device in the loop.

    Quick start on one machine: `hpc2edge up`, `hpc2edge ping --queue edge`, `hpc2edge down`.
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


# --- config -----------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Show or check the effective configuration."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective configuration as TOML, secrets masked."""
    click.echo(render_masked(_settings(ctx)), nl=False)


@config_group.command("check")
@click.option("--connect", is_flag=True, help="Also log in to the broker with these settings.")
@click.pass_context
def config_check(ctx: click.Context, connect: bool) -> None:
    """Validate the configuration and the files it names (certificates, key, password)."""
    settings = _settings(ctx, require_files=True)
    click.echo(
        f"ok: {settings.source} is valid (role {settings.role}, "
        f"broker {settings.broker.host}:{settings.broker.port})"
    )
    if connect:
        from hpc2edge import broker

        with broker.client(settings) as c:
            click.echo(f"ok: logged in as {settings.username!r} over {broker.tls_version(c)}")


# --- tls --------------------------------------------------------------------------------------


@cli.group("tls")
def tls_group() -> None:
    """Create the private CA and the role certificates."""


def _echo_signers(target: Path) -> None:
    from hpc2edge import tls

    click.echo(f"task signers (workers trust): {tls.signers_dir(target, 'tasks')}/")
    click.echo(f"result signers (all trust): {tls.signers_dir(target, 'results')}/")


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
    from hpc2edge import tls

    target = directory or _settings(ctx).tls.ca_cert.parent
    issued = tls.init(target, hosts, force=force)
    for name, item in issued.items():
        click.echo(f"{name:>17}: {item.cert}  (key {item.key.name}, 0600)")
    click.echo(f"broker SANs: {', '.join(tls.server_names(hosts))}")
    _echo_signers(target)


@tls_group.command("init-signing")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder holding the CA (default: <state_dir>/tls).",
)
@click.option("--force", is_flag=True, help="Replace the signing certificates and signers/.")
@click.pass_context
def tls_init_signing(ctx: click.Context, directory: Path | None, force: bool) -> None:
    """Issue the message-signing certificates from an existing CA (made before signing existed)."""
    from hpc2edge import tls

    target = directory or _settings(ctx).tls.ca_cert.parent
    for name, item in tls.init_signing(target, force=force).items():
        click.echo(f"{name:>17}: {item.cert}  (key {item.key.name}, 0600)")
    _echo_signers(target)


@tls_group.command("add-device")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder holding the CA (default: <state_dir>/tls).",
)
@click.option("--force", is_flag=True, help="Replace an existing certificate of that name.")
@click.pass_context
def tls_add_device(ctx: click.Context, name: str, directory: Path | None, force: bool) -> None:
    """Issue another edge certificate (edge-NAME.pem) for a new device."""
    from hpc2edge import tls

    target = directory or _settings(ctx).tls.ca_cert.parent
    try:
        issued = tls.add_device(target, name, force=force)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    click.echo(f"edge device {name}: {issued.cert} (key {issued.key.name}, 0600)")
    signing = tls.signing_files(target, f"edge-{name}")
    click.echo(
        f"signing: {signing.cert} (key {signing.key.name}, 0600); added to "
        f"{tls.signers_dir(target, 'results')}/: copy it to the orchestrator and the workers"
    )


# --- broker -----------------------------------------------------------------------------------

_DIR_OPTION = click.option(
    "--dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State folder holding tls/, secrets/ and broker/ (default: from the config, .hpc2edge).",
)


@cli.group("broker")
def broker_group() -> None:
    """Run a local TLS-only Redis broker (single-machine deployments)."""


@broker_group.command("start")
@_DIR_OPTION
@click.pass_context
def broker_start(ctx: click.Context, state_dir: Path | None) -> None:
    """Start redis-server with broker/redis.conf and broker/users.acl (TLS, ACL, AOF)."""
    from hpc2edge import broker, stack

    settings = stack.prepare(_settings(ctx, state_dir=state_dir))
    pid = broker.start(settings)
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
    from hpc2edge import broker

    settings = _settings(ctx)
    if settings.role != "admin":
        raise click.UsageError(f"preload needs the admin role's config, not {settings.role!r}")
    with broker.client(settings) as c:
        loaded = broker.preload_scripts(c)
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

    The file holds only SHA-256 hashes; the password files go to the sites that need them.
    """
    from hpc2edge import broker

    broker.write_acl(out, broker.ensure_secrets(secrets_dir))
    click.echo(f"wrote {out} for users {', '.join(broker.ACL_USERS)}; passwords in {secrets_dir}")


@broker_group.command("stop")
@_DIR_OPTION
@click.pass_context
def broker_stop(ctx: click.Context, state_dir: Path | None) -> None:
    """Stop the broker started from this state folder."""
    from hpc2edge import broker

    settings = _settings(ctx, state_dir=state_dir)
    if broker.stop(settings.state_dir):
        click.echo("broker stopped")
    else:
        click.echo("no broker of this state folder was running")


# --- local stack ------------------------------------------------------------------------------


@cli.command("up")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for each worker to answer.",
)
@click.option("--monitor", is_flag=True, help="Also start Flower (monitor role, basic auth).")
@click.option("--monitor-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.pass_context
def up_cmd(ctx: click.Context, timeout_s: float, monitor: bool, monitor_port: int) -> None:
    """Start broker, one train worker and one edge worker in the background."""
    from hpc2edge import stack

    result = stack.up(
        _settings(ctx), timeout_s=timeout_s, monitor_port=monitor_port if monitor else None
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


@cli.command("down")
@click.pass_context
def down_cmd(ctx: click.Context) -> None:
    """Stop exactly the processes `hpc2edge up` started."""
    from hpc2edge import stack

    stopped = stack.down(_settings(ctx))
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True)
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool, timeout_s: float) -> None:
    """Broker reachability and TLS version, workers per queue, queue depths.

    Exits 1 when the broker cannot be reached.
    """
    from dataclasses import asdict

    from hpc2edge import stack

    st = stack.status(_settings(ctx), timeout_s=timeout_s)
    if as_json:
        _print_json(asdict(st))
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
        for name, alive in st.local_processes.items():
            click.echo(f"local   {name:<12} {'running' if alive else 'not running'}")
        if st.monitor_url:
            click.echo(f"monitor {st.monitor_url}")
    if not st.reachable:
        raise click.exceptions.Exit(1)


@cli.command("dead-letters")
@click.option(
    "--queue",
    "queues",
    type=click.Choice(["edge", "train"]),
    multiple=True,
    help="Only this queue (repeatable; default: both).",
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
    from dataclasses import asdict

    from hpc2edge import broker
    from hpc2edge.celery import QUEUES
    from hpc2edge.transport import deadletters

    chosen = list(queues) or list(QUEUES)
    settings = _settings(ctx)
    with broker.client(settings) as c, broker.translate_errors("reading the dead letters"):
        records = deadletters.read(c, chosen, limit=limit)
        cleared = deadletters.clear(c, chosen) if clear else 0
    if as_json:
        _print_json([asdict(r) for r in records])
    elif not records:
        click.echo(f"no dead letters on {', '.join(chosen)}")
    for r in records if not as_json else []:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.time_unix_s))
        task = f"{r.task or '?'}[{r.task_id or '?'}]"
        line = f"{when}Z {r.queue:<5} {r.worker} {task} from {r.origin or '?'}: {r.reason}"
        click.echo(deadletters.printable(line))  # stored records are written by workers
    if clear and not as_json:
        click.echo(f"cleared {cleared} record(s)")


@cli.command("ping")
@click.option("--queue", type=click.Choice(["edge", "train"]), required=True)
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the worker's whole answer.")
@click.pass_context
def ping_cmd(ctx: click.Context, queue: str, timeout_s: float, as_json: bool) -> None:
    """Send hpc2edge.ping through the broker to a worker of QUEUE and print who answered."""
    from hpc2edge import stack

    answer = stack.ping(_settings(ctx), queue, timeout_s=timeout_s)
    if as_json:
        _print_json(answer)
        return
    v = answer["versions"]
    click.echo(
        f"{queue}: {answer['hostname']} (queue {answer['queue']}) answered in "
        f"{answer['round_trip_ms']:.1f} ms; python {v['python']}, celery {v['celery']}, "
        f"hpc2edge {v['hpc2edge']}"
    )


def _register_lazy_commands() -> None:
    # Commands of other subsystems live beside their code; their modules import nothing heavy.
    from hpc2edge.dashboard import dashboard_cmd
    from hpc2edge.data.cli import data_group
    from hpc2edge.k8s import k8s_group
    from hpc2edge.latency.cli import measure_cmd
    from hpc2edge.monitor import monitor_cmd
    from hpc2edge.report import report_cmd
    from hpc2edge.search.cli import demo_cmd, search_cmd
    from hpc2edge.space.cli import export_cmd, space_group
    from hpc2edge.training.cli import train_cmd

    cli.add_command(data_group)
    cli.add_command(measure_cmd)
    cli.add_command(space_group)
    cli.add_command(export_cmd)
    cli.add_command(train_cmd)
    cli.add_command(k8s_group)
    cli.add_command(monitor_cmd)
    cli.add_command(search_cmd)
    cli.add_command(demo_cmd)
    cli.add_command(report_cmd)
    cli.add_command(dashboard_cmd)


_register_lazy_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    It runs with umask 0o077 (restored on return, for callers in the same process): whatever
    it writes under the state folder, and whatever the processes it starts write, is private
    to its owner (:mod:`hpc2edge.filemodes`).
    """
    old_umask = filemodes.private_umask()
    try:
        return _main(argv)
    finally:
        os.umask(old_umask)


def _main(argv: Sequence[str] | None) -> int:
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="hpc2edge",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except Hpc2EdgeError as exc:
        click.echo(f"hpc2edge: error: {exc}", err=True)
        return exc.exit_code
    # Without standalone mode click returns a raised Exit's code instead of raising it.
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
