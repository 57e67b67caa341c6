"""``hpc2edge dashboard`` behind basic auth and a Host header check, on a real server.

The dashboard runs as users run it (``python -m hpc2edge.cli dashboard``) on a real SQLite
study; requests go over real HTTP. Issue 13: an unauthenticated ``DELETE`` removed a study, and a
foreign ``Host`` header (DNS rebinding) was served.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_dashboard")

from hpc2edge.ops.dashboard import GuardedApp, allowed_hosts  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.util.net import free_port  # noqa: E402

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
STUDY = "guarded"


@dataclass
class Running:
    port: int
    password: str
    password_file: Path
    url: str
    out: list[str]

    def request(
        self,
        method: str,
        path: str,
        *,
        auth: tuple[str, str] | None = None,
        host: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Host": f"127.0.0.1:{self.port}" if host is None else host}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            conn.request(method, path, headers=headers)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/meta", headers={"Host": f"127.0.0.1:{port}"})
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    st.quiet_optuna()
    tmp = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{tmp / 'search.db'}"
    study = optuna.create_study(study_name=STUDY, storage=st.storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    state = tmp / "state"
    env = {**os.environ, "HPC2EDGE_STATE_DIR": str(state), "PYTHONPATH": str(REPO)}
    env.pop("HPC2EDGE_CONFIG", None)
    argv = [sys.executable, "-m", "hpc2edge.cli", "dashboard", "--storage", url]
    proc = subprocess.Popen(
        [*argv, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
    )
    out: list[str] = []
    try:
        _wait_listening(port, proc)
        password_file = state / "secrets" / "dashboard.password"
        yield Running(port, password_file.read_text().strip(), password_file, url, out)
    finally:
        proc.terminate()
        try:
            out.extend(proc.communicate(timeout=60))
        except subprocess.TimeoutExpired:
            proc.kill()
            out.extend(proc.communicate())


def _study_ids(d: Running) -> list[int]:
    status, _, body = d.request("GET", "/api/studies", auth=("admin", d.password))
    assert status == 200, body
    return [s["study_id"] for s in json.loads(body)["study_summaries"]]


def test_the_password_file_is_private_and_random(dashboard: Running) -> None:
    assert stat.S_IMODE(dashboard.password_file.stat().st_mode) == 0o600
    assert len(dashboard.password) >= 32


def test_no_credentials_is_401_with_a_challenge(dashboard: Running) -> None:
    for path in ("/", "/dashboard", "/api/studies", "/api/meta"):
        status, headers, body = dashboard.request("GET", path)
        assert status == 401, path
        assert headers["www-authenticate"].startswith("Basic realm=")
        assert b"study_summaries" not in body and STUDY.encode() not in body


def test_a_wrong_password_or_user_is_401(dashboard: Running) -> None:
    for auth in [
        ("admin", "wrong"),
        ("admin", dashboard.password + "x"),
        ("admin", dashboard.password[:-1]),
        ("root", dashboard.password),
        ("admin", ""),
    ]:
        status, headers, _ = dashboard.request("GET", "/api/studies", auth=auth)
        assert status == 401, auth
        assert "www-authenticate" in headers
    # Not basic auth at all, or not base64.
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    for value in ("Bearer abc", "Basic !!!", f"Basic {base64.b64encode(b'nocolon').decode()}"):
        conn.request("GET", "/api/studies", headers={"Authorization": value})
        r = conn.getresponse()
        r.read()
        assert r.status == 401, value
    conn.close()


def test_the_right_password_is_200(dashboard: Running) -> None:
    status, _, body = dashboard.request("GET", "/api/studies", auth=("admin", dashboard.password))
    assert status == 200
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == [STUDY]
    for host in (
        f"localhost:{dashboard.port}",
        f"127.0.0.1:{dashboard.port}",
        f"[::1]:{dashboard.port}",
        f"LOCALHOST:{dashboard.port}",
    ):
        status, _, _ = dashboard.request(
            "GET", "/api/meta", auth=("admin", dashboard.password), host=host
        )
        assert status == 200, host


def test_an_unauthenticated_delete_is_refused_and_the_study_stays(dashboard: Running) -> None:
    (study_id,) = _study_ids(dashboard)
    status, _, _ = dashboard.request("DELETE", f"/api/studies/{study_id}")
    assert status == 401
    status, _, _ = dashboard.request("DELETE", f"/api/studies/{study_id}", auth=("admin", "x"))
    assert status == 401
    assert _study_ids(dashboard) == [study_id]
    names = [s.study_name for s in optuna.get_all_study_summaries(st.storage(dashboard.url))]
    assert names == [STUDY]


def test_a_foreign_host_header_is_400_even_with_the_password(dashboard: Running) -> None:
    (study_id,) = _study_ids(dashboard)
    good = ("admin", dashboard.password)
    for host in (
        f"evil.example:{dashboard.port}",
        "evil.example",
        f"127.0.0.1:{dashboard.port + 1}",
        f"localhost.evil.example:{dashboard.port}",
        "",
    ):
        status, headers, body = dashboard.request("GET", "/api/studies", auth=good, host=host)
        assert status == 400, host
        assert STUDY.encode() not in body and "www-authenticate" not in headers
        status, _, _ = dashboard.request("DELETE", f"/api/studies/{study_id}", auth=good, host=host)
        assert status == 400, host
    assert _study_ids(dashboard) == [study_id]


def test_the_password_is_never_printed(dashboard: Running) -> None:
    # A second run on the same state folder (all interfaces): it reuses the password file.
    env = {
        **os.environ,
        "HPC2EDGE_STATE_DIR": str(dashboard.password_file.parents[1]),
        "PYTHONPATH": str(REPO),
    }
    env.pop("HPC2EDGE_CONFIG", None)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpc2edge.cli",
            "dashboard",
            "--storage",
            dashboard.url,
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_listening(port, proc)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)  # a bound: exiting is slow on a loaded machine
    assert dashboard.password not in out + err
    assert f"password in {dashboard.password_file}" in out and "'admin'" in out
    assert "WARNING: listening on 0.0.0.0" in err and "in clear" in err
    assert "NO authentication" not in err


# --- the middleware on its own -----------------------------------------------------------------


def _call(app: GuardedApp, environ: dict[str, str]) -> str:
    seen: list[str] = []
    app(environ, lambda status, headers: seen.append(status))
    return seen[0]


def test_guarded_app_never_calls_the_app_when_refusing() -> None:
    calls: list[str] = []

    def inner(environ: dict[str, str], start_response: object) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])  # type: ignore[operator]
        return [b"ok"]

    app = GuardedApp(inner, user="admin", password="pw", hosts=allowed_hosts("127.0.0.1", 8080))
    good = "Basic " + base64.b64encode(b"admin:pw").decode()
    assert (
        _call(app, {"PATH_INFO": "/a", "HTTP_HOST": "evil:8080", "HTTP_AUTHORIZATION": good})[:3]
        == "400"
    )
    assert _call(app, {"PATH_INFO": "/b"})[:3] == "400"  # no Host header at all
    assert _call(app, {"PATH_INFO": "/c", "HTTP_HOST": "127.0.0.1:8080"})[:3] == "401"
    assert calls == []
    assert (
        _call(app, {"PATH_INFO": "/d", "HTTP_HOST": "localhost:8080", "HTTP_AUTHORIZATION": good})
        == "200 OK"
    )
    assert calls == ["/d"]


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1", 8080) == {
        "127.0.0.1:8080",
        "localhost:8080",
        "[::1]:8080",
    }
    assert allowed_hosts("::1", 9000) == {"[::1]:9000", "127.0.0.1:9000", "localhost:9000"}
    # A routable address: only itself (no loopback names: they would not reach it anyway).
    assert allowed_hosts("192.0.2.7", 8080) == {"192.0.2.7:8080"}
    assert allowed_hosts("192.0.2.7", 80) == {"192.0.2.7:80", "192.0.2.7"}
    wild = allowed_hosts("0.0.0.0", 8080)
    assert "localhost:8080" in wild and "0.0.0.0:8080" not in wild
    extra = allowed_hosts("127.0.0.1", 8080, ["Dash.Example", "proxy.example:443", "::2"])
    assert {"dash.example:8080", "proxy.example:443", "[::2]:8080"} <= extra
