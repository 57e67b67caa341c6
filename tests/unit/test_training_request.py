"""Training requests, results and launch plans: validation and JSON, without running a child."""

from __future__ import annotations

import json

import pytest

from hpc2edge.testing.training import TINY_SPEC, tiny_request
from hpc2edge.training.launcher import plan_launch, visible_gpus
from hpc2edge.training.request import TrainRequest
from hpc2edge.training.result import SplitMetrics, TrainResult
from hpc2edge.training.service import ResultStore, train_request

pytestmark = pytest.mark.unit

PATHS = ["/data/C027.hdf5"]


def _result(**over):
    base = dict(
        arch_id="a" * 64,
        engine="ddp",
        world_size=2,
        device="cpu",
        precision="fp32",
        zero_stage=0,
        global_batch_size=8,
        epochs_budget=2,
        epochs_run=2,
        stopped_early=False,
        val_mse=0.02,
        val_rmse=0.02**0.5,
        val_rmse_speed_mm_s=120.0,
        val_rmse_power_w=30.0,
        val_mse_constant=0.04,
        val_samples=10,
        train_samples=40,
        train_loss_per_epoch=[0.1, 0.05],
        val_mse_per_epoch=[0.03, 0.02],
        samples_per_s=100.0,
        train_s=1.0,
        wall_s=2.0,
        seed=0,
        checkpoint_path="/x/model.pt",
        checkpoint_sha256="b" * 64,
        versions={"torch": "2.13.0", "deepspeed": None},
        test=SplitMetrics(
            mse=0.03, rmse=0.03**0.5, rmse_speed_mm_s=1.0, rmse_power_w=2.0, samples=5
        ),
    )
    base.update(over)
    return TrainResult(**base)


def test_result_json_round_trip():
    result = _result()
    text = json.dumps(result.to_json())
    assert TrainResult.from_json(json.loads(text)) == result
    assert TrainResult.from_json(_result(test=None).to_json()).test is None
    # Extra keys of the task result (status, worker, cached) are ignored.
    assert TrainResult.from_json({**result.to_json(), "status": "ok", "worker": "w"}) == result


def test_a_valid_request_round_trips_and_has_a_stable_digest():
    req = TrainRequest.from_json(tiny_request(PATHS))
    again = TrainRequest.from_json(req.to_json())
    assert again == req
    assert again.digest() == req.digest()
    assert req.epochs == 2 and req.resources.engine == "single"
    other = TrainRequest.from_json(tiny_request(PATHS, seed=1))
    assert other.digest() != req.digest()


def test_every_problem_is_listed_at_once():
    bad = {
        "trial_key": "",
        "space": "cnn3d",
        "spec": {**TINY_SPEC, "params": {**TINY_SPEC["params"], "channels": [7]}},
        "hparams": {"lr": -1.0, "batch_size_per_gpu": 0},
        "epochs": 0,
        "data": {"paths": [], "val_fraction": 2.0, "bogus": 1},
        "options": {"scheduler": "linear", "early_stop_patience": 0},
        "resources": {"engine": "tpu", "nproc": 0, "zero_stage": 3, "precision": "fp8"},
        "extra": True,
    }
    with pytest.raises(ValueError) as info:
        TrainRequest.from_json(bad)
    message = str(info.value)
    for needle in (
        "extra: unknown field",
        "trial_key",
        "spec: params.channels",
        "hparams.lr",
        "hparams.batch_size_per_gpu",
        "epochs",
        "data.paths",
        "data.val_fraction",
        "data.bogus: unknown field",
        "options.scheduler",
        "options.early_stop_patience",
        "resources.engine",
        "resources.nproc",
        "resources.zero_stage",
        "resources.precision",
    ):
        assert needle in message, needle


