"""Background processes, and stopping exactly the ones we started (the local stack, Flower,
the training launcher); :func:`pid_exists`, the one check of a bare pid.

A pid file alone is not enough to stop a process safely: pids are reused, and ``kill $(cat pid)``
after a reboot can hit an unrelated program. Each record therefore keeps the pid, the process's
start time from ``/proc`` and its command line; :func:`stop` signals only a process whose start
time still matches (on systems without ``/proc`` it falls back to the command line).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from hpc2edge.util.filemodes import DIR_MODE, FILE_MODE, PRIVATE_UMASK
from hpc2edge.util.files import write_atomic


@dataclass(frozen=True)
class ProcRecord:
    """What we know of a process we started."""

    name: str
    pid: int
    start_ticks: int | None
    argv: tuple[str, ...]
    log: str


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counts from after the parenthesised command name, which may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_mode: str = "a",
) -> ProcRecord:
    """Start ``argv`` in its own session, output to ``log``; record it in ``pid_file``.

    The child runs with umask 0o077; ``log`` and ``pid_file`` are 0600 (an existing log is
    tightened) and the folders made for them 0700.
    """
    log.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    pid_file.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with _open_private(log, log_mode) as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    record = ProcRecord(
        name=name, pid=proc.pid, start_ticks=_start_ticks(proc.pid), argv=tuple(argv), log=str(log)
    )
    write_atomic(pid_file, (json.dumps(asdict(record)) + "\n").encode(), mode=FILE_MODE)
    return record


def _open_private(path: Path, mode: str) -> IO[bytes]:
    """``path`` opened for writing (``mode`` "a" or "w"), created 0600, group/other bits removed."""
    if mode not in ("a", "w"):
        raise ValueError(f"log mode {mode!r}: 'a' or 'w'")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        current = os.fstat(fd).st_mode & 0o777
        if current & 0o077:
            os.fchmod(fd, current & 0o700)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab" if mode == "a" else "wb")


def read(pid_file: Path) -> ProcRecord | None:
    """The record in ``pid_file``, or None when there is none or it is unreadable."""
    try:
        data = json.loads(pid_file.read_text())
        return ProcRecord(
            name=data["name"],
            pid=int(data["pid"]),
            start_ticks=data["start_ticks"],
            argv=tuple(data["argv"]),
            log=data["log"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_exists(pid: object) -> bool:
    """True while a process (any user's, not a zombie) has the pid ``pid``.

    The one liveness check of a bare pid; :func:`alive` adds that it is still *our* process.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    return not _is_zombie(pid)


def alive(record: ProcRecord) -> bool:
    """True while the very process of ``record`` runs (not a later one with the same pid)."""
    if not pid_exists(record.pid):
        return False
    if record.start_ticks is not None:
        return _start_ticks(record.pid) == record.start_ticks
    # No start time (no /proc, or the process was gone before we read it): compare the
    # command line instead, and treat a process we cannot identify as not ours.
    return _command_line(record.pid) == " ".join(record.argv)


def _command_line(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def stop(record: ProcRecord, *, timeout_s: float = 10.0) -> bool:
    """SIGTERM the process group of ``record``, then SIGKILL after ``timeout_s``.

    Returns True when the process was running and is now gone, False when it was not ours or not
    running (nothing is signalled then).
    """
    if not alive(record):
        _reap(record.pid)
        return False
    _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not alive(record):
            return True
        time.sleep(0.05)
    _signal_group(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and alive(record):
        _reap(record.pid)
        time.sleep(0.05)
    return not alive(record)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: its group id is its pid
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    # A child of this very process must be waited for, or it lingers as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path | str, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when missing)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
