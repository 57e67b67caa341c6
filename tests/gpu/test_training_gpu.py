"""DeepSpeed training on NVIDIA GPUs: bf16 (fp16 where bf16 is missing), all GPUs of the node.

Skipped (with the reason) where torch sees no CUDA device or DeepSpeed is not installed. On a
GPU node: ``pytest -m gpu tests/gpu/test_training_gpu.py``.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

torch = pytest.importorskip("torch", reason="torch is not installed (hpc2edge[train])")
pytest.importorskip("deepspeed", reason="deepspeed is not installed (hpc2edge[train])")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)

from hpc2edge.testing.training import make_tiny_data, tiny_request  # noqa: E402
from hpc2edge.training.service import train_request  # noqa: E402

GPUS = torch.cuda.device_count()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tiny-data"))


def test_deepspeed_mixed_precision_on_all_gpus_beats_the_constant_predictor(data, tmp_path):
    request = tiny_request(
        data, trial_key="gpu", resources={"engine": "auto", "nproc": "auto", "zero_stage": 1}
    )
    result = train_request(request, state_dir=tmp_path, time_limit_s=540)
    assert result["status"] == "ok", result["error"]
    assert result["engine"] == "deepspeed", result["engine_note"]
    assert result["device"] == "cuda" and result["world_size"] == GPUS
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert result["precision"] == expected
    assert result["val_mse"] < result["val_mse_constant"]


def test_an_out_of_memory_child_is_a_typed_error_and_the_next_run_works(data, tmp_path):
    # The Swin-T baseline at 16 x 224 x 224 with 200 clips per GPU needs hundreds of GiB of
    # activations: the child dies of CUDA OOM; the caller gets a TrainingError with the log tail.
    from hpc2edge.space.registry import get_space

    request = {
        **tiny_request(data, trial_key="oom", batch_size_per_gpu=200, epochs=1),
        "space": "swin3d",
        "spec": get_space("swin3d").baseline().to_dict(),
        "resources": {"engine": "deepspeed", "nproc": 1},
    }
    result = train_request(request, state_dir=tmp_path, time_limit_s=540)
    if result["status"] == "ok":
        pytest.skip("the Swin-T batch of 200 fit into this GPU's memory: no OOM to observe")
    assert result["error"]["type"] == "TrainingError", result["error"]
    after = train_request(tiny_request(data, trial_key="after-oom"), state_dir=tmp_path)
    assert after["status"] == "ok", after["error"]
