"""Units of a kind over a real TLS redis with the shipped ACL: reports, review, quarantine.

One broker for the module (its own, so the session's edge worker is never quarantined), with
the shipped ACL as it is. Every test uses kind queues of its own, so they run in any order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from hpc2edge.cli.root import main
from hpc2edge.config import derived
from hpc2edge.latency import reference
from hpc2edge.latency.backends.table import save_table
from hpc2edge.latency.protocol import Protocol
from hpc2edge.store.artifacts import RedisArtifactStore
from hpc2edge.testing.latency import contract_model, contract_records
from hpc2edge.transport import broker, fleet, liveness, probes
from hpc2edge.transport.app import make_app
from hpc2edge.transport.units import (
    Activity,
    QuarantineEntry,
    QuarantineState,
    ReferenceCheck,
    UnitReport,
    UnitState,
    quarantine_key,
)
from hpc2edge.util import procs
from tests.conftest import Stack, own_broker, start_worker

pytestmark = pytest.mark.integration

NOPERM = redis.exceptions.NoPermissionError


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_broker(tmp_path_factory.mktemp("fleet")) as stack:
        yield stack


@pytest.fixture
def orchestrator(site: Stack) -> Iterator[redis.Redis]:
    with broker.client(site.settings) as c:
        yield c


@pytest.fixture
def edge(site: Stack) -> Iterator[redis.Redis]:
    with broker.client(site.as_role("edge")) as c:
        yield c


def cli(site: Stack, *argv: str) -> int:
    return main(["--config", str(derived.role_config_path(site.settings, "orchestrator")), *argv])


def unit_report(unit: str, p50: float | None, *, now: float | None = None) -> UnitReport:
    now = time.time() if now is None else now
    check = None if p50 is None else ReferenceCheck(now - 1, p50, 100, False)
    return UnitReport(
        unit,
        Activity.IDLE,
        now - 60,
        now,
        stack={"backend": "table"},
        throttled=False,
        throttle_at_unix_s=now - 1,
        reference=check,
    )


# --- the ACL ------------------------------------------------------------------------------------


def test_a_unit_cannot_write_delete_or_release_a_quarantine(site, edge, orchestrator):
    key = quarantine_key("edge.acl")
    entry = QuarantineEntry(QuarantineState.QUARANTINED, "slow", time.time(), "review")
    orchestrator.hset(key, "edge@self", entry.encode())
    released = QuarantineEntry(QuarantineState.RELEASED, "by myself", time.time(), "operator")
    for attempt in (
        lambda: edge.hset(key, "edge@self", released.encode()),
        lambda: edge.hdel(key, "edge@self"),
        lambda: edge.delete(key),
        lambda: edge.set(key, "x"),
        lambda: edge.expire(key, 1),
        lambda: edge.rename(key, "edge.acl:gone"),
        lambda: fleet.release(edge, "edge@self", ["edge.acl"]),
        lambda: edge.hset(quarantine_key("edge"), "edge@other", released.encode()),
    ):
        with pytest.raises(NOPERM):
            attempt()
    assert fleet.quarantined_units(orchestrator, "edge.acl") == {"edge@self": "slow"}
    assert liveness.own_entry(edge, "edge.acl", "edge@self") == entry  # it reads its own
    assert liveness.own_entry(edge, "edge", "edge@nobody") is None


def test_a_unit_writes_its_kinds_reports_which_the_monitor_reads_and_cannot_write(site, edge):
    liveness.publish_report(edge, "edge.acl", unit_report("edge@self", 1.0), time.time())
    with broker.client(site.as_role("monitor")) as monitor:
        read = fleet.read_fleet(monitor, "edge.acl")
        assert list(read.reports) == ["edge@self"]
        assert read.entries_error is not None  # the monitor sees no decisions
        with pytest.raises(NOPERM):
            monitor.hset(liveness.units_key("edge.acl"), "edge@forged", "{}")
    with broker.client(site.as_role("hpc")) as hpc, pytest.raises(NOPERM):
        hpc.hset(liveness.units_key("edge.acl"), "edge@forged", "{}")


# --- hostile reports ----------------------------------------------------------------------------


def test_hostile_reports_never_break_review_devices_or_status(site, edge, orchestrator, capsys):
    queue = "edge.hostile"
    key = liveness.units_key(queue)
    good = unit_report("edge@good", 1.0)
    edge.hset(
        key,
        mapping={
            "edge@good": good.encode(),
            "edge@notjson": "x{",
            "edge@list": "[1, 2]",
            "edge@huge": "x" * 200_000,
            "edge@negative": good.encode().replace('"p50_ms":1.0', '"p50_ms":-3.0'),
            "edge@nan": good.encode().replace('"p50_ms":1.0', '"p50_ms":NaN'),
            "edge@types": good.encode().replace('"measurements":0', '"measurements":"many"'),
            "edge@\x1b[2J\r\nforged": good.encode(),
            b"edge@\xff\xfe": good.encode(),
            "edge@deep": "[" * 2000 + "]" * 2000,
        },
    )
    liveness.publish_report(edge, queue, unit_report("edge@slow", 5.0), time.time())

    decisions = fleet.review(orchestrator, queue)
    assert {u: d.verdict for u, d in decisions.items()} == {
        "edge@good": fleet.Verdict.OK,
        "edge@slow": fleet.Verdict.QUARANTINED,
    }
    read = fleet.read_fleet(orchestrator, queue)
    assert len(read.malformed) == 9 and set(read.reports) == {"edge@good", "edge@slow"}

    capsys.readouterr()
    assert cli(site, "devices", "--json") == 0
    kinds = {k["queue"]: k for k in json.loads(capsys.readouterr().out)["kinds"]}
    shown = kinds[queue]
    assert [u["unit"] for u in shown["units"]] == ["edge@good", "edge@slow"]
    assert [u["status"] for u in shown["units"]] == ["idle", "quarantined"]
    assert len(shown["malformed"]) == 9 and shown["reference_ms"] == 1.0

    assert cli(site, "devices") == 0
    text = capsys.readouterr().out
    assert "kind hostile (queue edge.hostile)" in text and "malformed report" in text
    assert "\x1b" not in text and "\r" not in text and "forged\n" not in text
    assert cli(site, "status") == 0
    assert "kind    hostile      units 2  busy 0  quarantined 1" in capsys.readouterr().out


def test_a_hash_of_many_fields_is_read_only_up_to_the_cap(site, edge, orchestrator):
    queue = "edge.many"
    pipe = edge.pipeline()
    for i in range(fleet.MAX_UNITS + 50):
        pipe.hset(liveness.units_key(queue), f"edge@u{i}", unit_report(f"edge@u{i}", 1.0).encode())
    pipe.execute()
    read = fleet.read_fleet(orchestrator, queue)
    assert len(read.reports) + len(read.malformed) <= fleet.MAX_UNITS
    assert read.left_off >= 50


# --- review, release ------------------------------------------------------------------------


def test_review_records_once_and_a_release_holds_until_newer_evidence(site, edge, orchestrator):
    queue = "edge.review"
    now = time.time()
    for unit, p50 in (("edge@fast", 1.0), ("edge@slow", 2.0)):
        liveness.publish_report(edge, queue, unit_report(unit, p50, now=now), now)

    first = fleet.review(orchestrator, queue, now=now)
    assert (
        first["edge@slow"].verdict is fleet.Verdict.QUARANTINED and not first["edge@slow"].recorded
    )
    assert first["edge@fast"].verdict is fleet.Verdict.OK
    reason = fleet.quarantined_units(orchestrator, queue)["edge@slow"]
    assert "2.00x" in reason and "edge@fast" in reason
    again = fleet.review(orchestrator, queue, now=now + 1)
    assert again["edge@slow"].recorded and fleet.quarantined_units(orchestrator, queue) == {
        "edge@slow": reason
    }

    assert cli(site, "devices", "--release", "edge@slow") == 0
    assert fleet.quarantined_units(orchestrator, queue) == {}
    held = fleet.review(orchestrator, queue)  # the same evidence: forgiven by the release
    assert held["edge@slow"].verdict is fleet.Verdict.OK
    assert cli(site, "devices", "--release", "edge@slow") == 1  # not quarantined any more

    later = time.time() + 5  # a new reference check, still twice as slow
    liveness.publish_report(edge, queue, unit_report("edge@slow", 2.0, now=later), later)
    liveness.publish_report(edge, queue, unit_report("edge@fast", 1.0, now=later), later)
    assert fleet.review(orchestrator, queue, now=later)["edge@slow"].verdict is (
        fleet.Verdict.QUARANTINED
    )


def test_a_review_prunes_reports_of_units_that_left_long_ago(site, edge, orchestrator):
    queue = "edge.pruned"
    old = time.time() - liveness.TTL_S - 10
    liveness.publish_report(edge, queue, unit_report("edge@old", 1.0, now=old), time.time())
    assert fleet.review(orchestrator, queue)["edge@old"].verdict is fleet.Verdict.GONE
    assert fleet.read_fleet(orchestrator, queue).reports == {}


def test_an_illegal_unit_name_to_release_is_one_usage_error(site, capsys):
    assert cli(site, "devices", "--release", "edge@\x1b[2J") == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "is not a Celery hostname" in err


# --- one heartbeat, without a worker -----------------------------------------------------------


class FakeConsumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def cancel_task_queue(self, queue: str) -> None:
        self.calls.append(("cancel", queue))

    def add_task_queue(self, queue: str) -> None:
        self.calls.append(("add", queue))


class FakeHub:
    """The event loop's ``call_soon``: runs what it was handed when the test says so."""

    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, callback) -> None:
        self.ready.append(callback)

    def run(self) -> None:
        while self.ready:
            self.ready.pop(0)()


