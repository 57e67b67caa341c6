"""The broker pod of k8s/, outside Kubernetes: its Redis command and its TLS probes, for real.

The StatefulSet's files are laid out as its projected volume mounts them, from the Secrets that
`hpc2edge k8s secrets` prints and the ConfigMap the base renders. Only what cannot be the same
outside a container changes: the /etc/hpc2edge and /data prefixes become temporary folders, the
port is a free one, and Redis listens on loopback only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc2edge.cli.root import cli
from hpc2edge.util import net
from tests.support import kustomize
from tests.support.k8s_manifests import BASE, decode_secrets, find, mounted_files, pod_spec

pytestmark = pytest.mark.integration

ETC = "/etc/hpc2edge"


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} is not on PATH (`make setup` installs redis-server and redis-cli)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _lay_out_files(tmp_path: Path, statefulset: dict, docs: list[dict]) -> Path:
    runner = CliRunner()
    tls_dir = tmp_path / "tls"
    assert runner.invoke(cli, ["tls", "init", "--dir", str(tls_dir)]).exit_code == 0
    result = runner.invoke(cli, ["k8s", "secrets", "--dir", str(tls_dir), "--create-passwords"])
    assert result.exit_code == 0, result.output
    secrets = decode_secrets(result.stdout)
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    etc = tmp_path / "etc"
    for path, (kind, name, key) in mounted_files(statefulset, "redis").items():
        if not path.startswith(ETC + "/"):
            continue
        if kind == "secret":
            content = secrets[name][key]
        else:
            content = config_maps[name][key].replace(ETC, str(etc)).encode()
        target = etc / path[len(ETC) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(0o400)
    return etc


def _probe(script: str, etc: Path, port: int) -> subprocess.CompletedProcess:
    script = script.replace(ETC, str(etc)).replace("-p 6390", f"-p {port}")
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)


def test_the_redis_command_starts_and_the_tls_probes_pass_only_with_pong(tmp_path):
    _require("redis-server")
    _require("redis-cli")
    docs = kustomize.build(BASE)
    statefulset = find(docs, "StatefulSet", "hpc2edge-redis")
    container = pod_spec(statefulset)["containers"][0]
    etc = _lay_out_files(tmp_path, statefulset, docs)
    data = tmp_path / "data"
    data.mkdir()
    port = net.free_port()

    command = []
    for arg in container["command"]:
        arg = str(data) if arg == "/data" else arg.replace(ETC, str(etc))
        command.append(arg)
    bind = command.index("--bind")
    command[bind + 1 : bind + 3] = ["127.0.0.1"]
    command += ["--tls-port", str(port)]
    assert command[0] == "redis-server"
    command[0] = shutil.which("redis-server")

    log = (tmp_path / "redis.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        script = container["readinessProbe"]["exec"]["command"][2]
        deadline = time.monotonic() + 60  # polled: redis-server starts slowly on a loaded machine
        while True:
            result = _probe(script, etc, port)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            assert server.poll() is None, (tmp_path / "redis.log").read_text()
            time.sleep(0.2)
        assert result.returncode == 0, (result.stderr, (tmp_path / "redis.log").read_text())
        for probe in ("startupProbe", "livenessProbe"):
            assert _probe(container[probe]["exec"]["command"][2], etc, port).returncode == 0

        # The AOF goes to --dir, the PVC's mount.
        assert list(data.glob("appendonlydir/*.aof"))

        # A wrong monitor password (or none) fails the probe: it needs PONG, not just an answer.
        password = etc / "probe" / "monitor.password"
        password.chmod(0o600)
        password.write_text("wrong\n")
        assert _probe(script, etc, port).returncode != 0
        password.write_text("")
        assert _probe(script, etc, port).returncode != 0
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
