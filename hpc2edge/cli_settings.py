"""The settings of a command: the root command's ``--config`` (or ``$HPC2EDGE_CONFIG``) plus the
``HPC2EDGE_*`` environment. One place, for ``hpc2edge`` and the subcommands that live beside
their subsystems (search, report, dashboard); only entry points read the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from hpc2edge.config import Settings, load_settings


def settings(
    ctx: click.Context, *, require_files: bool = False, state_dir: Path | None = None
) -> Settings:
    """The settings for the command running in ``ctx``; ``state_dir`` overrides the config's."""
    env = dict(os.environ)
    if state_dir is not None:
        env["HPC2EDGE_STATE_DIR"] = str(state_dir)
    config = (ctx.find_root().obj or {}).get("config")
    return load_settings(config, env, require_files=require_files)
