"""Tasks that exist only in test workers (loaded with ``--include tests.support.tasks``).

``tests.touch`` has an observable side effect, a file, so a test can prove a message was *not*
executed (e.g. a pickle payload) rather than only that no result came back.
"""

from __future__ import annotations

from pathlib import Path

from celery import shared_task


@shared_task(name="tests.touch")
def touch(path: str) -> str:
    """Create ``path``; return it."""
    Path(path).write_text("executed\n")
    return path


@shared_task(name="tests.record", acks_late=True)
def record(folder: str, key: str) -> str:
    """Append ``key`` to this worker process's file in ``folder`` (one line, one append)."""
    import os

    line = f"{key}\n".encode()
    fd = os.open(Path(folder) / f"{os.getpid()}.keys", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return key
