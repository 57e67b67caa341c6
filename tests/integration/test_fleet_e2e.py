"""Acceptance: one study over three device kinds, two of them recorded, one real.

As a user runs it, in a fresh folder: ``hpc2edge up --edge orin=table:table=orin.json --edge
nano=table:table=nano.json --edge cpu=onnxruntime:threads=1`` (a real TLS broker, one real
``celery worker`` per unit), then ``hpc2edge search --device orin --device nano --device cpu
--json`` as a subprocess, then ``hpc2edge down``.

The two table kinds replay recordings keyed by ONNX sha256, so the test knows every latency in
advance: it exports the architectures it will enqueue exactly as the search does (same export
seed) and records a latency per model, ``nano`` at three times ``orin``. The two tables have the
same number of records, so the two kinds' backends have the same fingerprint: only the device
kind keeps their measurements apart. The ``cpu`` kind measures with ONNX Runtime for real.

``--no-baseline``: the baseline is not an Optuna trial (it cannot be enqueued) and the cnn3d
baseline is a 1.1 M-parameter network whose training alone would take minutes of this 2-core
machine; the table assertions are about trials, and the baseline's measurement on every kind is
the same code path as a trial's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from hpc2edge.latency import reference  # noqa: E402
from hpc2edge.latency.backends.table import Record, save_table  # noqa: E402
from hpc2edge.roles import kind_of_queue  # noqa: E402
from hpc2edge.search import candidate as cand  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.search.objectives import Objective  # noqa: E402
from hpc2edge.search.runconfig import Pinned, SearchConfig  # noqa: E402
from hpc2edge.space import get_space  # noqa: E402
from hpc2edge.store.measurements import MeasurementStore  # noqa: E402
from hpc2edge.testing.training import make_tiny_data  # noqa: E402
from hpc2edge.transport.taskids import queue_of  # noqa: E402
from hpc2edge.util import net  # noqa: E402
from tests.conftest import _require_redis_server  # noqa: E402
from tests.integration.test_search_e2e import executed, mark  # noqa: E402

# The whole module shares one stack and two searches (a few minutes on a loaded 2-core machine:
# the trainings, four in the first study and two in the second, dominate); the first test pays
# for the stack and the first study.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

PIN = {"frames": 8, "size": 41}  # the demo's pin (cli.search.DEMO_PIN)
ONE_BLOCK = {"n_blocks": 1, "block1_channels": 8, "block1_kernel_t": 1, "block1_kernel_s": 3,
             "downsample": "pool", "batch_norm": False, "activation": "relu", "head_width": 32,
             "head_layers": 1}  # fmt: skip
#: Four small, distinct networks and the latency (ms) ``orin`` is recorded at for each.
POINTS = [
    ({**ONE_BLOCK, "block1_channels": 8, "block1_kernel_s": 3}, 2.0),
    ({**ONE_BLOCK, "block1_channels": 8, "block1_kernel_s": 5}, 3.0),
    ({**ONE_BLOCK, "block1_channels": 16, "block1_kernel_s": 3}, 4.0),
    ({**ONE_BLOCK, "block1_channels": 16, "block1_kernel_s": 5}, 5.0),
]
NANO_FACTOR = 3.0  # nano is recorded at 3x orin: 6, 9, 12, 15 ms, none of them an orin figure
#: The second study asks for two of the first study's networks: reuse on every kind, never
#: crossing kinds, is the same per network, and each trial is a training of its own.
AGAIN = POINTS[1:3]
KINDS = ("orin", "nano", "cpu")
SEARCH_ARGS = ["--frames", "8", "--size", "41", "--protocol",
               "quick", "--epochs", "1", "--lr", "0.01", "--engine", "single", "--test-fraction",
               "0.25", "--sampler", "random", "--seed", "0", "--no-baseline", "--log-format",
               "plain", "--wait-workers", "60", "--json"]  # fmt: skip


def spread(median_ms: float) -> list[float]:
    """Samples around ``median_ms`` whose median, however many of them a run replays, is it."""
    return [median_ms * f for f in (0.97, 1.0, 1.03)]


@dataclass(frozen=True)
class Model:
    params: dict[str, Any]
    arch_id: str
    onnx_sha256: str
    latency_ms: dict[str, float]  # by recorded kind: the median the table replays


@dataclass
class Fleet:
    folder: Path
    env: dict[str, str]
    models: list[Model]
    data: Path

    @property
    def state(self) -> Path:
        return self.folder / ".hpc2edge"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.state / 'search.db'}"

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.state / 'measurements.db'}"

    def log(self, kind: str) -> Path:
        return self.state / "logs" / f"worker-edge.{kind}.log"

    def by_sha(self, sha: str) -> Model:
        return next(m for m in self.models if m.onnx_sha256 == sha)


def hpc2edge(fleet_: Fleet, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpc2edge.cli", *args],
        cwd=fleet_.folder,
        env=fleet_.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def export_models(folder: Path) -> list[Model]:
    """The networks of :data:`POINTS` exported as the search exports them, and their tables."""
    space = get_space("cnn3d")
    seed = SearchConfig(trials=1).export_seed  # what `hpc2edge search` exports with
    models: list[Model] = []
    records: dict[str, list[Record]] = {"orin": [], "nano": []}
    for params, orin_ms in POINTS:
        spec = space.validate(space.suggest(Pinned(optuna.trial.FixedTrial(params), PIN)))
        c = cand.build(spec, seed=seed)
        outputs = tuple(c.reference["outputs"])  # the device checks its outputs against these
        latency = {"orin": orin_ms, "nano": NANO_FACTOR * orin_ms}
        for kind, ms in latency.items():
            compute = tuple(spread(ms))
            end_to_end = tuple(x + 0.2 for x in compute)
            records[kind].append(Record(c.onnx_sha256, "fp32", 1, compute, end_to_end, outputs))
        models.append(Model(params, spec.arch_id, c.onnx_sha256, latency))
    assert len({m.onnx_sha256 for m in models}) == len(models), "distinct networks"
    for kind, recs in records.items():
        # The reference model too, so each unit's reference check has a figure (fleet reports).
        ref = reference.table_record(spread(0.5), spread(0.7))
        save_table(folder / f"{kind}.json", [*recs, ref])
    return models


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    _require_redis_server()
    folder = tmp_path_factory.mktemp("fleet-e2e")
    data = folder / "data"
    make_tiny_data(data)
    models = export_models(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC2EDGE_")}
    env["HPC2EDGE_BROKER_PORT"] = str(net.free_port())
    f = Fleet(folder, env, models, data)
    try:
        up = hpc2edge(
            f, "up", "--timeout", "120",
            "--edge", f"orin=table:table={folder / 'orin.json'}",
            "--edge", f"nano=table:table={folder / 'nano.json'}",
            "--edge", "cpu=onnxruntime:threads=1",
            timeout=400,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        yield f
    finally:
        down = hpc2edge(f, "down", timeout=120)
        assert down.returncode == 0, down.stderr


def enqueue(fleet_: Fleet, study_name: str, points: list[tuple[dict[str, Any], float]]) -> None:
    """The study with ``points`` waiting in it: the search's asks hand them out."""
    objective = Objective("pareto")
    sampler = st.make_sampler("random", objective, seed=0, trials=len(points))
    study = st.open_study(study_name, fleet_.storage_url, objective, sampler)
    for params, _ in points:
        study.enqueue_trial(params)


