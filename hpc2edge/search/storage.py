"""Opening an existing study storage for reading (the report, the dashboard), errors explained.

Optuna is imported only when a storage is opened, so a missing ``search`` extra is a clear error
(:class:`StudyStorageError`) rather than an ImportError at the command's start.
"""

from __future__ import annotations

from typing import Any

from hpc2edge.config import MASK, mask_url
from hpc2edge.errors import StudyStorageError
from hpc2edge.util.filemodes import journal_path, sqlite_path


def _masked(text: str, url: str) -> str:
    """``text`` with the password of ``url`` masked wherever it appears."""
    text = mask_url(text)
    rest = url.split("://", 1)[-1].split("@", 1)
    if len(rest) == 2 and ":" in rest[0]:
        password = rest[0].split(":", 1)[1]
        if password:
            text = text.replace(password, MASK)
    return text


def open_storage(url: str) -> Any:
    """An Optuna storage at ``url`` that must already exist (SQLite, a journal: the file).

    Raises:
        StudyStorageError: no such SQLite file, or the database cannot be opened (the message
            carries the URL with its password masked).
    """
    path = sqlite_path(url) or journal_path(url)
    if path is not None and not path.is_file():
        raise StudyStorageError(
            f"no study storage at {path}: run `hpc2edge search` (or `demo`) first, or give "
            "--storage URL"
        )
    try:
        from hpc2edge.search.study import storage
    except ImportError as exc:
        raise StudyStorageError(
            f"optuna is not installed ({exc.name}): pip install 'hpc2edge[search]'"
        ) from None
    try:
        return storage(url)
    except Exception as exc:  # SQLAlchemy, a missing driver, a refused connection ...
        reason = _masked(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
        raise StudyStorageError(
            f"cannot open the study storage {mask_url(url)}: {reason}"
        ) from None