def beat(queue: str, unit: str, consumer: FakeConsumer, hub: FakeHub) -> liveness.Beat:
    gate = liveness.QuarantineGate(queue, unit, consumer)
    return liveness.Beat([queue], unit, gates=[gate], hub=hub, unit=UnitState())


def test_a_beat_follows_the_units_entry_through_the_event_loop(site, edge, orchestrator):
    queue, unit = "edge.beat", "edge@beat"
    consumer, hub = FakeConsumer(), FakeHub()
    b = beat(queue, unit, consumer, hub)
    b.once(edge, time.time())
    assert hub.ready == [] and liveness.live_workers(orchestrator, [queue])[queue] == [unit]
    entry = QuarantineEntry(QuarantineState.QUARANTINED, "slow", time.time(), "review")
    orchestrator.hset(quarantine_key(queue), unit, entry.encode())
    b.once(edge, time.time())
    assert consumer.calls == []  # nothing touches the consumer outside its own thread
    hub.run()
    assert consumer.calls == [("cancel", queue)]
    b.once(edge, time.time())
    assert fleet.read_fleet(orchestrator, queue).reports[unit].activity is Activity.PAUSED
    assert liveness.live_workers(orchestrator, [queue])[queue] == []  # it serves no more
    assert cli(site, "devices", "--release", unit) == 0
    b.once(edge, time.time())
    hub.run()
    b.once(edge, time.time())
    assert consumer.calls == [("cancel", queue), ("add", queue)]
    assert fleet.read_fleet(orchestrator, queue).reports[unit].activity is Activity.IDLE
    assert liveness.live_workers(orchestrator, [queue])[queue] == [unit]


