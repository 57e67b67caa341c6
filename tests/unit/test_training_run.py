"""Real trainings in child processes (single and DDP/gloo on CPU), and how they fail.

Each test starts real training processes on the tiny synthetic problem of
:mod:`hpc2edge.testing.training` (a few seconds each on 2 cores). Tolerance of data parallelism:
2 processes x batch 2 and 1 process x batch 4 take the same samples per step; only the float
summation order of the gradient all-reduce differs, so final validation MSEs agree within
1e-5 relative (observed: ~2e-7).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hpc2edge.space.base import ArchSpec, TrainingHParams
from hpc2edge.testing.training import TINY_SPEC, make_tiny_data, tiny_request
from hpc2edge.training import run
from hpc2edge.training.result import TrainResult
from hpc2edge.training.service import train_request
from hpc2edge.training.worker_main import ENV_KILL_AFTER_STEPS

pytestmark = pytest.mark.slow  # not unit: each test starts training processes

DDP_REL_TOL = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("train-state")


@pytest.fixture(scope="module")
def single(data, state):
    return train_request(tiny_request(data, trial_key="single"), state_dir=state)


def test_two_epochs_beat_the_constant_predictor(single):
    assert single["status"] == "ok", single["error"]
    assert single["engine"] == "single" and single["world_size"] == 1
    assert single["device"] == "cpu" and single["precision"] == "fp32"
    assert single["epochs_run"] == 2 and len(single["val_mse_per_epoch"]) == 2
    assert single["val_mse"] < single["val_mse_constant"]
    assert single["val_rmse"] == pytest.approx(single["val_mse"] ** 0.5)
    # Per-target RMSE in physical units: a normalised RMSE times 900 mm/s or 215 W.
    assert 0 < single["val_rmse_speed_mm_s"] < 900
    assert 0 < single["val_rmse_power_w"] < 215
    assert single["train_samples"] + single["val_samples"] > 0
    assert single["samples_per_s"] > 0 and single["wall_s"] > 0
    assert single["versions"]["torch"]
    assert single["cached"] is False
    checkpoint = Path(single["checkpoint_path"])
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == single["checkpoint_sha256"]
    # JSON all the way, and a TrainResult again.
    assert TrainResult.from_json(json.loads(json.dumps(single))).val_mse == single["val_mse"]


def test_a_redelivered_trial_returns_the_recorded_result(data, state, single):
    again = train_request(tiny_request(data, trial_key="single"), state_dir=state)
    assert again["cached"] is True
    assert {k: v for k, v in again.items() if k != "cached"} == {
        k: v for k, v in single.items() if k != "cached"
    }
    clash = train_request(tiny_request(data, trial_key="single", seed=5), state_dir=state)
    assert clash["status"] == "error" and clash["error"]["type"] == "ValueError"
    assert "different request" in clash["error"]["message"]


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(data, state, single):
    ddp = train_request(
        tiny_request(
            data, trial_key="ddp2", batch_size_per_gpu=2, resources={"engine": "ddp", "nproc": 2}
        ),
        state_dir=state,
    )
    assert ddp["status"] == "ok", ddp["error"]
    assert ddp["engine"] == "ddp" and ddp["world_size"] == 2
    assert ddp["global_batch_size"] == single["global_batch_size"] == 4
    assert ddp["val_samples"] == single["val_samples"]
    for a, b in zip(ddp["val_mse_per_epoch"], single["val_mse_per_epoch"], strict=True):
        assert a == pytest.approx(b, rel=DDP_REL_TOL)
    assert ddp["val_mse"] == pytest.approx(single["val_mse"], rel=DDP_REL_TOL)


def test_run_api_trains_in_a_child(data, tmp_path):
    result = run(
        ArchSpec.from_dict(TINY_SPEC),
        TrainingHParams(lr=1e-2, batch_size_per_gpu=4, epochs=1),
        {"paths": [str(p) for p in data], "test_fraction": 0.25, "evaluate_test": True},
        {"engine": "single"},
        options={"scheduler": "cosine", "early_stop_patience": 1},
        run_dir=tmp_path / "run",
    )
    assert isinstance(result, TrainResult)
    assert result.epochs_run == 1 and result.test is not None and result.test.samples > 0
    assert (tmp_path / "run" / "train.log").is_file()


def test_a_diverging_training_is_a_typed_error(data, tmp_path):
    result = train_request(tiny_request(data, trial_key="nan", lr=1e30), state_dir=tmp_path)
    assert result["status"] == "error"
    assert result["error"]["type"] == "TrainingError"
    assert "not finite" in result["error"]["message"]
    assert not (tmp_path / "train-results").exists()  # failures are not recorded


def test_a_killed_child_is_a_typed_error_with_the_log_tail(data, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_KILL_AFTER_STEPS, "2")
    result = train_request(tiny_request(data, trial_key="killed"), state_dir=tmp_path)
    assert result["status"] == "error"
    assert result["error"]["type"] == "TrainingError"
    message = result["error"]["message"]
    assert "SIGKILL" in message and "train.log" in message
    assert "engine=single" in message  # the log tail came along


def test_a_killed_rank_fails_the_distributed_run(data, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_KILL_AFTER_STEPS, "2")
    request = tiny_request(
        data, trial_key="killed-ddp", batch_size_per_gpu=2, resources={"engine": "ddp", "nproc": 2}
    )
    result = train_request(request, state_dir=tmp_path)
    assert result["status"] == "error"
    assert result["error"]["type"] == "TrainingError"


def test_a_training_over_its_time_limit_is_killed(data, tmp_path):
    result = train_request(
        tiny_request(data, trial_key="slow"), state_dir=tmp_path, time_limit_s=0.5
    )
    assert result["status"] == "error"
    assert result["error"]["type"] == "TrainingError"
    assert "time limit" in result["error"]["message"]


def test_cli_trains_and_prints_the_result(data, tmp_path):
    from click.testing import CliRunner

    from hpc2edge.cli.train import train_cmd

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(TINY_SPEC))
    args = ["--spec", str(spec_file), "--data", str(data[0].parent), "--epochs", "1"]
    args += ["--engine", "single", "--lr", "0.01", "--batch-size", "4", "--test-fraction", "0.25"]
    out = CliRunner().invoke(train_cmd, [*args, "--state-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["status"] == "ok" and result["epochs_run"] == 1
    both = CliRunner().invoke(train_cmd, ["--baseline", *args])
    assert both.exit_code != 0 and "exactly one" in both.output


@pytest.fixture
def broken_deepspeed(tmp_path):
    """A child environment whose ``import deepspeed`` fails, as on a node where it cannot run."""
    import importlib.util
    import os

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed: auto never picks it")
    fake = tmp_path / "fake-site"
    (fake / "deepspeed").mkdir(parents=True)
    (fake / "deepspeed" / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    path = os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": path}


def test_auto_falls_back_when_deepspeed_cannot_start(data, tmp_path, broken_deepspeed):
    request = tiny_request(data, trial_key="auto", epochs=1, resources={"engine": "auto"})
    result = train_request(request, state_dir=tmp_path, environ=broken_deepspeed)
    assert result["status"] == "ok", result["error"]
    assert result["engine"] == "single"
    assert "deepspeed could not start" in result["engine_note"]
    assert "broken on purpose" in result["engine_note"]


def test_deepspeed_asked_for_explicitly_does_not_fall_back(data, tmp_path, broken_deepspeed):
    request = tiny_request(data, trial_key="ds", epochs=1, resources={"engine": "deepspeed"})
    result = train_request(request, state_dir=tmp_path, environ=broken_deepspeed)
    assert result["status"] == "error"
    assert result["error"]["type"] == "TrainingError"
    assert "deepspeed engine could not start" in result["error"]["message"]


def test_a_relative_state_dir_works(data, tmp_path, monkeypatch):
    # The child runs in its run folder; the service hands it absolute paths only.
    monkeypatch.chdir(tmp_path)
    result = train_request(tiny_request([str(p) for p in data], epochs=1), state_dir=Path("st"))
    assert result["status"] == "ok", result.get("error")
    assert Path(result["checkpoint_path"]).is_absolute()


def test_the_training_dies_with_a_worker_killed_by_a_signal(data, tmp_path):
    # A Celery pool process killed by SIGKILL runs no `finally`: the kernel must take the
    # training child with it (PR_SET_PDEATHSIG), or it would hold the node's GPUs on its own.
    import os
    import signal
    import subprocess
    import sys
    import time

    request = tiny_request([str(p) for p in data], epochs=500, trial_key="orphan")
    code = (
        "import json, sys; from pathlib import Path\n"
        "from hpc2edge.training.service import train_request\n"
        f"train_request(json.loads(sys.argv[1]), state_dir=Path({str(tmp_path)!r}))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code, json.dumps(request)])
    runs = tmp_path / "train-runs"

    def children():
        out = subprocess.run(
            ["pgrep", "-f", f"worker_main {runs}"], capture_output=True, text=True, check=False
        ).stdout.split()
        return [int(pid) for pid in out]

    deadline = time.monotonic() + 60
    while not children():
        assert time.monotonic() < deadline and parent.poll() is None, "training never started"
        time.sleep(0.1)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while children() and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = children()
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover
