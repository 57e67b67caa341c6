"""What every command takes from its click context: the settings (the root command's
``--config`` or ``$HPC2EDGE_CONFIG``, plus the ``HPC2EDGE_*`` environment), and JSON output.
Only entry points read the environment; library code receives a ``Settings``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from hpc2edge.config import Settings, load_settings


def command_settings(
    ctx: click.Context, *, require_files: bool = False, state_dir: Path | None = None
) -> Settings:
    """The settings for the command running in ``ctx``; ``state_dir`` overrides the config's."""
    env = dict(os.environ)
    if state_dir is not None:
        env["HPC2EDGE_STATE_DIR"] = str(state_dir)
    config = (ctx.find_root().obj or {}).get("config")
    return load_settings(config, env, require_files=require_files)


class BadInput(click.ClickException):
    """An option value that is no value of its kind: one clear line, exit code 2 (as click's
    usage errors), nothing done."""

    exit_code = 2


def print_json(data: Any) -> None:
    """``data`` as indented, key-sorted JSON on stdout (``--json`` of every command)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


#: ``--storage URL``: the Optuna study storage a reading command opens (report, dashboard).
STORAGE_OPTION = click.option(
    "--storage",
    "url",
    default=None,
    help="Optuna storage URL (default: search.storage, else .hpc2edge/search.db).",
)