def test_a_beat_on_a_broker_whose_acl_lacks_the_fleet_keys_says_so_once(site, caplog):
    queue, unit = "edge.oldacl", "edge@old"
    password = "beat-test-password"  # a throwaway user of this test's broker
    with broker.client(site.as_role("admin")) as admin:
        admin.execute_command(
            "ACL",
            "SETUSER",
            "beat-old",
            "on",
            f">{password}",
            "+@all",
            "-@dangerous",
            f"~{liveness.key(queue)}",
            f"~{liveness.KINDS_KEY}",
        )
    settings = site.as_role("edge")
    old = replace(settings, broker=replace(settings.broker, username="beat-old", password=password))
    consumer, hub = FakeConsumer(), FakeHub()
    b = beat(queue, unit, consumer, hub)
    with broker.client(old) as c, caplog.at_level(logging.WARNING, logger="hpc2edge.liveness"):
        for _ in range(3):
            b.once(c, time.time())
        refused = [r.getMessage() for r in caplog.records]
        with broker.client(site.settings) as orchestrator:
            assert liveness.live_workers(orchestrator, [queue])[queue] == [unit]
    assert len(refused) == 2 and all("refuses" in line for line in refused)
    assert hub.ready == [] and consumer.calls == []


# --- real workers -------------------------------------------------------------------------------


