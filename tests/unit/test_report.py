"""``hpc2edge report`` and ``hpc2edge dashboard`` on a study finished here.

The study is real (Optuna on SQLite, the measurement store, ONNX export) and run by the
orchestrator over the inline dispatcher with the doubles of ``hpc2edge.testing.fakes``: pareto
with a latency budget (some trials pruned), the baseline on, one training that fails with a
reason full of HTML. The tests read the page back (its tables carry every number unrounded in
``data-value``) and compare it with the study's attributes, with ratios recomputed here.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")
pytest.importorskip("matplotlib")

from hpc2edge.cli import main  # noqa: E402
from hpc2edge.search import candidate as cand  # noqa: E402
from hpc2edge.search import study as st  # noqa: E402
from hpc2edge.search.dispatch import InlineDispatcher  # noqa: E402
from hpc2edge.search.objectives import Objective, hypervolume_2d  # noqa: E402
from hpc2edge.search.orchestrator import Orchestrator, SearchConfig, front_trials  # noqa: E402
from hpc2edge.space import get_space  # noqa: E402
from hpc2edge.space.base import ArchSpec, TrainingHParams  # noqa: E402
from hpc2edge.store.artifacts import DirectoryArtifactStore  # noqa: E402
from hpc2edge.store.measurements import MeasurementStore  # noqa: E402
from hpc2edge.testing.fakes import FakeClock, FakeEdge, FakeTrainer  # noqa: E402
from hpc2edge.util.net import free_port  # noqa: E402

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
STUDY = "rep"
BUDGET_MS = 0.9  # about half of this space's fake latencies at 8 x 41 x 41 are over it
EVIL = 'loss went <script>alert("x")</script> & <b>NaN</b>'
FAKE_CONSTANT = 0.05  # FakeTrainer's val_mse_constant
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Built:
    tmp: Path
    url: str
    store_url: str
    study: Any
    sent: list[tuple[str, str, dict[str, Any]]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    st.quiet_optuna()
    tmp = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{tmp / 'search.db'}"
    store_url = f"sqlite:///{tmp / 'measurements.db'}"
    store = MeasurementStore(store_url)
    artifacts = DirectoryArtifactStore(tmp / "artifacts")
    trainer = FakeTrainer()
    space = get_space("cnn3d")
    baseline_id = space.baseline().with_input(8, 41).arch_id
    failed: list[str] = []

    def train(payload: dict[str, Any]) -> dict[str, Any]:
        arch_id = ArchSpec.from_dict(payload["spec"]).arch_id
        if arch_id != baseline_id and (not failed or failed[0] == arch_id):
            failed.append(arch_id)  # the first candidate trained fails, with HTML in its reason
            return {"status": "error", "error": {"type": "TrainingError", "message": EVIL}}
        result = trainer(payload)
        if trainer.calls % 2:  # a test split on some of them
            mse = result["val_mse"] * 1.25
            result["test"] = {"mse": mse, "rmse": mse**0.5, "rmse_speed_mm_s": mse**0.5 * 900,
                              "rmse_power_w": mse**0.5 * 215, "samples": 7}  # fmt: skip
        return result

    dispatcher = InlineDispatcher({"measure": FakeEdge(artifacts), "train": train}, artifacts)
    objective = Objective("pareto", BUDGET_MS)
    study = st.open_study(
        STUDY, url, objective, st.make_sampler("random", objective, seed=1, trials=14)
    )
    Orchestrator(
        study,
        dispatcher,
        space,
        objective,
        store,
        cand.TrainPlan(("/data/x.hdf5",), TrainingHParams(), epochs=1),
        SearchConfig(trials=14, parallel=2, pin={"frames": 8, "size": 41}, baseline=True),
        clock=FakeClock(),
    ).run()
    store.close()
    return Built(tmp, url, store_url, st.load_study(STUDY, url), list(dispatcher.sent))


# --- reading the page back --------------------------------------------------------------------


class Tables(HTMLParser):
    """Rows of every ``<table id=...>``: ``{data-key: json value}``, plus ``_trial`` and the
    visible text of each cell in ``_text``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.imgs: list[str] = []
        self._table: list[dict[str, Any]] | None = None
        self._row: dict[str, Any] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(str(a["id"]), [])
        elif tag == "tr" and self._table is not None:
            self._row = {"_trial": a.get("data-trial"), "_text": {}}
        elif tag == "td" and self._row is not None and a.get("data-key"):
            self._cell = str(a["data-key"])
            self._row[self._cell] = json.loads(str(a["data-value"]))
            self._row["_text"][self._cell] = ""
        elif tag == "img":
            self.imgs.append(str(a.get("src")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if len(self._row) > 2:  # a header row has no data cells
                self._table.append(self._row)
            self._row = None
        elif tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None and self._row is not None:
            self._row["_text"][self._cell] += data


@pytest.fixture(scope="module")
def rendered(built: Built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("out") / "report"
    rc, stdout, stderr = _main(
        [
            "report",
            "--study",
            STUDY,
            "--storage",
            built.url,
            "--store",
            built.store_url,
            "--out",
            str(out),
            "--json",
        ],
        built.tmp,
    )
    assert rc == 0, stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    parser = Tables()
    parser.feed(page)
    return {"out": out, "html": page, "tables": parser.tables, "imgs": parser.imgs,
            "json": json.loads(stdout)}  # fmt: skip


def _main(argv: list[str], tmp: Path) -> tuple[int, str, str]:
    """``hpc2edge ARGV`` in this process, with stdout and stderr captured."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    env = {"HPC2EDGE_STATE_DIR": str(tmp / "state")}
    old = {k: os.environ.get(k) for k in (*env, "HPC2EDGE_CONFIG")}
    os.environ.update(env)
    os.environ.pop("HPC2EDGE_CONFIG", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue(), err.getvalue()


def _by_trial(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["_trial"]): r for r in rows}


# --- the report -------------------------------------------------------------------------------


def test_the_study_has_what_the_report_must_show(built: Built) -> None:
    states = [t.state.name for t in built.study.trials]
    assert states.count("PRUNED") >= 1 and states.count("FAIL") == 1
    assert len(front_trials(built.study)) >= 2
    assert built.study.user_attrs["baseline"]["state"] == "complete"


def test_front_rows_equal_the_study_with_ratios_against_the_baseline(
    built: Built, rendered: dict[str, Any]
) -> None:
    base = built.study.user_attrs["baseline"]
    rows = _by_trial(rendered["tables"]["front"])
    front = front_trials(built.study)
    # The constant predictor, the baseline, then the front by rising latency.
    assert list(rows) == ["constant", "baseline"] + [str(t.number) for t in front]
    assert rows["constant"]["val_mse"] == FAKE_CONSTANT
    for t in front:
        a, row = t.user_attrs, rows[str(t.number)]
        assert row["trial"] == t.number
        assert row["arch_id"] == a["arch_id"] and row["_text"]["arch_id"] == a["arch_id"][:12]
        assert row["params"] == a["params"] and row["flops"] == a["flops"]
        assert row["latency_ms"] == a["latency_ms"] == t.values[1]
        assert row["val_mse"] == a["val_mse"] == t.values[0]
        assert row["p90_ms"] == a["latency"]["p90_ms"]
        assert row["ci95_ms"] == a["latency"]["ci95_ms"]
        assert row["test_mse"] == (a["train"]["test"] or {}).get("mse")
        assert row["rmse_speed_mm_s"] == a["train"]["val_rmse_speed_mm_s"]
        assert row["rmse_power_w"] == a["train"]["val_rmse_power_w"]
        assert row["input"] == [8, 41, 41]
        assert row["speedup"] == pytest.approx(base["latency_ms"] / a["latency_ms"], rel=1e-12)
        assert row["loss_ratio"] == pytest.approx(base["val_mse"] / a["val_mse"], rel=1e-12)
        assert row["_text"]["speedup"] == f"{base['latency_ms'] / a['latency_ms']:.2f}×"
        assert row["_text"]["latency_ms"] == f"{a['latency_ms']:.3f}"
    assert any(rows[str(t.number)]["test_mse"] is not None for t in front) or all(
        t.user_attrs["train"]["test"] is None for t in front
    )
    # The speed-up of each front member is its paired measurement's (the fake device is
    # noise-free: the same ratio as the unpaired one); report.json says so.
    paired = built.study.user_attrs["paired"]
    for r in rendered["json"]["front"]:
        rec = paired[str(r["trial"])]
        assert rec["state"] == "ok" and r["speedup_source"] == "paired"
        assert r["speedup"] == rec["speedup"] and r["speedup_ci95"] == rec["ci95"]
        assert r["speedup_unpaired"] == pytest.approx(r["speedup"], rel=1e-12)
    assert rendered["json"]["baseline"]["speedup_source"] == "unpaired"
    b = rows["baseline"]
    assert b["arch_id"] == base["arch_id"] and b["latency_ms"] == base["latency_ms"]
    assert b["val_mse"] == base["val_mse"] and b["speedup"] == b["loss_ratio"] == 1.0
    # The varying parameters are shown; the fixed input channels are not.
    assert "channels" in rows["baseline"]["key_params"]
    assert "in_chans" not in rows["baseline"]["key_params"]


def test_counts_equal_the_study(built: Built, rendered: dict[str, Any]) -> None:
    counts = {k: v for row in rendered["tables"]["counts"] for k, v in row.items() if k[0] != "_"}
    states = [t.state.name for t in built.study.trials]
    # Task ids are random: the baseline's are the ones its record holds (one attempt each).
    baseline = built.study.user_attrs["baseline"]
    baseline_ids = {(baseline.get(f"{k}_task") or {}).get("id") for k in ("measure", "train")}
    # Paired tasks, sent after the search (one per front member), are no trial's attempts.
    trial_tasks = [s for s in built.sent if s[1] not in baseline_ids and "pair" not in s[2]]
    paired = [s for s in built.sent if "pair" in s[2]]
    assert len(paired) == len(front_trials(built.study))
    assert counts["trials"] == len(states) == 14
    assert counts["complete"] == states.count("COMPLETE")
    assert counts["pruned"] == states.count("PRUNED")
    assert counts["failed"] == states.count("FAIL") == 1
    assert counts["running"] == 0
    assert counts["front"] == len(front_trials(built.study))
    assert counts["tasks_sent.measure"] == sum(1 for k, _, _ in trial_tasks if k == "measure")
    assert counts["tasks_sent.train"] == sum(1 for k, _, _ in trial_tasks if k == "train")
    assert counts["duplicates"] == sum(
        1 for t in built.study.trials if "duplicate_of" in t.user_attrs
    )
    assert counts["measurements_reused"] == 0


def test_reasons_are_shown_and_escaped(built: Built, rendered: dict[str, Any]) -> None:
    page = rendered["html"]
    assert "<script" not in page and "<b>NaN" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    failed = _by_trial(rendered["tables"]["failed"])
    (t,) = [t for t in built.study.trials if t.state.name == "FAIL"]
    assert t.user_attrs["reason"] == f"train: TrainingError: {EVIL}"
    assert failed[str(t.number)]["_text"]["reason"] == t.user_attrs["reason"]
    assert failed[str(t.number)]["latency_ms"] == t.user_attrs["latency_ms"]
    pruned = _by_trial(rendered["tables"]["pruned"])
    expected = {str(t.number): t for t in built.study.trials if t.state.name == "PRUNED"}
    assert set(pruned) == set(expected)
    for number, t in expected.items():
        assert pruned[number]["reason"] == t.user_attrs["reason"]
        assert "over the latency budget" in pruned[number]["_text"]["reason"]
        assert pruned[number]["latency_ms"] == t.user_attrs["latency_ms"] > BUDGET_MS


def test_hypervolume_has_a_fixed_stated_reference(built: Built, rendered: dict[str, Any]) -> None:
    hv = rendered["json"]["hypervolume"]
    feasible = [
        (t.values[0], t.values[1])
        for t in built.study.trials
        if t.state.name == "COMPLETE" and t.user_attrs["constraint_latency_ms"] <= 0
    ]
    reference = (1.1 * max(p[0] for p in feasible), BUDGET_MS)
    assert (hv["reference"]["val_mse"], hv["reference"]["latency_ms"]) == pytest.approx(reference)
    assert [p["trial"] for p in hv["series"]] == list(range(14))
    values = [p["hypervolume"] for p in hv["series"]]
    assert values == sorted(values) and values[-1] > 0
    assert hv["final"] == pytest.approx(hypervolume_2d(feasible, reference))
    assert f"val MSE {reference[0]:.6g}, latency {reference[1]:.6g} ms" in rendered["html"]


def test_a_given_hypervolume_reference_is_used_and_checked(built: Built, tmp_path: Path) -> None:
    argv = ["report", "--study", STUDY, "--storage", built.url, "--out", str(tmp_path), "--json"]
    rc, out, _ = _main([*argv, "--hv-reference", "0.05,2"], built.tmp)
    hv = json.loads(out)["hypervolume"]
    assert rc == 0 and hv["reference"] == {"val_mse": 0.05, "latency_ms": 2.0}
    assert hv["rule"] == "given with --hv-reference"
    rc, _, err = _main([*argv, "--hv-reference", "0.05"], built.tmp)
    assert rc == 2 and "VAL_MSE,LATENCY_MS" in err


def test_devices_and_measurement_context_come_from_the_store(
    built: Built, rendered: dict[str, Any]
) -> None:
    (device,) = rendered["tables"]["devices"]
    assert device["hostname"] == "fake-orin" and device["device_model"] == "Fake AGX Orin"
    assert device["versions"]["onnxruntime"] == "1.0-fake"
    measured = {
        t.user_attrs["latency"]["measurement_id"]
        for t in built.study.trials
        if "latency" in t.user_attrs
    } | {built.study.user_attrs["baseline"]["latency"]["measurement_id"]}
    assert device["measurements"] == len(measured)
    (ctx,) = rendered["tables"]["contexts"]
    assert ctx["backend"] == "fake" and ctx["precision"] == "fp32" and ctx["batch_size"] == 1
    assert ctx["backend_fingerprint"] == {"backend": "fake", "version": "1"}
    assert ctx["measurements"] == len(measured) and ctx["throttled"] == 0


def test_pngs_are_written_and_linked(rendered: dict[str, Any]) -> None:
    out: Path = rendered["out"]
    assert sorted(rendered["imgs"]) == ["hypervolume.png", "params.png", "pareto.png"]
    for name in rendered["imgs"]:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
    assert not any(p.suffix not in (".png", ".html", ".json") for p in out.iterdir())


def test_json_has_the_same_numbers_as_the_page(rendered: dict[str, Any]) -> None:
    report = rendered["json"]
    assert json.loads((rendered["out"] / "report.json").read_text()) == report
    rows = _by_trial(rendered["tables"]["front"])
    assert [str(r["trial"]) for r in report["front"]] == list(rows)[2:]
    for r in [report["baseline"], *report["front"]]:
        row = rows["baseline" if r["trial"] is None else str(r["trial"])]
        for key in ("arch_id", "params", "flops", "latency_ms", "p90_ms", "ci95_ms", "val_mse",
                    "test_mse", "rmse_speed_mm_s", "rmse_power_w", "speedup", "loss_ratio",
                    "key_params", "input"):  # fmt: skip
            assert row[key] == r[key], key
    assert rows["constant"]["val_mse"] == report["constant_predictor"]["val_mse"]
    counts = {k: v for row in rendered["tables"]["counts"] for k, v in row.items() if k[0] != "_"}
    c = report["counts"]
    assert counts == {**{k: v for k, v in c.items() if k != "tasks_sent"},
                      "tasks_sent.measure": c["tasks_sent"]["measure"],
                      "tasks_sent.train": c["tasks_sent"]["train"]}  # fmt: skip
    failed = {t["trial"]: t["reason"] for t in report["trials"] if t["state"] == "failed"}
    assert {int(k): v["reason"] for k, v in _by_trial(rendered["tables"]["failed"]).items()} == (
        failed
    )


def test_search_front_table_keeps_its_columns_and_ratios(built: Built) -> None:
    from hpc2edge.cli.search import front_table

    base = built.study.user_attrs["baseline"]
    rows, text = front_table(built.study, base)
    expected = []
    for t in front_trials(built.study):
        a = t.user_attrs
        expected.append({
            "trial": t.number, "arch_id": a["arch_id"], "params": a["params"],
            "latency_ms": a["latency_ms"], "p90_ms": a["latency"]["p90_ms"],
            "val_mse": a["val_mse"], "rmse_speed_mm_s": a["train"]["val_rmse_speed_mm_s"],
            "rmse_power_w": a["train"]["val_rmse_power_w"],
            "speedup": base["latency_ms"] / a["latency_ms"],
            "loss_ratio": base["val_mse"] / a["val_mse"],
            "unstable": a["latency"].get("unstable"),
            "val_mse_constant": FAKE_CONSTANT,
            "no_better_than_constant": a["val_mse"] >= FAKE_CONSTANT,
        })  # fmt: skip
    assert rows == expected
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["mean", "(constant)", "-"]
    assert lines[1].split()[5] == f"{FAKE_CONSTANT:.5f}"
    assert lines[2].split()[0] == "base"
    legend = any(r["no_better_than_constant"] for r in rows)
    assert len(lines) == len(rows) + 3 + legend


def test_unknown_study_is_one_clear_line(built: Built, tmp_path: Path) -> None:
    rc, out, err = _main(
        ["report", "--study", "nope", "--storage", built.url, "--out", str(tmp_path / "r")],
        built.tmp,
    )
    assert rc != 0 and out == ""
    assert err.strip().count("\n") == 0 and "no study 'nope'" in err and STUDY in err
    assert not (tmp_path / "r").exists()


def test_missing_storage_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    rc, _, err = _main(
        ["report", "--study", "x", "--storage", f"sqlite:///{db}", "--out", str(tmp_path)],
        tmp_path,
    )
    assert rc == 1 and "no study storage at" in err and not db.exists()


def test_a_study_without_a_front_or_baseline_renders(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    artifacts = DirectoryArtifactStore(tmp_path / "artifacts")
    broken = {"status": "error", "error": {"type": "TrainingError", "message": "OOM"}}
    dispatcher = InlineDispatcher({"measure": FakeEdge(artifacts), "train": lambda p: broken},
                                  artifacts)  # fmt: skip
    objective = Objective("paper")
    study = st.open_study("none", url, objective, st.make_sampler("random", objective, seed=0,
                                                                   trials=2))  # fmt: skip
    store = MeasurementStore(f"sqlite:///{tmp_path / 'm.db'}")
    Orchestrator(study, dispatcher, get_space("cnn3d"), objective, store,
                 cand.TrainPlan(("/x.hdf5",), TrainingHParams(), epochs=1),
                 SearchConfig(trials=2, parallel=1, pin={"frames": 8, "size": 41}, baseline=False),
                 clock=FakeClock()).run()  # fmt: skip
    store.close()
    out = tmp_path / "out"
    rc, stdout, err = _main(
        ["report", "--study", "none", "--storage", url, "--out", str(out), "--json"], tmp_path
    )
    assert rc == 0, err
    report = json.loads(stdout)
    assert report["front"] == [] and report["baseline"] is None
    assert report["hypervolume"]["reference"] is None and report["counts"]["failed"] == 2
    # No store at the default place: the context comes from the trials' own summaries.
    assert report["measurement_context"]["source"] == "trials"
    page = (out / "report.html").read_text()
    parser = Tables()
    parser.feed(page)
    assert 'id="front-empty"' in page and "front" not in parser.tables
    reasons = [r["_text"]["reason"] for r in parser.tables["failed"]]
    assert reasons == ["train: TrainingError: OOM"] * 2
    for name in ("pareto.png", "hypervolume.png", "params.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


# --- models no better than the constant predictor --------------------------------------------


def _study_with_constant(tmp: Path, constant: float, trials: int = 8) -> tuple[Any, str]:
    """A finished study (baseline on) whose trainings all report ``constant`` as the constant
    predictor's val MSE; returns (study, storage URL)."""
    url = f"sqlite:///{tmp / 'search.db'}"
    artifacts = DirectoryArtifactStore(tmp / "artifacts")
    trainer = FakeTrainer()

    def train(payload: dict[str, Any]) -> dict[str, Any]:
        return {**trainer(payload), "val_mse_constant": constant}

    dispatcher = InlineDispatcher({"measure": FakeEdge(artifacts), "train": train}, artifacts)
    objective = Objective("pareto")
    study = st.open_study(
        "const", url, objective, st.make_sampler("random", objective, seed=3, trials=trials)
    )
    store = MeasurementStore(f"sqlite:///{tmp / 'measurements.db'}")
    Orchestrator(study, dispatcher, get_space("cnn3d"), objective, store,
                 cand.TrainPlan(("/x.hdf5",), TrainingHParams(), epochs=1),
                 SearchConfig(trials=trials, parallel=2, pin={"frames": 8, "size": 41},
                              baseline=True),
                 clock=FakeClock()).run()  # fmt: skip
    store.close()
    return st.load_study("const", url), url


def _baseline_mse() -> float:
    from hpc2edge.testing.fakes import fake_val_mse

    return fake_val_mse(get_space("cnn3d").baseline().with_input(8, 41))


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A study whose constant predictor equals the baseline's val MSE exactly: the baseline is
    not below it (flagged), and so is every trial of a higher loss; the report on it."""
    st.quiet_optuna()
    tmp = tmp_path_factory.mktemp("flagged")
    constant = _baseline_mse()
    study, url = _study_with_constant(tmp, constant)
    out = tmp / "report"
    rc, stdout, err = _main(
        ["report", "--study", "const", "--storage", url, "--out", str(out), "--json"], tmp
    )
    assert rc == 0, err
    page = (out / "report.html").read_text(encoding="utf-8")
    parser = Tables()
    parser.feed(page)
    return {"study": study, "constant": constant, "json": json.loads(stdout), "html": page,
            "tables": parser.tables}  # fmt: skip


def test_the_report_flags_every_model_not_better_than_the_constant(
    flagged: dict[str, Any],
) -> None:
    report, constant = flagged["json"], flagged["constant"]
    assert report["constant_predictor"] == {"val_mse": constant, "trainings": 9,
                                            "distinct_values": 1}  # fmt: skip
    base = report["baseline"]
    assert base["val_mse"] == constant and base["no_better_than_constant"] is True
    front = report["front"]
    assert front and any(r["no_better_than_constant"] for r in front)
    for r in front:
        assert r["val_mse_constant"] == constant
        assert r["no_better_than_constant"] is (r["val_mse"] >= constant)
    for t in report["trials"]:
        if t["state"] == "complete":
            assert t["no_better_than_constant"] is (t["val_mse"] >= constant)
    assert "the baseline is no better than predicting the mean" in report["baseline_caveat"]
    # The page: the constant predictor's row, a mark on exactly the flagged rows, the legend.
    rows = _by_trial(flagged["tables"]["front"])
    assert rows["constant"]["val_mse"] == constant
    for r in [base, *front]:
        row = rows["baseline" if r["trial"] is None else str(r["trial"])]
        assert row["_text"]["val_mse"].endswith(" ✗") is r["no_better_than_constant"]
    html = flagged["html"]
    assert html.count('class="note no-skill-legend"') == 1
    assert 'id="baseline-caveat"' in html
    assert "no better than predicting the mean" in html.split('class="headline"')[1]


def test_the_search_table_flags_them_and_says_what_the_loss_ratios_are_against(
    flagged: dict[str, Any],
) -> None:
    from hpc2edge.cli.search import CONSTANT_MARK, front_table

    study, constant = flagged["study"], flagged["constant"]
    rows, text = front_table(study, study.user_attrs["baseline"])
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["mean", "(constant)"]
    assert lines[2].split()[0] == "base" and lines[2].split()[5].endswith(CONSTANT_MARK)
    for r, line in zip(rows, lines[3 : 3 + len(rows)], strict=True):
        assert line.split()[0] == str(r["trial"])
        assert line.split()[5].endswith(CONSTANT_MARK) is (r["val_mse"] >= constant)
    assert lines[3 + len(rows)] == (
        f"  {CONSTANT_MARK} no better than the constant predictor (the training split's mean "
        f"target), val MSE {constant:.5f}: it learned nothing"
    )
    assert lines[-1].startswith("  loss ratios: the baseline is no better than predicting the mean")


def test_nothing_is_flagged_when_every_model_beats_the_constant(tmp_path: Path) -> None:
    from hpc2edge.cli.search import CONSTANT_MARK, front_table
    from hpc2edge.report.collect import collect

    study, _ = _study_with_constant(tmp_path, 1.0, trials=4)
    report = collect(study)
    assert report["constant_predictor"]["val_mse"] == 1.0
    assert report["baseline"]["no_better_than_constant"] is False
    assert report["baseline_caveat"] is None
    assert all(r["no_better_than_constant"] is False for r in report["front"])
    from hpc2edge.report.render import render_html

    page = render_html(report, {})
    assert "no-skill-legend" not in page and "baseline-caveat" not in page and " ✗" not in page
    _, text = front_table(study, study.user_attrs["baseline"])
    assert CONSTANT_MARK not in text and "loss ratios:" not in text


# --- the dashboard ----------------------------------------------------------------------------


def _start_dashboard(built: Built, host: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, "HPC2EDGE_STATE_DIR": str(built.tmp / "state"), "PYTHONPATH": str(REPO)}
    env.pop("HPC2EDGE_CONFIG", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpc2edge.cli",
            "dashboard",
            "--storage",
            built.url,
            "--host",
            host,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=built.tmp,
    )
    return proc, port


def _authed(url: str, built: Built) -> urllib.request.Request:
    password = (built.tmp / "state" / "secrets" / "dashboard.password").read_text().strip()
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    return urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})


def _get_json(url: str, proc: subprocess.Popen[str], built: Built, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(_authed(url, built), timeout=10) as r:
                assert r.status == 200
                return json.loads(r.read())
        except OSError:  # not up yet (URLError, no password file), or slow to answer: again
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_dashboard_serves_the_study(built: Built, host: str) -> None:
    pytest.importorskip("optuna_dashboard")
    proc, port = _start_dashboard(built, host)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", proc, built)
        with urllib.request.urlopen(_authed(f"http://127.0.0.1:{port}/", built), timeout=30) as r:
            assert r.status == 200  # "/" redirects to the app's page
        with pytest.raises(urllib.error.HTTPError) as refused:  # basic auth: test_dashboard_auth
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30)
        assert refused.value.code == 401
    finally:
        out, err = _stop(proc)
    assert [s["study_name"] for s in studies["study_summaries"]] == [STUDY]
    assert f"http://127.0.0.1:{port}/" in out and "(1 study)" in out
    if host == "0.0.0.0":
        assert "WARNING: listening on 0.0.0.0" in err and "in clear" in err
        assert "ssh -N -L" in err
    else:
        assert "WARNING" not in err


def test_dashboard_masks_the_storage_password(tmp_path: Path) -> None:
    url = "postgresql://nas:s3cret-pw@127.0.0.1:1/optuna"
    rc, out, err = _main(["dashboard", "--storage", url, "--port", str(free_port())], tmp_path)
    assert rc == 1 and "s3cret-pw" not in out + err
    assert "postgresql://nas:********@127.0.0.1:1/optuna" in err


def test_dashboard_without_a_storage_is_an_error(tmp_path: Path) -> None:
    rc, _, err = _main(["dashboard", "--port", str(free_port())], tmp_path)
    assert rc == 1 and "no study storage at" in err
    assert not (tmp_path / "state" / "search.db").exists()


def test_dashboard_default_storage_is_the_search_default(tmp_path: Path) -> None:
    from hpc2edge.config import load_settings
    from hpc2edge.config import study_storage_url as storage_url

    settings = load_settings(environ={"HPC2EDGE_STATE_DIR": str(tmp_path / "s")})
    assert storage_url(settings) == f"sqlite:///{(settings.state_dir / 'search.db').absolute()}"
    assert storage_url(settings, "sqlite:////x.db") == "sqlite:////x.db"
