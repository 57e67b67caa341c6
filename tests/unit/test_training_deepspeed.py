"""The DeepSpeed engine on CPU (``DS_ACCELERATOR=cpu``, gloo), one and two processes.

Slow: the first DeepSpeed start on a machine JIT-compiles its ``deepspeed_shm_comm`` op into
``<state dir>/torch-extensions`` (~20-40 s on 2 cores; here a fresh folder per session). A torch
optimizer is passed, so ``fused_adam`` is never compiled. Where the op cannot be compiled (no
C++ compiler) or the compile outlasts the limit, the test skips with the training log's reason
instead of hanging.
"""

from __future__ import annotations

import pytest

from hpc2edge.testing.training import make_tiny_data, tiny_request
from hpc2edge.training.service import train_request

pytestmark = pytest.mark.slow  # not unit: DeepSpeed compiles an op and starts processes

pytest.importorskip("deepspeed", reason="deepspeed is not installed (hpc2edge[train])")

COMPILE_LIMIT_S = 240.0
REL_TOL = 1e-5  # as DDP: the same samples per step, only the summation order differs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("ds-state")


def _train(data, state, key, **kw):
    # Cosine: the learning rate changes between the epochs, so a schedule that did not reach
    # the optimizer DeepSpeed wraps (ZeRO's flat partitions) would show in the numbers.
    request = {**tiny_request(data, trial_key=key, **kw), "options": {"scheduler": "cosine"}}
    result = train_request(request, state_dir=state, time_limit_s=COMPILE_LIMIT_S)
    if result["status"] == "error":
        message = result["error"]["message"]
        if "time limit" in message or "build" in message.lower() or "compil" in message.lower():
            pytest.skip(f"DeepSpeed could not start on this CPU: {message[:500]}")
    assert result["status"] == "ok", result["error"]
    return result


def test_deepspeed_on_cpu_matches_the_single_process_engine(data, state):
    single = _train(data, state, "single")
    ds = _train(data, state, "ds1", resources={"engine": "deepspeed"})
    assert ds["engine"] == "deepspeed" and ds["world_size"] == 1
    assert ds["device"] == "cpu" and ds["precision"] == "fp32" and ds["zero_stage"] == 0
    assert ds["val_mse"] == pytest.approx(single["val_mse"], rel=REL_TOL)
    assert ds["val_mse"] < ds["val_mse_constant"]
    assert (state / "torch-extensions").is_dir()  # compiled once per node, kept for later runs

    zero1 = _train(
        data,
        state,
        "ds2-zero1",
        batch_size_per_gpu=2,
        resources={"engine": "deepspeed", "nproc": 2, "zero_stage": 1},
    )
    assert zero1["world_size"] == 2 and zero1["zero_stage"] == 1
    assert zero1["global_batch_size"] == 4
    assert zero1["val_mse"] == pytest.approx(single["val_mse"], rel=REL_TOL)
