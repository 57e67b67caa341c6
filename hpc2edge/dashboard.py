"""``hpc2edge dashboard``: optuna-dashboard on the study storage, in the foreground.

optuna-dashboard (0.21, in the ``monitor`` extra) has no authentication of its own: whoever
reaches its port reads every study and can edit notes, delete studies and trials. So its app is
served here behind :class:`GuardedApp`, a small WSGI middleware that answers before
optuna-dashboard sees the request:

- **HTTP basic auth**, like Flower (:mod:`hpc2edge.monitor`): user ``admin`` (``--user``), a
  random password created on first use in ``<secrets>/dashboard.password`` (0600, beside the
  role passwords), never printed nor logged; compared with :func:`hmac.compare_digest`.
  Missing or wrong credentials: 401 with ``WWW-Authenticate``.
- **a Host header check** against DNS rebinding (a web page on another site making the browser
  talk to 127.0.0.1 under its own name): only the address it listens on with its port, plus
  ``localhost`` / ``127.0.0.1`` / ``[::1]`` with that port when it listens on loopback or on all
  interfaces (then also this host's names), and any ``--allow-host NAME`` (a name behind a proxy
  or tunnel). Anything else, or no Host header: 400.

Basic auth sends the password in clear: it still binds 127.0.0.1 unless told otherwise, a
non-loopback ``--host`` prints a warning, and the way in from another machine is ``ssh -L``. It
runs in this process (not ``optuna-dashboard URL``), so a storage password never appears on a
command line (``ps``) nor in what is printed (:func:`mask_url`).

The study storage is the one ``hpc2edge search`` uses: ``--storage``, else ``search.storage`` of
the config, else the SQLite file under the state dir. A SQLite file that does not exist is an
error here, not an empty database created on the spot; :func:`open_storage` is shared with
``hpc2edge report``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from hpc2edge import cli_settings
from hpc2edge.config import MASK, Settings, mask_url, secrets_dir, study_storage_url
from hpc2edge.errors import Hpc2EdgeError
from hpc2edge.fsutil import ensure_password_file
from hpc2edge.monitor import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_USER = "admin"
PASSWORD_FILE = "dashboard.password"  # noqa: S105 - a file name, not a secret
REALM = "hpc2edge dashboard"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::")


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


def password_path(settings: Settings) -> Path:
    """Where the dashboard's basic-auth password lives: the secrets folder of these settings."""
    return secrets_dir(settings) / PASSWORD_FILE


def ensure_password(path: Path) -> str:
    """The dashboard's password in ``path``, created (random, 0600) when missing.

    Raises:
        StudyStorageError: the file is missing and cannot be written, or it is empty.
    """
    try:
        password = ensure_password_file(path)
    except OSError as exc:
        raise StudyStorageError(
            f"cannot create the dashboard's password file {path}: {exc.strerror}; write one "
            "there (one line, chmod 600)"
        ) from None
    if not password:
        raise StudyStorageError(f"the dashboard's password file {path} is empty")
    return password


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values (lower case) a dashboard listening on ``host:port`` accepts.

    The listening address with the port; with a loopback or wildcard address also
    ``localhost`` / ``127.0.0.1`` / ``[::1]``; with a wildcard address also this host's names;
    ``extra`` names as given (with ``:port`` added when they have none). Port 80 may be left
    out, as browsers do.
    """
    names = {_bracketed(host)} if host not in WILDCARDS else set()
    if host in WILDCARDS or is_loopback(host.strip("[]")):
        names.update(LOOPBACK_NAMES)
    if host in WILDCARDS:
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.add(name)
    out: set[str] = set()
    for name in names:
        out.add(f"{name}:{port}".lower())
        if port == 80:
            out.add(name.lower())
    for name in extra:
        name = name.strip().lower()
        if not name:
            continue
        if _has_port(name):
            out.add(name)
        else:
            out.add(f"{_bracketed(name)}:{port}")
            if port == 80:
                out.add(_bracketed(name))
    return frozenset(out)


def _has_port(name: str) -> bool:
    if name.startswith("["):
        return "]:" in name
    if name.count(":") == 1:
        return True
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return False


StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class GuardedApp:
    """WSGI middleware: a Host header check, then HTTP basic auth, then ``app``.

    Requests that fail either check get an answer from here (400, 401) and never reach ``app``.
    """

    def __init__(self, app: WSGIApp, *, user: str, password: str, hosts: Iterable[str]) -> None:
        if not user or ":" in user:
            raise ValueError(f"dashboard user name {user!r}: must be non-empty, without ':'")
        if not password:
            raise ValueError("the dashboard password is empty")
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)
        self._user = user.encode()
        self._password = password.encode()

    def __repr__(self) -> str:
        return f"GuardedApp(user={self._user.decode()!r}, hosts={sorted(self.hosts)!r})"

    def host_ok(self, environ: dict[str, Any]) -> bool:
        host = environ.get("HTTP_HOST")
        return isinstance(host, str) and host.strip().lower() in self.hosts

    def authorized(self, environ: dict[str, Any]) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = raw.partition(b":")
        if not sep:
            return False
        # Both comparisons always run: the time taken tells nothing about which part was wrong.
        good_user = hmac.compare_digest(user, self._user)
        good_password = hmac.compare_digest(password, self._password)
        return good_user and good_password

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.host_ok(environ):
            return _answer(start_response, "400 Bad Request", b"unexpected Host header\n")
        if not self.authorized(environ):
            return _answer(
                start_response,
                "401 Unauthorized",
                b"authentication required\n",
                [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')],
            )
        return self.app(environ, start_response)


def _answer(
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the dashboard polls every few seconds: one line per request is noise


def make_dashboard_server(
    storage: Any,
    host: str,
    port: int,
    *,
    user: str = DEFAULT_USER,
    password: str,
    extra_hosts: Iterable[str] = (),
) -> WSGIServer:
    """A threaded WSGI server of optuna-dashboard's app behind :class:`GuardedApp` on
    ``host:port`` (bound, not serving). ``port`` 0 picks a free port: the check of the Host
    header uses the port actually bound.

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

    guarded = GuardedApp(wsgi(storage), user=user, password=password, hosts=())
    try:
        server = make_server(host, port, guarded, server_class=Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise StudyStorageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    guarded.hosts = allowed_hosts(host, server.server_address[1], extra_hosts)
    return server


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
    settings = cli_settings.settings(ctx)
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
        f"optuna-dashboard on {_url(host, port)} for {mask_url(url)} "
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


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_USER",
    "PASSWORD_FILE",
    "GuardedApp",
    "StudyStorageError",
    "allowed_hosts",
    "dashboard_cmd",
    "ensure_password",
    "make_dashboard_server",
    "open_storage",
    "password_path",
]
