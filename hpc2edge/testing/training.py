"""A tiny, learnable training problem for tests, demos and node checks.

Seconds on a laptop CPU: 3 synthetic objects x 1 layer x 128 lines of 32 x 32 frames, a one-block
cnn3d (16 channels, 3x3x3, head 32) at 8 x 41 x 41, Adam lr 1e-2, batch 4, 2 epochs. Chosen
because it reliably beats the constant predictor in two epochs (validation MSE about half of it
for seeds 0-3), not for any other merit. Nothing random: the data and the run follow from seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_SPEC: dict[str, Any] = {
    "space": "cnn3d",
    "input": {"frames": 8, "size": 41},
    "params": {
        "activation": "relu",
        "batch_norm": False,  # per-rank BatchNorm statistics would make world sizes differ
        "channels": [16],
        "downsample": "pool",
        "head_hidden": [32],
        "in_chans": 1,
        "kernel_s": [3],
        "kernel_t": [3],
    },
}


def make_tiny_data(folder: Path, *, seed: int = 0) -> list[Path]:
    """Write the tiny synthetic dataset (v1.1 layout, one file per object) into ``folder``."""
    from hpc2edge.data.synth import SynthSpec, generate

    # The generator's first physics (no moving scene, a coarser pixel): what every test of the
    # tiny problem was calibrated on, and float-order drift between world sizes stays ~1e-6.
    spec = SynthSpec(objects=3, layers=1, lines=128, frame_size=32, seed=seed,
                     scene_grey=0.0, pixel_um=40.0)  # fmt: skip
    return generate(folder, spec, overwrite=True)


def tiny_request(
    paths: list[Path] | list[str],
    *,
    trial_key: str = "tiny",
    seed: int = 0,
    epochs: int = 2,
    lr: float = 1e-2,
    batch_size_per_gpu: int = 4,
    resources: dict[str, Any] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """An ``hpc2edge.train`` request for the tiny problem (a random 25 % of lines held out)."""
    return {
        "trial_key": trial_key,
        "space": "cnn3d",
        "spec": TINY_SPEC,
        "hparams": {"lr": lr, "batch_size_per_gpu": batch_size_per_gpu, "epochs": epochs},
        "epochs": epochs,
        "seed": seed,
        "data": {"paths": [str(p) for p in paths], "test_fraction": 0.25, **data},
        "resources": resources or {"engine": "single"},
    }
