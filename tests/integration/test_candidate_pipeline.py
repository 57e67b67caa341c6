"""One candidate through the pieces the search will chain: sample -> export -> edge -> train.

The orchestrator side runs here (space, export, PyTorch reference outputs, artifact store); the
measurement and the training run on the real edge and train workers behind the TLS broker. This
checks the contracts between issues: the exported model's input name and shape are what the edge
backend expects, PyTorch's outputs are the reference the device checks against, and an ArchSpec
sent to the train queue trains.
"""

from __future__ import annotations

import pytest

from hpc2edge.latency.base import reference_input
from hpc2edge.space import get_space
from hpc2edge.store.artifacts import RedisArtifactStore
from hpc2edge.transport import broker
from hpc2edge.transport.app import make_app

pytestmark = pytest.mark.integration

QUICK = {
    "warmup_min_s": 0.02,
    "warmup_min_runs": 2,
    "min_runs": 10,
    "min_time_s": 0.02,
    "max_runs": 100,
    "max_time_s": 5.0,
    "target_rel_ci": 0.05,
}


def test_sampled_candidate_is_exported_measured_and_trained(broker_stack, workers, tmp_path):
    torch = pytest.importorskip("torch")
    from hpc2edge.models import input_shape
    from hpc2edge.models.export import build_eval_model, export_onnx
    from hpc2edge.testing.training import make_tiny_data

    space = get_space("cnn3d")
    spec = space.sample(7).with_input(frames=8, size=41)
    onnx_bytes = export_onnx(spec, seed=0)
    shape = list(input_shape(spec)[1:])
    x = reference_input(shape, 1, 11)
    with torch.no_grad():
        ref = build_eval_model(spec, seed=0)(torch.from_numpy(x)).numpy().ravel().tolist()

    app = make_app(broker_stack.settings)
    client = broker.client(broker_stack.settings)
    try:
        key = RedisArtifactStore(client).put(onnx_bytes)
        measured = app.send_task(
            "hpc2edge.measure",
            args=[
                {
                    "arch_id": spec.arch_id,
                    "artifact_key": key,
                    "input_shape": shape,
                    "batch_sizes": [1, 2],
                    "precision": "fp32",
                    "protocol": QUICK,
                    "reference": {"seed": 11, "outputs": ref},
                    "keep_samples": False,
                }
            ],
        ).get(timeout=120)
        assert measured["status"] == "ok", measured["error"]
        assert measured["worker"] == "edge@test"
        assert measured["output_check"]["ok"], measured["output_check"]

        paths = [str(p) for p in make_tiny_data(tmp_path / "data")]
        trained = app.send_task(
            "hpc2edge.train",
            args=[
                {
                    "trial_key": f"pipeline-{spec.arch_id[:16]}",
                    "space": "cnn3d",
                    "spec": spec.to_dict(),
                    "hparams": {"lr": 1e-2, "batch_size_per_gpu": 4, "epochs": 1},
                    "epochs": 1,
                    "seed": 0,
                    "data": {"paths": paths},
                    "resources": {"engine": "single", "nproc": 1},
                }
            ],
        ).get(timeout=300)
        assert trained["status"] == "ok", trained.get("error")
        assert trained["worker"] == "train@test"
        assert trained["arch_id"] == spec.arch_id
    finally:
        client.close()
        app.close()