def _wait(what: str, condition, timeout_s: float = 30.0, records=()) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for r in records:
            assert procs.alive(r), f"{r.name} died; its log ends:\n{procs.tail(r.log, 30)}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def measure(site: Stack, key: str) -> dict:
    """One hpc2edge.measure of the contract model (recorded in the units' table), batch 1."""
    request = {
        "arch_id": "contract",
        "artifact_key": key,
        "input_shape": [1, 4, 8, 8],
        "batch_sizes": [1],
        "protocol": Protocol.quick().to_json(),
    }
    app = make_app(site.settings)
    try:
        result = app.send_task("hpc2edge.measure", args=[request], queue="edge")
        answer: dict = result.get(timeout=30)
        result.forget()
    finally:
        app.close()
    assert answer["status"] == "ok", answer["error"]
    return answer


def test_a_unit_reporting_twice_as_slow_is_quarantined_stops_and_resumes(site, orchestrator):
    table = Path(site.state_dir) / "fleet-table.json"
    compute = [1.0 + 0.01 * (i % 5) for i in range(64)]
    save_table(
        table, [reference.table_record(compute, [x + 0.2 for x in compute]), *contract_records()]
    )
    env = {"HPC2EDGE_EDGE_BACKEND": "table", "HPC2EDGE_EDGE_TABLE": str(table)}
    fast = start_worker(site, "edge", "edge@fast", extra_env=env)
    slow = start_worker(
        site, "edge", "edge@slow", extra_env={**env, "HPC2EDGE_EDGE_TIME_SCALE": "2"}
    )
    records = (fast, slow)

    def reports() -> dict[str, UnitReport]:
        return fleet.read_fleet(orchestrator, "edge").reports

    def checked(unit: str) -> bool:
        r = reports().get(unit)
        return r is not None and r.reference is not None and r.reference.p50_ms is not None

    try:
        _wait(
            "both units' reference checks",
            lambda: checked("edge@fast") and checked("edge@slow"),
            60,
            records,
        )
        joined = reports()
        assert (
            joined["edge@slow"].time_scale == 2.0
            and joined["edge@slow"].stack["backend"] == "table"
        )
        ratio = joined["edge@slow"].reference.p50_ms / joined["edge@fast"].reference.p50_ms
        assert ratio == pytest.approx(2.0)

        decisions = fleet.review(orchestrator, "edge")
        assert decisions["edge@fast"].verdict is fleet.Verdict.OK
        assert decisions["edge@slow"].verdict is fleet.Verdict.QUARANTINED

        _wait(
            "the slow unit to stop consuming",
            lambda: reports()["edge@slow"].activity is Activity.PAUSED,
            20,
            records,
        )
        assert liveness.live_workers(orchestrator, ["edge"])["edge"] == ["edge@fast"]
        for _ in range(3):
            assert probes.ping(site.settings, "edge", timeout_s=10)["hostname"] == "edge@fast"
        key = RedisArtifactStore(orchestrator).put(contract_model().onnx_bytes)
        assert measure(site, key)["worker"] == "edge@fast"
        log = Path(slow.log).read_text()
        assert log.count("edge@slow is quarantined (by review: reference 2") == 1

        assert cli(site, "devices", "--release", "edge@slow") == 0
        _wait(
            "the slow unit to resume",
            lambda: reports()["edge@slow"].activity is Activity.IDLE,
            20,
            records,
        )
        # It consumes its queue again, and its measurements are twice as slow too.
        p50 = {}
        for _ in range(12):
            result = measure(site, key)
            p50[result["worker"]] = result["latency_ms_p50"]["1"]
            if len(p50) == 2:
                break
        assert p50["edge@slow"] == pytest.approx(2.0 * p50["edge@fast"])
        _wait("the measurement counted", lambda: reports()["edge@slow"].measurements >= 1, 10)
        assert (
            "edge@slow was released from quarantine: consuming edge again"
            in Path(slow.log).read_text()
        )
    finally:
        for r in records:
            procs.stop(r)
    offline = reports()
    assert {offline[u].activity for u in ("edge@fast", "edge@slow")} == {Activity.OFFLINE}
