"""Settings as text: the masked TOML that ``hpc2edge config`` prints and role files hold."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from hpc2edge.config.settings import MASK, SECRET_KEYS, SECTIONS, Settings


def render_masked(settings: Settings) -> str:
    """The effective settings as TOML, with every secret replaced by a mask."""
    lines = [
        f"# effective configuration (from {settings.source})",
        f'role = "{settings.role}"',
        f'state_dir = "{settings.state_dir}"',
    ]
    for name in SECTIONS:
        lines.append("")
        lines.append(f"[{name}]")
        section = getattr(settings, name)
        for f in fields(section):
            value = getattr(section, f.name)
            if (name, f.name) in SECRET_KEYS:
                shown = f'"{MASK}"' if value else '""  # not set'
                lines.append(f"{f.name} = {shown}")
                continue
            if name == "broker" and f.name == "username":
                value = settings.username
            if name == "search" and isinstance(value, str):
                value = mask_url(value)
            if value is None:
                lines.append(f"# {f.name} is not set")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:********@host/db``."""
    return re.sub(r"(://[^/:@]*):[^@/]*@", rf"\1:{MASK}@", url)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return '""'
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_role_config(path: Path, settings: Settings) -> None:
    """Write a role's config file (no secrets inside: the password stays in its own file)."""
    body = render_masked(settings).splitlines()
    kept = [line for line in body if not line.startswith("password =")]
    kept[0] = f"# {settings.role} configuration written by hpc2edge"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept) + "\n")
