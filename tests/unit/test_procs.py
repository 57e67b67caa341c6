"""Background processes: stop exactly the ones we started."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from hpc2edge.util import procs

pytestmark = pytest.mark.unit


def test_spawn_alive_stop(tmp_path):
    record = procs.spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        log=tmp_path / "s.log",
        pid_file=tmp_path / "s.pid",
    )
    assert procs.read(tmp_path / "s.pid") == record
    assert procs.alive(record)
    assert procs.stop(record, timeout_s=5)
    assert not procs.alive(record)
    assert procs.stop(record) is False


def test_a_reused_pid_is_not_ours(tmp_path):
    record = procs.spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        log=tmp_path / "s.log",
        pid_file=tmp_path / "s.pid",
    )
    try:
        impostor = replace(record, start_ticks=(record.start_ticks or 0) + 12345)
        assert not procs.alive(impostor)
        assert procs.stop(impostor) is False
        assert procs.alive(record)  # the real one was not signalled
    finally:
        procs.stop(record)


def test_unreadable_pid_file_is_none(tmp_path):
    (tmp_path / "x.pid").write_text("not json")
    assert procs.read(tmp_path / "x.pid") is None
    assert procs.read(tmp_path / "missing.pid") is None


def test_without_a_start_time_the_command_line_decides(tmp_path):
    record = procs.spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        log=tmp_path / "s.log",
        pid_file=tmp_path / "s.pid",
    )
    try:
        assert procs.alive(replace(record, start_ticks=None))
        stranger = replace(record, start_ticks=None, argv=("/usr/bin/something-else",))
        assert not procs.alive(stranger)
        assert procs.stop(stranger) is False and procs.alive(record)
    finally:
        procs.stop(record)
