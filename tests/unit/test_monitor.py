"""How Flower is launched as the monitor role: argv, environment, password file (no services)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpc2edge.config import derived, load_settings
from hpc2edge.errors import ConfigError
from hpc2edge.ops import flower, stack
from hpc2edge.transport import flowerguard
from hpc2edge.util import net, procs

pytestmark = pytest.mark.unit


@pytest.fixture
def local(tmp_path):
    """A local stack's files (CA, certificates, passwords, role configs), no broker running."""
    env = {"HPC2EDGE_STATE_DIR": str(tmp_path / "state"), "HPC2EDGE_BROKER_PORT": "6391"}
    return stack.prepare(load_settings(environ=env))


def test_plan_runs_flower_as_the_local_monitor_role(local):
    caller = {"PATH": os.environ.get("PATH", ""), "HPC2EDGE_ROLE": "edge"}
    launch = flower.plan(local, environ=caller, port=5599)
    config = derived.role_config_path(local, "monitor")
    assert launch.env["HPC2EDGE_CONFIG"] == str(config)
    assert "HPC2EDGE_ROLE" not in launch.env  # the role config alone decides
    assert launch.settings.role == "monitor" and launch.settings.username == "monitor"
    assert launch.argv[1:6] == ["-m", "celery", "-A", "hpc2edge", "flower"]
    assert "--port=5599" in launch.argv and "--address=127.0.0.1" in launch.argv
    assert launch.url == "http://127.0.0.1:5599"


def test_the_password_travels_in_the_environment_only(local):
    launch = flower.plan(local, environ={})
    password = launch.password_file.read_text().strip()
    assert launch.env["FLOWER_BASIC_AUTH"] == f"admin:{password}"
    assert not any(password in arg for arg in launch.argv)
    assert password not in repr(launch)
    assert launch.password_file == local.state_dir / "secrets" / "flower.password"
    assert launch.password_file.stat().st_mode & 0o777 == 0o600


def test_the_password_is_made_once(local):
    first = flowerguard.ensure_password(local)
    assert flowerguard.ensure_password(local) == first
    assert len(first) >= 40 and "," not in first and ":" not in first


def test_a_monitor_config_is_used_as_it_is(local):
    config = derived.role_config_path(local, "monitor")
    settings = load_settings(config)
    caller = {"HPC2EDGE_BROKER_CONNECT_TIMEOUT_S": "3"}
    launch = flower.plan(settings, config_path=config, environ=caller, user="ops")
    assert launch.env["HPC2EDGE_CONFIG"] == str(config)
    assert launch.env["HPC2EDGE_BROKER_CONNECT_TIMEOUT_S"] == "3"  # the caller's own overrides
    assert launch.settings.broker.connect_timeout_s == 3
    assert launch.env["FLOWER_BASIC_AUTH"].startswith("ops:")


def test_missing_monitor_files_fail_before_flower_starts(local):
    (local.state_dir / "tls" / "monitor-key.pem").unlink()
    with pytest.raises(ConfigError, match=r"tls\.key"):
        flower.plan(local, environ={})


@pytest.mark.parametrize("user", ["", "a:b", "a,b", " admin"])
def test_user_names_flower_cannot_store_are_refused(user):
    with pytest.raises(ValueError, match="user name"):
        flowerguard.basic_auth(user, "pw")


def test_read_only_and_ports():
    assert "--read_only=True" in flower.flower_argv(5555, read_only=True)
    assert "--read_only=True" not in flower.flower_argv(5555)
    with pytest.raises(ValueError, match="port"):
        flower.flower_argv(0)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:5555"),
        ("0.0.0.0", "http://127.0.0.1:5555"),
        ("", "http://127.0.0.1:5555"),
        ("::", "http://[::1]:5555"),
        ("10.1.2.3", "http://10.1.2.3:5555"),
    ],
)
def test_url(address, expected):
    assert flower.url(address, 5555) == expected


def test_loopback():
    assert net.is_loopback("127.0.0.1") and net.is_loopback("::1")
    assert net.is_loopback("localhost")
    assert not net.is_loopback("0.0.0.0") and not net.is_loopback("10.0.0.1")


def test_record_url_reads_the_command_line():
    record = procs.ProcRecord(
        name="flower",
        pid=1,
        start_ticks=None,
        argv=tuple(flower.flower_argv(5601, "0.0.0.0")),
        log="x",
    )
    assert flower.record_url(record) == "http://127.0.0.1:5601"


def test_monitor_command_says_when_the_broker_is_unreachable(local, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    env["HPC2EDGE_BROKER_PORT"] = str(net.free_port())  # nothing listens there
    env["HPC2EDGE_BROKER_CONNECT_TIMEOUT_S"] = "2"
    config = derived.role_config_path(local, "monitor")
    out = subprocess.run(
        [sys.executable, "-m", "hpc2edge.cli", "--config", str(config), "monitor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "cannot reach the broker" in out.stderr and "Traceback" not in out.stderr
    password = (local.state_dir / "secrets" / "flower.password").read_text().strip()
    assert password not in out.stdout + out.stderr
