"""``hpc2edge dashboard``: optuna-dashboard on the study storage, in the foreground.

optuna-dashboard (0.21, in the ``monitor`` extra) has **no authentication**: whoever reaches its
port reads every study and can edit notes, delete studies and trials. So it binds 127.0.0.1
unless told otherwise, a non-loopback ``--host`` prints a warning, and the way in from another
machine is ``ssh -L``. It runs in this process (not ``optuna-dashboard URL``), so a storage
password never appears on a command line (``ps``) nor in what is printed (:func:`mask_url`).

The study storage is the one ``hpc2edge search`` uses: ``--storage``, else ``search.storage`` of
the config, else the SQLite file under the state dir. A SQLite file that does not exist is an
error here, not an empty database created on the spot; :func:`open_storage` is shared with
``hpc2edge report``.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from hpc2edge import cli_settings
from hpc2edge.config import MASK, mask_url, study_storage_url
from hpc2edge.errors import Hpc2EdgeError
from hpc2edge.monitor import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class StudyStorageError(Hpc2EdgeError):
    """The study storage does not exist or cannot be opened."""


def _masked(text: str, url: str) -> str:
    """``text`` with the password of ``url`` masked wherever it appears."""
    text = mask_url(text)
    rest = url.split("://", 1)[-1].split("@", 1)
    if len(rest) == 2 and ":" in rest[0]:
        password = rest[0].split(":", 1)[1]
        if password:
            text = text.replace(password, MASK)
    return text


def open_storage(url: str) -> Any:
    """An Optuna RDB storage at ``url`` that must already exist (SQLite: the file).

    Raises:
        StudyStorageError: no such SQLite file, or the database cannot be opened (the message
            carries the URL with its password masked).
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise StudyStorageError(
                f"no study storage at {path}: run `hpc2edge search` (or `demo`) first, or give "
                "--storage URL"
            )
    try:
        from hpc2edge.search.study import storage
    except ImportError as exc:
        raise StudyStorageError(
            f"optuna is not installed ({exc.name}): pip install 'hpc2edge[search]'"
        ) from None
    try:
        return storage(url)
    except Exception as exc:  # SQLAlchemy, a missing driver, a refused connection ...
        reason = _masked(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
        raise StudyStorageError(
            f"cannot open the study storage {mask_url(url)}: {reason}"
        ) from None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the dashboard polls every few seconds: one line per request is noise


def make_dashboard_server(storage: Any, host: str, port: int) -> WSGIServer:
    """A threaded WSGI server of optuna-dashboard's app on ``host:port`` (bound, not serving).

    Raises:
        StudyStorageError: the address cannot be bound (in use, not an address of this host).
    """
    from socketserver import ThreadingMixIn

    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise StudyStorageError(
            "optuna-dashboard is not installed: pip install 'hpc2edge[monitor]'"
        ) from None

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        return make_server(
            host, port, wsgi(storage), server_class=Server, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise StudyStorageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": DEFAULT_HOST}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


@click.command("dashboard")
@click.option(
    "--storage",
    "url",
    default=None,
    help="Optuna storage URL (default: search.storage, else .hpc2edge/search.db).",
)
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Interface to listen on. optuna-dashboard has no login: keep loopback and use `ssh -L`.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.pass_context
def dashboard_cmd(ctx: click.Context, url: str | None, host: str, port: int) -> None:
    """Run optuna-dashboard on the study storage in the foreground (Ctrl-C stops it).

    It has no authentication: anyone who reaches the port can read and edit the studies. From
    another machine: `ssh -N -L 8080:127.0.0.1:8080 user@this-host`, then open
    http://localhost:8080.
    """
    settings = cli_settings.settings(ctx)
    url = study_storage_url(settings, url)
    storage = open_storage(url)
    names = [s.study_name for s in storage.get_all_studies()]
    server = make_dashboard_server(storage, host, port)
    click.echo(
        f"optuna-dashboard on {_url(host, port)} for {mask_url(url)} "
        f"({len(names)} {'study' if len(names) == 1 else 'studies'}); Ctrl-C stops it"
    )
    if not is_loopback(host):
        click.echo(
            f"WARNING: listening on {host}: optuna-dashboard has NO authentication; anyone who "
            "reaches this port can read, edit and delete the studies. Bind 127.0.0.1 and use "
            f"`ssh -N -L {port}:127.0.0.1:{port} user@this-host` instead, or put an "
            "authenticating proxy in front.",
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


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "StudyStorageError",
    "dashboard_cmd",
    "make_dashboard_server",
    "open_storage",
]
