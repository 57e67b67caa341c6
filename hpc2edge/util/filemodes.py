"""Who may read the state folder: its owner only (files 0600, folders 0700).

The state folder holds the study database, the measurement store, the broker's AOF (every task
and result that crossed the broker), logs, training runs, reports and the secrets. One rule
keeps all of it private, whoever creates the file:

- ``hpc2edge`` (the CLI) runs with umask 0o077 (:func:`private_umask` in
  :func:`hpc2edge.cli.root.main`);
- every process it spawns (redis-server, workers, Flower) starts with umask 0o077
  (:func:`hpc2edge.util.procs.spawn`), so redis-server's AOF folder and files are 0700 / 0600;
- a worker started by hand (``celery -A hpc2edge worker``) sets it when Celery initialises the
  worker (:func:`hpc2edge.transport.app.connect_celery_signals`, connected by the app);
- library code that creates a SQLite file creates it 0600 first (:func:`private_sqlite`), so a
  study or store opened from a plain ``python`` session with umask 022 is private too (SQLite
  gives its journal and WAL files the mode of the database file);
- folders and files made before this rule (or by other tools) are tightened when the stack
  starts: :func:`tighten` strips group and other bits from everything under the state folder,
  without following symbolic links.

The umask only takes bits away: a stricter umask than 0o077 is kept.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_umask() -> int:
    """Add 0o077 to this process's umask (files 0600, folders 0700 from now on).

    Returns the previous umask, for a caller that restores it.
    """
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old


def current_umask() -> int:
    """This process's umask, read without changing it where ``/proc`` tells (Linux >= 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(PRIVATE_UMASK)  # elsewhere: set and restore (not atomic across threads)
    os.umask(old)
    return old


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file now: 0o666 less the umask (0600 under 077)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def umask_private() -> Iterator[None]:
    """:func:`private_umask` for the duration of a ``with`` block, then the previous umask."""
    old = private_umask()
    try:
        yield
    finally:
        os.umask(old)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None (another database, or an in-memory one)."""
    if not url.startswith("sqlite:///"):
        return None
    name = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:///`` URL (an Optuna journal file), or None."""
    if not url.startswith("journal:///"):
        return None
    name = url.removeprefix("journal:///")
    return Path(name) if name else None


def private_sqlite(url: str) -> None:
    """Create the file of a ``sqlite:///`` URL empty and 0600 when missing (its folder 0700).

    An empty file is an empty SQLite database; SQLite then creates its ``-journal`` / ``-wal``
    files with the same mode. An existing file is left as it is (:func:`tighten` handles those
    under the state folder). Other URLs: nothing to do.
    """
    path = sqlite_path(url)
    if path is not None:
        private_file(path)


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 when missing (its folder 0700); an existing file is left
    as it is."""
    if not path.parent.exists():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def _private_mode(mode: int) -> int:
    if stat.S_ISDIR(mode):
        return DIR_MODE
    return stat.S_IMODE(mode) & 0o700  # an owner-executable file stays executable


def tighten(state_dir: Path) -> list[Path]:
    """Folders 0700 and files 0600 (group and other bits removed) under ``state_dir``.

    ``state_dir`` itself is followed when it is a symbolic link; no link inside it is followed
    or changed (``chmod`` would act on the link's target, which may lie outside). Folders are
    tightened before their content is listed, so nobody else can slip a link in meanwhile.
    Entries this user may not change (owned by someone else) are skipped. Returns what was
    changed; a missing ``state_dir`` changes nothing.
    """
    top = Path(state_dir).resolve()
    changed: list[Path] = []
    try:
        st = top.stat()
    except OSError:
        return changed
    if not stat.S_ISDIR(st.st_mode):
        return changed
    _chmod(top, st.st_mode, changed)
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        here = Path(dirpath)
        walk_into: list[str] = []
        for name in dirnames + filenames:
            try:
                entry = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(entry.st_mode):
                continue
            wanted = _private_mode(entry.st_mode)
            if stat.S_IMODE(entry.st_mode) != wanted:
                try:
                    os.chmod(name, wanted, dir_fd=dirfd)
                except OSError:
                    continue
                changed.append(here / name)
            if stat.S_ISDIR(entry.st_mode):
                walk_into.append(name)
        dirnames[:] = [d for d in dirnames if d in walk_into]
    return changed


def _chmod(path: Path, mode: int, changed: list[Path]) -> None:
    wanted = _private_mode(mode)
    if stat.S_IMODE(mode) == wanted:
        return
    try:
        os.chmod(path, wanted)
    except OSError:
        return
    changed.append(path)


def loose(state_dir: Path) -> list[Path]:
    """What under ``state_dir`` (links not followed) group or others may access: for checks."""
    top = Path(state_dir).resolve()
    found: list[Path] = []
    if top.stat().st_mode & 0o077:
        found.append(top)
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        for name in dirnames + filenames:
            try:
                entry = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISLNK(entry.st_mode) and entry.st_mode & 0o077:
                found.append(Path(dirpath) / name)
    return found


__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PRIVATE_UMASK",
    "current_umask",
    "default_file_mode",
    "loose",
    "private_sqlite",
    "private_umask",
    "sqlite_path",
    "tighten",
    "umask_private",
]
