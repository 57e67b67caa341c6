"""``hpc2edge dashboard``: optuna-dashboard on the study storage, in the foreground.

optuna-dashboard (0.21, in the ``monitor`` extra) has no authentication of its own: whoever
reaches its port reads every study and can edit notes, delete studies and trials. So its app is
served here behind :class:`GuardedApp`, a small WSGI middleware that answers before
optuna-dashboard sees the request:

- **HTTP basic auth**, like Flower (:mod:`hpc2edge.ops.flower`): user ``admin`` (``--user``), a
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
command line (``ps``) nor in what is printed (:func:`~hpc2edge.config.mask_url`).

The study storage is the one ``hpc2edge search`` uses: ``--storage``, else ``search.storage`` of
the config, else the SQLite file under the state dir. A SQLite file that does not exist is an
error here, not an empty database created on the spot
(:func:`~hpc2edge.search.storage.open_storage`, which ``hpc2edge report`` uses too).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpc2edge.config import Settings, secrets_dir
from hpc2edge.errors import StackError
from hpc2edge.util import files
from hpc2edge.util.net import browser_url, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_USER = "admin"
PASSWORD_FILE = "dashboard.password"  # noqa: S105 - a file name, not a secret
REALM = "hpc2edge dashboard"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::")


def password_path(settings: Settings) -> Path:
    """Where the dashboard's basic-auth password lives: the secrets folder of these settings."""
    return secrets_dir(settings) / PASSWORD_FILE


def ensure_password(path: Path) -> str:
    """The dashboard's password in ``path``, created (random, 0600) when missing.

    Raises:
        StackError: the file is missing and cannot be written, or it is empty.
    """
    return files.ensure_password(path, what="the dashboard's")


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
        StackError: the address cannot be bound (in use, not an address of this host).
    """
    from socketserver import ThreadingMixIn

    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise StackError(
            "optuna-dashboard is not installed: pip install 'hpc2edge[monitor]'"
        ) from None

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    guarded = GuardedApp(wsgi(storage), user=user, password=password, hosts=())
    try:
        server = make_server(host, port, guarded, server_class=Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise StackError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    guarded.hosts = allowed_hosts(host, server.server_address[1], extra_hosts)
    return server


def dashboard_url(host: str, port: int) -> str:
    """The dashboard's address for a browser on this machine."""
    return browser_url(host, port, default=DEFAULT_HOST) + "/"


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_USER",
    "PASSWORD_FILE",
    "GuardedApp",
    "allowed_hosts",
    "dashboard_url",
    "ensure_password",
    "make_dashboard_server",
    "password_path",
]
