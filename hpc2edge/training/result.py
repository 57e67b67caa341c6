"""``TrainResult``: what one training run reports, as JSON that crosses the queue.

Units are in the field names. Losses are on the normalised targets ``[speed / 900, power / 215]``
(docs/data-format.md, "Targets and metrics"): ``val_mse`` is the mean over samples *and* both
targets of the squared error, ``val_rmse = sqrt(val_mse)``. The per-target RMSEs are in physical
units: the normalised RMSE of a target times its scale (900 mm/s, 215 W).

``val_mse_constant`` is the MSE of the best constant predictor fitted on the training split (its
mean target), evaluated on the validation split: a model that does not beat it learned nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

RESULT_FORMAT = "hpc2edge-train-result/1"
ENGINES = ("deepspeed", "ddp", "single")


@dataclass(frozen=True)
class SplitMetrics:
    """Errors of a model on one split (validation or test)."""

    mse: float
    rmse: float
    rmse_speed_mm_s: float
    rmse_power_w: float
    samples: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitMetrics:
        return cls(**data)


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one successful training run.

    Attributes:
        arch_id: the trained spec's id.
        engine: ``deepspeed``, ``ddp`` or ``single`` (what actually ran).
        engine_note: why the engine differs from the one asked for (fallback), else ``""``.
        world_size: number of data-parallel processes.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        zero_stage: DeepSpeed ZeRO stage (0 for the other engines).
        global_batch_size: samples per optimiser step over all processes.
        epochs_budget, epochs_run: epochs asked for and run (fewer after an early stop).
        stopped_early: validation loss stopped improving for ``early_stop_patience`` epochs.
        val_mse, val_rmse: final validation loss on normalised targets.
        val_rmse_speed_mm_s, val_rmse_power_w: final per-target validation RMSE.
        val_mse_constant: validation MSE of the training split's mean target.
        val_samples, train_samples: split sizes (lines).
        test: test-split metrics when a test split was evaluated, else ``None``.
        train_loss_per_epoch, val_mse_per_epoch: learning curves.
        samples_per_s: training samples processed per second of training (all processes).
        train_s: time in the training loop; wall_s: whole child run incl. start-up and eval.
        seed: the run's seed.
        checkpoint_path, checkpoint_sha256: the final model's ``state_dict`` file.
        versions: package versions of the training process.
    """

    arch_id: str
    engine: str
    world_size: int
    device: str
    precision: str
    zero_stage: int
    global_batch_size: int
    epochs_budget: int
    epochs_run: int
    stopped_early: bool
    val_mse: float
    val_rmse: float
    val_rmse_speed_mm_s: float
    val_rmse_power_w: float
    val_mse_constant: float
    val_samples: int
    train_samples: int
    train_loss_per_epoch: list[float]
    val_mse_per_epoch: list[float]
    samples_per_s: float
    train_s: float
    wall_s: float
    seed: int
    checkpoint_path: str
    checkpoint_sha256: str
    versions: dict[str, str | None] = field(default_factory=dict)
    test: SplitMetrics | None = None
    engine_note: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``json.dumps`` works on it as is)."""
        out = asdict(self)
        out["test"] = None if self.test is None else self.test.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        """Inverse of :meth:`to_json`; extra keys (``status``, ``worker``, ...) are ignored."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if kwargs.get("test") is not None:
            kwargs["test"] = SplitMetrics.from_json(kwargs["test"])
        return cls(**kwargs)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
