"""The command tree loads lazily: `hpc2edge --help` imports no command, a subcommand's `--help`
imports only its own module, and an edge-only install runs `hpc2edge --help` and
`celery -A hpc2edge --help` without the training, search or plotting stacks."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from hpc2edge.cli.root import COMMANDS, cli

from ..support import blocker

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]

# Print the hpc2edge.cli modules loaded after running the command line given as argv[1:].
PROBE = """
import json, sys
from hpc2edge.cli import main
code = main(sys.argv[1:])
mine = [m for m in sys.modules if m.startswith("hpc2edge.")]
print(json.dumps({
    "code": code,
    "cli": sorted(m for m in mine if m.startswith("hpc2edge.cli.")),
    "parts": sorted({m.split(".")[1] for m in mine}),
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY)),
}))
"""


def _probe(*argv: str, env: dict[str, str] | None = None) -> dict:
    code = f"HEAVY = {blocker.HEAVY!r}\n" + PROBE
    out = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_entry_names_its_command_and_carries_its_help():
    for name, entry in COMMANDS.items():
        command = getattr(importlib.import_module(f"hpc2edge.cli.{entry.module}"), entry.attr)
        assert isinstance(command, click.Command)
        assert command.name == name
        assert entry.help == command.get_short_help_str(300), name


def test_the_root_lists_every_command_and_resolves_it():
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    assert cli.get_command(ctx, "no-such-command") is None
    assert cli.get_command(ctx, "ping").name == "ping"


def test_root_help_imports_no_command():
    seen = _probe("--help")
    assert seen["code"] == 0
    assert seen["cli"] == ["hpc2edge.cli.context", "hpc2edge.cli.root"] or seen["cli"] == [
        "hpc2edge.cli.root"
    ]
    assert seen["heavy"] == []


# What any command's --help may load, and what a few also need for their option defaults.
BASE = {"cli", "config", "errors", "roles", "util", "space"}
ALSO = {
    **{name: {"ops", "transport"} for name in ("up", "down", "status", "ping")},  # Flower's port
    "search": {"search"},
    "demo": {"search"},
    "report": {"report", "search"},
    "dashboard": {"ops", "search"},
    "monitor": {"ops", "transport"},
    "k8s": {"ops", "transport"},
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_subcommands_help_imports_only_its_own_part_of_the_tree(name):
    seen = _probe(name, "--help")
    assert seen["code"] == 0
    own = f"hpc2edge.cli.{COMMANDS[name].module}"
    assert set(seen["cli"]) <= {"hpc2edge.cli.root", "hpc2edge.cli.context", own}, seen["cli"]
    assert own in seen["cli"]
    assert set(seen["parts"]) - BASE <= ALSO.get(name, set()), seen["parts"]
    assert seen["heavy"] == []


def test_an_unknown_command_is_a_usage_error():
    seen = _probe("no-such-command")
    assert seen["code"] == 2


def _blocked_env(tmp_path: Path) -> dict[str, str]:
    blocker.write(tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{REPO_ROOT}"
    return env


def test_edge_only_install_runs_hpc2edge_help(tmp_path):
    env = _blocked_env(tmp_path)
    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True, check=False
    )
    assert check.returncode != 0 and "blocked by the test" in check.stderr  # the blocker works
    seen = _probe("--help", env=env)
    assert seen["code"] == 0 and seen["heavy"] == []
    for name in ("measure", "ping", "status", "config", "dead-letters"):
        seen = _probe(name, "--help", env=env)
        assert seen["code"] == 0 and seen["heavy"] == [], name


def test_edge_only_install_runs_celery_with_the_app(tmp_path):
    env = _blocked_env(tmp_path)
    code = (
        "import sys\n"
        "from celery.bin.celery import main\n"
        "sys.argv = ['celery', '-A', 'hpc2edge', 'worker', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "assert 'hpc2edge.transport.app' in sys.modules  # -A hpc2edge loaded the app\n"
        "import hpc2edge.celery, hpc2edge.tasks  # what a worker imports at start\n"
        f"heavy = {{m.split('.')[0] for m in sys.modules}} & set({blocker.HEAVY!r})\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
