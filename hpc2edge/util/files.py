"""Writing files so that readers see all of a file or none of it, with the right mode from birth.

One implementation for every file hpc2edge writes that another process may read at the same
moment or after a crash: private keys and ACL files (0600), artifact blobs, training results and
the training child's report. The temporary file is created by ``mkstemp`` (mode 0600) in the
target's folder, so a secret is never readable by others, not even for an instant, and the
final ``os.replace`` is atomic on POSIX.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from hpc2edge.errors import StackError


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, with permissions ``mode``.

    Args:
        path: the target; its folder must exist.
        data: the whole content.
        mode: the file's permissions; 0600 by default: everything hpc2edge writes under its
            state folder (records, runs, artifact blobs) is its user's alone (docs/security.md).
        durable: also fsync the file and its folder, so the write survives a power cut (for
            content others rely on, such as artifact blobs); not needed for re-creatable files.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (key, password hash file): mode 0600 from creation, atomically."""
    write_atomic(path, data, mode=0o600)


def ensure_password_file(path: Path) -> str:
    """The one-line password in ``path``, created (32 random bytes, 0600, folder 0700) when
    missing; ``""`` when the file exists but is empty.

    Created with ``O_EXCL``: of two processes creating it at once, one writes and both read the
    same password (a replace could leave the first with a password the file no longer holds).

    Raises:
        OSError: the file is missing and cannot be written, or cannot be read.
    """
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def ensure_password(path: Path, *, what: str, hint: str = "") -> str:
    """:func:`ensure_password_file` for a service's login (``what``: "Flower's", ...).

    Raises:
        StackError: the file is missing and cannot be written (a read-only mount), or is empty.
    """
    try:
        password = ensure_password_file(path)
    except OSError as exc:
        raise StackError(
            f"cannot create {what} password file {path}: {exc.strerror}; write one there "
            f"(one line, chmod 600){hint}"
        ) from None
    if not password:
        raise StackError(f"{what} password file {path} is empty")
    return password


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(fd)
