"""`hpc2edge up / ping / status / down`, run as a user runs them: the CLI in a fresh folder.

`up --monitor` also starts Flower here (one stack for both: each costs seconds).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from hpc2edge.util import net, procs

from ..conftest import _require_redis_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(python, cwd, env, *args, timeout=120):
    return subprocess.run(
        [python, "-m", "hpc2edge.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _flower_get(url, password=None):
    req = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_up_ping_status_down(tmp_path, python):
    _require_redis_server()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    env["HPC2EDGE_BROKER_PORT"] = str(net.free_port())
    env["HPC2EDGE_ROLE"] = "orchestrator"  # the caller's HPC2EDGE_* must not reach the workers
    flower_port = net.free_port()
    flower_url = f"http://127.0.0.1:{flower_port}"
    monitor = ("--monitor", "--monitor-port", str(flower_port))
    try:
        up = _run(python, tmp_path, env, "up", *monitor)
        assert up.returncode == 0, up.stderr
        assert "train@" in up.stdout and "edge@" in up.stdout
        assert f"flower: {flower_url}" in up.stdout and "flower.password" in up.stdout

        again = _run(python, tmp_path, env, "up", *monitor)
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stdout

        for queue in ("edge", "train"):
            ping = _run(python, tmp_path, env, "ping", "--queue", queue, "--json")
            assert ping.returncode == 0, ping.stderr
            answer = json.loads(ping.stdout)
            assert answer["hostname"].startswith(f"{queue}@")
            assert answer["queue"] == queue

        status = _run(python, tmp_path, env, "status", "--json")
        assert status.returncode == 0, status.stderr
        st = json.loads(status.stdout)
        assert st["reachable"] and st["tls_version"].startswith("TLSv1.")
        assert len(st["workers"]["edge"]) == 1 and len(st["workers"]["train"]) == 1
        assert st["local_processes"] == {
            "broker": True,
            "worker-train": True,
            "worker-edge": True,
            "flower": True,
        }
        assert st["monitor_url"] == flower_url

        state = tmp_path / ".hpc2edge"
        password = (state / "secrets" / "flower.password").read_text().strip()
        assert _flower_get(f"{flower_url}/api/workers")[0] == 401
        deadline = time.monotonic() + 45
        while True:  # Flower learns of workers from their events (no remote control): poll
            code, body = _flower_get(f"{flower_url}/workers?json=1", password)
            assert code == 200, body
            names = sorted(w["hostname"] for w in json.loads(body)["data"])
            if [n.split("@")[0] for n in names] == ["edge", "train"]:
                break
            assert time.monotonic() < deadline, f"Flower lists {names}"
            time.sleep(1.0)

        records = [procs.read(p) for p in (state / "run").glob("*.pid")]
        assert len(records) == 4 and all(r is not None and procs.alive(r) for r in records)
        for key in ("ca-key.pem", "orchestrator-key.pem", "edge-key.pem"):
            assert (state / "tls" / key).stat().st_mode & 0o777 == 0o600
    finally:
        down = _run(python, tmp_path, env, "down")
    assert down.returncode == 0, down.stderr
    assert "broker" in down.stdout and "flower" in down.stdout
    assert all(not procs.alive(r) for r in records if r is not None)

    unreachable = _run(python, tmp_path, env, "status")
    assert unreachable.returncode == 1
    assert "UNREACHABLE" in unreachable.stdout

    # Secrets never reach a log file.
    passwords = [p.read_text().strip() for p in (state / "secrets").glob("*.password")]
    logs = "".join(p.read_text() for p in state.rglob("*.log"))
    assert passwords and not any(pw in logs for pw in passwords)
