"""Load: 10,000 small tasks through the TLS broker to several workers. None lost, none twice.

Each task appends its idempotency key to a file of the worker process that ran it; the test
reads every file back and checks that the 10,000 keys are there exactly once. The throughput is
printed (``-s`` shows it); it is not asserted, the machine is shared.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpc2edge.transport.app import make_app
from hpc2edge.util import procs
from tests.conftest import Stack, own_broker, start_worker, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_TASKS = 10_000
N_WORKERS = 3


@pytest.fixture(scope="module")
def load_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_broker(tmp_path_factory.mktemp("load-stack")) as stack_:
        yield stack_


def test_ten_thousand_tasks_none_lost_none_twice(load_stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    workers = [start_worker(load_stack, "train", f"load{i}@test") for i in range(N_WORKERS)]
    app = make_app(load_stack.settings)
    try:
        for w in workers:
            wait_ready(load_stack, "train", w)
        keys = [f"load-{i:05d}" for i in range(N_TASKS)]
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for key in keys:
                app.send_task(
                    "tests.record", args=[str(folder), key], queue="train",
                    producer=producer, ignore_result=True,
                )  # fmt: skip
        sent_s = time.perf_counter() - t0
        deadline = time.monotonic() + 600
        seen: Counter[str] = Counter()
        while time.monotonic() < deadline:
            seen = Counter(
                line for f in folder.glob("*.keys") for line in f.read_text().splitlines()
            )
            if sum(seen.values()) >= N_TASKS:
                break
            time.sleep(0.5)
        done_s = time.perf_counter() - t0
        time.sleep(2)  # anything executed twice would show up now
        seen = Counter(line for f in folder.glob("*.keys") for line in f.read_text().splitlines())
    finally:
        app.close()
        for w in workers:
            procs.stop(w)
    missing = set(keys) - set(seen)
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not missing, f"{len(missing)} tasks lost, e.g. {sorted(missing)[:5]}"
    assert not twice, f"{len(twice)} tasks executed more than once, e.g. {list(twice)[:5]}"
    assert set(seen) == set(keys)
    per_worker = sorted(len(f.read_text().splitlines()) for f in folder.glob("*.keys"))
    print(
        f"\n{N_TASKS} tasks over TLS to {N_WORKERS} workers: sent in {sent_s:.1f} s, "
        f"all executed in {done_s:.1f} s ({N_TASKS / done_s:.0f} tasks/s); "
        f"per worker process {per_worker}"
    )
