"""``celery -A hpc2edge worker`` as users type it: the role's config has the last word.

Bad configurations end the command with one line and exit status 2, never a traceback; the
edge role always runs the solo pool with concurrency 1 and only its kind's queue.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery.concurrency import get_implementation

from hpc2edge.config import Settings
from hpc2edge.config.settings import EdgeSettings
from hpc2edge.transport import workerrole
from hpc2edge.transport.app import celery_config, make_app, unacked_prefix

pytestmark = pytest.mark.unit


def celery_worker(
    cwd: Path, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    if config is not None:
        env["HPC2EDGE_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "hpc2edge", "worker", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_line_exit_2(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    return p.stderr


def test_without_a_role_config_the_worker_names_the_file_to_write(tmp_path: Path) -> None:
    err = one_line_exit_2(celery_worker(tmp_path, "-Q", "edge"))
    assert "no role config: set HPC2EDGE_CONFIG" in err and "edge.toml" in err


@pytest.mark.parametrize("kind", ["", "Bad_Kind", "-x", "a" * 33, "edge.nano"])
def test_a_kind_that_is_no_kind_name_is_refused_at_start(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(f'role = "edge"\n[edge]\nkind = "{kind}"\n')
    err = one_line_exit_2(celery_worker(tmp_path, config=config))
    assert "edge.kind: device kind" in err and "is not a kind name" in err


def test_a_role_that_runs_no_worker_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "o.toml"
    config.write_text('role = "monitor"\n')
    p = celery_worker(tmp_path, config=config)
    # The monitor's files are missing too: every problem at once, in one message.
    assert p.returncode == 2 and "Traceback" not in p.stderr


def edge(kind: str = "default") -> Settings:
    return Settings(role="edge", edge=EdgeSettings(kind=kind))


def test_the_edge_roles_queue_and_unacked_keys_follow_its_kind() -> None:
    assert workerrole.role_queues(edge()) == ("edge",)
    assert workerrole.role_queues(edge("orin-nano")) == ("edge.orin-nano",)
    assert workerrole.role_queues(Settings(role="hpc")) == ("train",)
    assert unacked_prefix(edge()) == "hpc2edge:unacked:edge"
    assert unacked_prefix(edge("orin-nano")) == "hpc2edge:unacked:edge.orin-nano"
    assert unacked_prefix(Settings(role="hpc")) == "hpc2edge:unacked:hpc"
    conf = celery_config(edge("orin-nano"))
    assert conf["worker_pool"] == "solo" and conf["worker_concurrency"] == 1
    assert [q.name for q in conf["task_queues"]] == ["train", "edge", "edge.orin-nano"]


def bare_worker(settings: Settings) -> workerrole.RoleWorker:
    """The app's worker program, not started (its __init__ would make the app the default)."""
    cls = make_app(settings).Worker
    worker: workerrole.RoleWorker = cls.__new__(cls)
    return worker


def test_the_edge_role_runs_solo_with_one_process_whatever_the_command_line() -> None:
    worker = bare_worker(edge("orin-nano"))
    worker.setup_defaults(pool_cls=get_implementation("prefork"), concurrency=4)
    me: Any = worker
    assert me.pool_cls is get_implementation("solo") and me.concurrency == 1
    hpc = bare_worker(Settings(role="hpc"))
    hpc.setup_defaults(pool_cls=get_implementation("prefork"), concurrency=4)
    assert (hpc.pool_cls, hpc.concurrency) == (get_implementation("prefork"), 4)  # type: ignore[attr-defined]


def test_an_edge_worker_refuses_another_kinds_queue(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        bare_worker(edge("orin-nano")).setup_queues(["edge"])
    assert ended.value.code == 2
    assert "consumes edge.orin-nano, not edge: start it with -Q edge.orin-nano" in (
        capsys.readouterr().err
    )
