"""Training of one candidate: ``run(spec, hparams, data, resources) -> TrainResult``.

Modules, one concept each:

- :mod:`~hpc2edge.training.request`: the JSON request and its validation (no torch);
- :mod:`~hpc2edge.training.result`: :class:`TrainResult`, JSON with units in the field names;
- :mod:`~hpc2edge.training.launcher`: the child process (one, or one per rank under torchrun),
  engine choice, time limit, crash/kill -> :class:`~hpc2edge.errors.TrainingError`;
- :mod:`~hpc2edge.training.worker_main`: the child's entry point;
- :mod:`~hpc2edge.training.loop`: the per-rank loop over the ``deepspeed`` / ``ddp`` /
  ``single`` engines (the only module that imports torch);
- :mod:`~hpc2edge.training.service`: ``train_request`` behind the ``hpc2edge.train`` task, with
  typed error results and the idempotency store;
- :mod:`~hpc2edge.cli.train`: ``hpc2edge train``.

Importing this package imports neither torch nor DeepSpeed: the Celery worker only ever starts a
child that does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpc2edge.space.base import ArchSpec, TrainingHParams
from hpc2edge.training.result import SplitMetrics, TrainResult

__all__ = ["SplitMetrics", "TrainResult", "run"]


def run(
    spec: ArchSpec,
    hparams: TrainingHParams,
    data: Mapping[str, Any],
    resources: Mapping[str, Any] | None = None,
    *,
    space: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    run_dir: Path | None = None,
    timeout_s: float | None = None,
) -> TrainResult:
    """Train ``spec`` once in a child process and return its result.

    Args:
        spec: the architecture; ``space`` (default: its family) must contain it.
        hparams: learning rate, schedule, batch size per process, epochs, optimizer.
        data: ``{"paths": [...], "objects", "layers", "test_fraction", "test_objects",
            "val_fraction", "evaluate_test"}`` (see :mod:`hpc2edge.training.request`).
        resources: ``{"engine": "auto"|"deepspeed"|"ddp"|"single", "nproc": N|"auto",
            "zero_stage", "precision", "num_workers"}``.
        epochs: overrides ``hparams.epochs``.
        seed: seeds weights, data order, windows and the validation split.
        options: ``{"scheduler": "step"|"cosine", "weight_decay", "grad_clip_norm",
            "early_stop_patience"}``.
        run_dir: where the log and checkpoint go (default: ``.hpc2edge/train-runs/<arch>``).
        timeout_s: kill the training after this long.

    Raises:
        ValueError: an invalid request (every problem listed).
        TrainingError: the training failed (crash, kill, time-out, non-finite loss).
    """
    from hpc2edge.training.launcher import launch
    from hpc2edge.training.request import TrainRequest

    req = TrainRequest.from_json(
        {
            "trial_key": f"run-{spec.arch_id[:16]}-{time.time_ns()}",
            "space": space or spec.space,
            "spec": spec.to_dict(),
            "hparams": hparams.to_dict(),
            "epochs": hparams.epochs if epochs is None else epochs,
            "seed": seed,
            "data": dict(data),
            "options": dict(options or {}),
            "resources": dict(resources or {}),
        }
    )
    folder = run_dir or Path(".hpc2edge") / "train-runs" / spec.arch_id[:16]
    return launch(req, folder, timeout_s=timeout_s)
