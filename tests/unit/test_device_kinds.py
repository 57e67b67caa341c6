"""Device kinds as names, queues and ids, and the hostile inputs that cross with them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hpc2edge.roles import check_kind, edge_queue, is_task_queue, kind_of_queue, role_of_queue
from hpc2edge.search.dispatch import result_problem
from hpc2edge.search.settings import device_kinds, difference, upgraded
from hpc2edge.store.artifacts import MemoryArtifactStore
from hpc2edge.testing.fakes import FakeEdge
from hpc2edge.transport import liveness, taskids

pytestmark = pytest.mark.unit


def test_kind_names_map_to_queues_and_back() -> None:
    assert edge_queue("default") == "edge" and kind_of_queue("edge") == "default"
    assert edge_queue("orin-nano") == "edge.orin-nano"
    assert kind_of_queue("edge.orin-nano") == "orin-nano"
    for bad in ("edge.default", "edge.", "edge.Orin", "edge.-x", "edge.a.b", "train", None, 3):
        assert kind_of_queue(bad) is None
    assert role_of_queue("edge.orin-nano") == "edge" and role_of_queue("train") == "hpc"
    assert is_task_queue("edge.x") and not is_task_queue("celery")
    for bad in ("", "A", "a_b", "-a", "a-", "a" * 33, "a:b", "a\n"):
        with pytest.raises(ValueError, match="not a kind name"):
            check_kind(bad)


def test_a_task_id_names_its_kinds_queue_and_nothing_else() -> None:
    tid = taskids.new("edge.orin-nano")
    assert taskids.queue_of(tid) == "edge.orin-nano" and taskids.role_of(tid) == "edge"
    assert taskids.queue_of(tid + "\n") is None  # no trailing newline slips through
    assert taskids.queue_of("edge.orin-nano-" + "0" * 31) is None
    assert taskids.role_of("celery-" + "0" * 32) is None


class Kinds:
    """A sorted set with the redis-py calls the kinds index uses."""

    def __init__(self) -> None:
        self.z: dict[str, float] = {}

    def zrevrangebyscore(self, key: str, hi: float, lo: float, start: int, num: int) -> list[bytes]:
        inside = [(s, m) for m, s in self.z.items() if float(lo) <= s <= float(hi)]
        return [m.encode() for s, m in sorted(inside, reverse=True)[start : start + num]]


def test_planted_kinds_ahead_of_the_clock_cannot_push_real_kinds_out() -> None:
    now = time.time()
    kinds = Kinds()
    kinds.z = {f"edge.fake-{i}": 1e300 for i in range(liveness.MAX_KINDS)}
    kinds.z.update({"edge.orin": now - 1, "not a queue": now, "edge.Bad": now})
    assert liveness.known_queues(kinds, now) == ["train", "edge", "edge.orin"]


def measured(**changes: Any) -> dict[str, Any]:
    store = MemoryArtifactStore()
    key = store.put(b"onnx")
    payload = {"arch_id": "a", "artifact_key": key, "input_shape": [1, 8, 41, 41],
               "batch_sizes": [1], "precision": "fp32"}  # fmt: skip
    return {**FakeEdge(store)(payload), **changes}


@pytest.mark.parametrize(
    "changes",
    [{"worker": ["x"]}, {"worker": "a\nb"}, {"worker": "x" * 300}, {"kind": ["nano"]},
     {"kind": "Nano"}, {"protocol": "quick"}],
)  # fmt: skip
def test_a_result_that_names_no_readable_worker_kind_or_protocol_is_refused(changes) -> None:
    assert result_problem("measure", measured()) is None
    assert result_problem("measure", measured(**changes)) is not None


def test_a_study_recorded_before_device_kinds_resumes_as_the_default_kind() -> None:
    old_stage = {"class": "MeasureStage", "name": "measure", "after": [], "kind": "measure",
                 "device": "", "on_queue": "edge", "batch_size": 1, "precision": "fp32",
                 "protocol": "quick"}  # fmt: skip
    new_stage = {**{k: v for k, v in old_stage.items() if k != "on_queue"},
                 "device": "default", "primary": True, "budget_ms": None}  # fmt: skip
    recorded = {"search": {"stages": [old_stage]}, "plan": {}}
    asked = {"search": {"stages": [new_stage]}, "plan": {}}
    assert upgraded(recorded) == asked
    assert difference(upgraded(recorded), asked) is None
    assert difference(recorded, asked) is not None  # what the upgrade is for
    assert device_kinds(recorded) == [("default", True)]
    assert device_kinds({}) == [("default", True)]
    nano = {**old_stage, "name": "measure_nano", "device": "nano"}
    assert device_kinds({"search": {"stages": [old_stage, nano]}}) == [
        ("default", True),
        ("nano", False),
    ]


@pytest.mark.parametrize("field", ["seen_unix_s", "started_unix_s"])
def test_a_report_number_of_thousands_of_digits_is_malformed_not_a_crash(field: str) -> None:
    import json

    from hpc2edge.transport.units import UnitReport

    huge = json.dumps({field: 10**4000})  # fits the report cap; math.isfinite would overflow
    with pytest.raises(ValueError):
        UnitReport.from_json("edge@a", huge)


def test_a_drilled_units_time_scale_is_part_of_its_runtime() -> None:
    from hpc2edge.latency import get_backend
    from hpc2edge.latency.reference import time_scaled as scaled

    real = get_backend("onnxruntime", intra_op_threads=1)
    assert "time_scale" not in scaled(real, 1.0).fingerprint()
    assert scaled(real, 2.0).fingerprint()["time_scale"] == 2.0