@dataclass
class Run:
    out: dict[str, Any]  # the `--json` summary
    study: Any
    measured: dict[str, list[str]]  # kind -> measure task ids its unit's log says it ran


def search(
    fleet_: Fleet,
    study_name: str,
    devices: tuple[str, ...],
    points: list[tuple[dict[str, Any], float]] = POINTS,
) -> Run:
    enqueue(fleet_, study_name, points)
    since = {k: mark(fleet_.log(k)) for k in KINDS}
    argv = ["search", "--study", study_name, "--data", str(fleet_.data), *SEARCH_ARGS]
    argv += ["--trials", str(len(points))]
    for kind in devices:
        argv += ["--device", kind]
    done = hpc2edge(fleet_, *argv, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return Run(
        out=json.loads(done.stdout),
        study=optuna.load_study(study_name=study_name, storage=st.storage(fleet_.storage_url)),
        measured={k: executed(fleet_.log(k), "measure", since[k]) for k in KINDS},
    )


@pytest.fixture(scope="module")
def first(fleet: Fleet) -> Run:
    return search(fleet, "fleet", ("orin", "nano", "cpu"))


@pytest.fixture(scope="module")
def again(fleet: Fleet, first: Run) -> Run:
    # nano first this time: the objective is nano's latency, and it must come from nano's rows.
    return search(fleet, "fleet-again", ("nano", "orin", "cpu"), AGAIN)


def test_every_trial_completes_with_each_kinds_recorded_latency(fleet: Fleet, first: Run) -> None:
    out, study = first.out, first.study
    reasons = [t.user_attrs.get("reason") for t in study.trials]
    assert out["trials"] == out["complete"] == len(POINTS), reasons
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * len(POINTS)
    sent = out["tasks_sent"]
    assert {k: sent[k] for k in ("measure", "measure_nano", "train")} == {
        "measure": 4, "measure_nano": 4, "train": 4
    }  # fmt: skip
    # ONNX Runtime on a loaded CPU may end a series by its time cap with a wide CI: such a
    # measurement is sent again (stages.Unstable), so the cpu kind may have sent a few more.
    assert sent["measure_cpu"] >= 4
    for t in study.trials:
        a = t.user_attrs
        model = fleet.by_sha(a["onnx_sha256"])
        assert a["arch_id"] == model.arch_id
        assert t.params == {**model.params}  # the enqueued point, not a sampled one
        assert a["latency_ms"] == pytest.approx(model.latency_ms["orin"], rel=1e-12)
        assert a["latency_ms@nano"] == pytest.approx(model.latency_ms["nano"], rel=1e-12)
        assert t.values == [a["val_mse"], a["latency_ms"]]  # the objective is orin's
        assert a["latency_ms@cpu"] > 0  # real ONNX Runtime on this CPU, whatever it is
        for summary, kind in (("latency", "orin"), ("latency@nano", "nano"),
                              ("latency@cpu", "cpu")):  # fmt: skip
            s = a[summary]
            assert s["kind"] == kind and s["cached"] is False
            assert s["worker"].startswith(f"edge.{kind}@"), s["worker"]
            assert s["backend"] == ("onnxruntime" if kind == "cpu" else "table")
    # What each kind's unit says it ran is exactly what the study sent to that kind.
    task_ids = {
        "orin": [t.user_attrs["measure_task"]["id"] for t in study.trials],
        "nano": [t.user_attrs["measure_nano_task"]["id"] for t in study.trials],
        "cpu": [t.user_attrs["measure_cpu_task"]["id"] for t in study.trials],
    }
    for kind in ("orin", "nano"):
        assert sorted(first.measured[kind]) == sorted(task_ids[kind]), kind
    assert set(task_ids["cpu"]) <= set(first.measured["cpu"])
    assert len(first.measured["cpu"]) == sent["measure_cpu"]
    for kind in KINDS:
        assert all(queue_of(i) == f"edge.{kind}" for i in first.measured[kind])


def test_json_has_a_front_per_kind(fleet: Fleet, first: Run) -> None:
    out = first.out
    assert out["front_rows"], "the objective's kind (orin) has a front"
    assert set(out["fronts_by_kind"]) == {"nano", "cpu"}
    by_trial = {t.number: t for t in first.study.trials}
    for kind in ("nano", "cpu"):
        rows = out["fronts_by_kind"][kind]
        assert rows, kind
        for row in rows:
            assert row["latency_ms"] == by_trial[row["trial"]].user_attrs[f"latency_ms@{kind}"]
    # nano is orin x 3 for every network: the same trials are on both fronts.
    assert {r["trial"] for r in out["fronts_by_kind"]["nano"]} == {
        r["trial"] for r in out["front_rows"]
    }


def test_the_store_keeps_each_kind_apart(fleet: Fleet, first: Run) -> None:
    store = MeasurementStore(fleet.store_url)
    try:
        rows = store.measurements()
    finally:
        store.close()
    assert len(rows) == len(KINDS) * len(POINTS)
    per_kind: dict[str, list[Any]] = {k: [] for k in KINDS}
    for row in rows:
        queue = queue_of(str(row.task_id).split("#")[0])
        kind = kind_of_queue(queue)
        assert kind in KINDS, row.task_id
        # The row's result says the kind of the queue its task went to, and a unit of it ran it.
        assert row.results["kind"] == kind and row.device_name == kind
        assert row.results["worker"].startswith(f"{queue}@")
        per_kind[kind].append(row)
    for kind in ("orin", "nano"):
        other = "nano" if kind == "orin" else "orin"
        foreign = {m.latency_ms[other] for m in fleet.models}
        for row in per_kind[kind]:
            model = fleet.by_sha(row.results["onnx_sha256"])
            assert row.latency_ms == pytest.approx(model.latency_ms[kind], rel=1e-12)
            assert row.latency_ms not in foreign, f"a {kind} row with {other}'s numbers"
    assert {len(v) for v in per_kind.values()} == {len(POINTS)}


def test_a_second_study_reuses_each_kinds_measurements_and_never_crosses(
    fleet: Fleet, first: Run, again: Run
) -> None:
    out, study = again.out, again.study
    assert out["complete"] == len(AGAIN), [t.user_attrs.get("reason") for t in study.trials]
    asked = {fleet.by_sha(t.user_attrs["onnx_sha256"]).arch_id for t in study.trials}
    assert asked == {m.arch_id for m in fleet.models if m.params in [p for p, _ in AGAIN]}
    sent = out["tasks_sent"]
    assert sent["measure"] == sent["measure_orin"] == 0
    assert out["measurements_reused"] == len(AGAIN)
    assert again.measured["orin"] == again.measured["nano"] == [], "no table unit measured"
    # A cpu measurement the first study kept flagged unstable is measured again (the store
    # never stands in with one); every stable one is reused.
    again_sha = {t.user_attrs["onnx_sha256"] for t in study.trials}
    unstable_cpu = {
        f.user_attrs["onnx_sha256"] for f in first.study.trials
        if f.user_attrs["latency@cpu"].get("unstable") and f.user_attrs["onnx_sha256"] in again_sha
    }  # fmt: skip
    assert len(again.measured["cpu"]) == sent["measure_cpu"]
    assert (sent["measure_cpu"] == 0) == (not unstable_cpu)
    store = MeasurementStore(fleet.store_url)
    try:
        rows = {r.id: r for r in store.measurements()}
    finally:
        store.close()
    for kind in ("orin", "nano"):
        assert sum(r.device_name == kind for r in rows.values()) == len(POINTS), "none new"
    for t in study.trials:
        a = t.user_attrs
        model = fleet.by_sha(a["onnx_sha256"])
        # nano is the objective now: its latency is nano's recording, from nano's row.
        assert a["latency_ms"] == pytest.approx(model.latency_ms["nano"], rel=1e-12)
        assert a["latency_ms@orin"] == pytest.approx(model.latency_ms["orin"], rel=1e-12)
        assert t.values == [a["val_mse"], a["latency_ms"]]
        first_cpu = next(
            f.user_attrs["latency_ms@cpu"]
            for f in first.study.trials
            if f.user_attrs["onnx_sha256"] == a["onnx_sha256"]
        )
        reused = ["latency", "latency@orin"]
        if a["onnx_sha256"] not in unstable_cpu:
            assert a["latency_ms@cpu"] == first_cpu
            reused.append("latency@cpu")
        for summary in reused:
            s = a[summary]
            kind = summary.partition("@")[2] or "nano"
            assert s["cached"] is True, (summary, s)
            row = rows[s["measurement_id"]]
            assert row.results["kind"] == kind and row.device_name == kind
            assert row.results["onnx_sha256"] == a["onnx_sha256"]