@pytest.mark.parametrize(
    "request_",
    [
        "not an object",
        {},
        {**tiny_request(PATHS), "space": "nope"},
        {**tiny_request(PATHS), "spec": {"space": "swin3d"}},
        {**tiny_request(PATHS), "hparams": {"optimizer": "sgd"}},
        {**tiny_request(PATHS), "hparams": {"momentum": 0.9}},
        {**tiny_request(PATHS), "seed": True},
        *(
            {**tiny_request(PATHS), "hparams": {**tiny_request(PATHS)["hparams"], **bad}}
            for bad in (
                {"lr_gamma": 0.0},
                {"lr_gamma": 1.5},
                {"lr_gamma": float("nan")},
                {"lr_gamma": "0.6"},
                {"lr_gamma": True},
                {"lr_step_epochs": 0},
                {"lr_step_epochs": 1.5},
                {"lr_step_epochs": True},
                {"lr": True},
            )
        ),
    ],
)
def test_invalid_requests_give_typed_error_results_without_training(tmp_path, request_):
    result = train_request(request_, state_dir=tmp_path)
    assert result["status"] == "error"
    assert result["error"]["type"] == "ValueError"
    assert not (tmp_path / "train-runs").exists()


def test_missing_data_is_a_data_error(tmp_path):
    result = train_request(tiny_request([str(tmp_path / "absent.hdf5")]), state_dir=tmp_path)
    assert result["error"]["type"] == "DataError"
    assert "absent.hdf5" in result["error"]["message"]


def test_result_store_is_keyed_by_trial_and_atomic(tmp_path):
    store = ResultStore(tmp_path / "r")
    assert store.get("k/1") is None
    store.put("k/1", "d" * 64, {"status": "ok", "val_mse": 0.1})
    assert store.get("k/1") == {
        "trial_key": "k/1",
        "request_sha256": "d" * 64,
        "result": {"status": "ok", "val_mse": 0.1},
    }
    assert store.get("k/2") is None
    assert [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".")] == []


def test_engine_resolution_without_gpus(monkeypatch):
    env = {"CUDA_VISIBLE_DEVICES": ""}
    assert visible_gpus(env) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,3"}) == 3

    def plan(resources, environ=env):
        return plan_launch(
            TrainRequest.from_json(tiny_request(PATHS, resources=resources)), environ
        )

    assert plan({"engine": "auto"}).engine == "single"
    p = plan({"engine": "auto", "nproc": 2})
    assert (p.engine, p.nproc, p.allow_fallback) == ("ddp", 2, True)
    assert plan({"engine": "auto", "nproc": "auto"}).nproc == 1
    ds = plan({"engine": "auto"}, {**env, "DS_ACCELERATOR": "cpu"})
    assert ds.engine == "deepspeed" and ds.allow_fallback
    assert plan({"engine": "ddp", "nproc": 2}).allow_fallback is False
    with pytest.raises(ValueError, match="single"):
        plan({"engine": "single", "nproc": 2})
    gpus = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert plan({"engine": "ddp", "nproc": "auto"}, gpus).nproc == 2
    with pytest.raises(ValueError, match="exceeds"):
        plan({"engine": "ddp", "nproc": 4}, gpus)


def test_deepspeed_config_is_pure_data_parallel():
    from hpc2edge.training.loop import deepspeed_config

    cfg = deepspeed_config(4, 2, zero_stage=1, precision="bf16", grad_clip_norm=1.0)
    assert cfg["train_batch_size"] == 8
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 1
    assert cfg["zero_optimization"] == {"stage": 1}
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    assert "optimizer" not in cfg and "scheduler" not in cfg  # ours: a torch optimizer


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, hpc2edge.training, hpc2edge.training.service, hpc2edge.training.launcher;"
        "import hpc2edge.tasks; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_early_stop_waits_for_patience_epochs_without_improvement():
    from hpc2edge.training.loop import EarlyStop

    stop = EarlyStop(2)
    assert [stop.update(v) for v in (0.5, 0.4, 0.45, 0.4, 0.3, 0.3, 0.31)] == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    never = EarlyStop(None)
    assert not any(never.update(1.0) for _ in range(10))


def test_relative_data_paths_are_refused(tmp_path):
    # The child trains in its own run folder: a relative path would point somewhere else there.
    result = train_request(tiny_request(["data/C027.hdf5"]), state_dir=tmp_path)
    assert result["error"]["type"] == "ValueError"
    assert "absolute" in result["error"]["message"]
