"""The per-rank training loop: one process of a (possibly one-process) data-parallel run.

Why one module of ~550 lines: one rank's training in the order it runs (data, model, engine,
epochs, evaluation, result), so a reader follows a run from top to bottom.

Runs inside the child that :mod:`hpc2edge.training.launcher` starts, never in a Celery worker.

Decisions, and why:

- **One loop, three engines.** :class:`Engine` hides how a step is taken: ``single`` (plain
  PyTorch), ``ddp`` (``DistributedDataParallel``; gloo on CPU, NCCL on GPUs) and ``deepspeed``
  (``deepspeed.initialize`` with a *torch* optimizer, so no fused op is JIT-compiled, ZeRO 0/1,
  bf16/fp16 on GPUs). Data, schedule, evaluation and checkpointing are shared, so engines differ
  only where they must.
- **The global batch defines the run.** Each rank takes ``batch_size_per_gpu`` samples per step;
  a ``DistributedSampler`` over one seeded permutation per epoch gives step *k* of a W-process
  run exactly the samples of step *k* of a one-process run with a W-times larger batch, and
  gradient averaging makes the updates equal up to float summation order. Incomplete last
  batches are dropped (``drop_last``) so every rank takes the same number of equal-sized steps.
- **Windows per (seed, epoch, line).** A random training window is drawn from a generator
  seeded by the seed, the epoch and the line number, not by the process: which rank reads a line
  does not change what it sees, so world sizes stay comparable and reruns repeat.
- **Validation split.** ``val_fraction`` of the training split's lines, chosen by a seeded
  permutation; the test split (held-out objects, or a fraction of lines) is evaluated only when
  asked. Evaluation uses centred windows, each rank a disjoint shard (no padding duplicates);
  squared-error sums are all-reduced, so every rank gets the same exact numbers and takes the
  same early-stop decision.
- **Divergence is an error, not a number.** A non-finite loss (all-reduced, so all ranks agree)
  raises :class:`~hpc2edge.errors.TrainingError`; a trial fails with a reason.
- **Schedule per epoch.** StepLR (the paper's) or cosine annealing over the epoch budget, stepped
  after each epoch. The reported metrics are those of the final epoch's model, which is the one
  checkpointed (early stop ends training; it does not roll back).
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hpc2edge.errors import DataError, TrainingError
from hpc2edge.training.request import TrainRequest
from hpc2edge.training.result import SplitMetrics, TrainResult
from hpc2edge.util.versions import versions

SPEED_SCALE_MM_S = 900.0
POWER_SCALE_W = 215.0
EVAL_BATCH_SIZE = 32
VERSION_PACKAGES = ("torch", "deepspeed", "numpy", "h5py", "hpc2edge")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run (from torchrun's environment, read by the entry point)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


# --- data ---------------------------------------------------------------------------------------


class Lines(Dataset):
    """Samples ``indices`` of a reader; in training, windows drawn per (seed, epoch, line)."""

    def __init__(self, reader: Any, indices: np.ndarray, *, seed: int, train: bool) -> None:
        self.reader = reader
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed = seed
        self.train = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.indices[k])
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        x, y = self.reader.sample(i, rng=rng)
        return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class Splits:
    train: Lines
    val: Lines
    test: Lines | None
    val_mse_constant: float


def make_splits(req: TrainRequest) -> Splits:
    """Readers and train / validation / (test) lines for ``req``; DataError when unusable."""
    from hpc2edge.data.preprocess import Preprocess
    from hpc2edge.data.reader import LPBFReader
    from hpc2edge.data.selection import DEFAULT_TEST_OBJECTS, Selection

    d = req.data
    pre = Preprocess(frames=req.spec.frames, size=req.spec.size)

    def reader(split: str) -> Any:
        selection = Selection(
            objects=tuple(d.objects.split(",")) if d.objects else None,
            layers=d.layers,
            split=split,
            test_objects=d.test_objects or DEFAULT_TEST_OBJECTS,
            test_fraction=d.test_fraction,
            seed=req.seed,
        )
        try:
            return LPBFReader(list(d.paths), selection=selection, preprocess=pre)
        except ValueError as exc:
            raise DataError(f"data selection ({split}): {exc}") from None

    train_reader = reader("train")
    n = len(train_reader)
    n_val = max(1, round(n * d.val_fraction))
    if n - n_val < 1:
        raise DataError(f"the train split has {n} lines: too few for a validation split")
    perm = np.random.default_rng(req.seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    targets = train_reader.targets()
    if not np.isfinite(targets[perm]).all():
        raise DataError("the train split has lines without finite labels (laser_params)")
    mean = targets[train_idx].mean(axis=0)
    val_mse_constant = float(((targets[val_idx] - mean) ** 2).mean())
    test = None
    if d.evaluate_test:
        test_reader = reader("test")
        if not np.isfinite(test_reader.targets()).all():
            raise DataError("the test split has no labels (laser_params): cannot evaluate it")
        test = Lines(test_reader, np.arange(len(test_reader)), seed=req.seed, train=False)
    return Splits(
        train=Lines(train_reader, train_idx, seed=req.seed, train=True),
        val=Lines(train_reader, val_idx, seed=req.seed, train=False),
        test=test,
        val_mse_constant=val_mse_constant,
    )


# --- engines ------------------------------------------------------------------------------------


class Engine(abc.ABC):
    """How one optimisation step is taken.

    Contract: :meth:`forward` maps an fp32 input batch on :attr:`device` to predictions (any
    float dtype); :meth:`backward_step` back-propagates ``loss``, reduces gradients across ranks,
    clips their global norm and updates the weights, leaving no gradient behind. :attr:`module`
    is the unwrapped model with the current full weights on every rank (ZeRO 0/1 keep them), used
    for evaluation and the checkpoint. :attr:`optimizer` is the torch optimizer whose learning
    rate the schedule sets.
    """

    name: str

    def __init__(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.device = device

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions for ``x``."""

    @abc.abstractmethod
    def backward_step(self, loss: torch.Tensor) -> None:
        """Backward, all-reduce, clip, step, zero the gradients."""

    @property
    def input_dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype


class _TorchEngine(Engine):
    """Plain PyTorch (``single``) or DistributedDataParallel (``ddp``) steps."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        grad_clip_norm: float | None,
        autocast_bf16: bool,
    ) -> None:
        super().__init__(module, optimizer, device)
        self.name = name
        self.grad_clip_norm = grad_clip_norm
        self.autocast_bf16 = autocast_bf16
        self.wrapped: nn.Module = module
        if name == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(module, device_ids=ids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_bf16:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.wrapped(x)
        return self.wrapped(x)

    def backward_step(self, loss: torch.Tensor) -> None:
        loss.backward()
        if self.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class _DeepSpeedEngine(Engine):
    """A DeepSpeed engine built around a torch optimizer (no fused op to compile)."""

    name = "deepspeed"

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        config: dict[str, Any],
    ) -> None:
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=optimizer, config=config
        )
        super().__init__(engine.module, optimizer, device)
        self.engine = engine
        self.ds_optimizer = ds_optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine(x.to(self.input_dtype))

    def backward_step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()  # clips (gradient_clipping), steps and zeroes the gradients


def deepspeed_config(
    batch_size_per_rank: int,
    world_size: int,
    *,
    zero_stage: int,
    precision: str,
    grad_clip_norm: float | None,
) -> dict[str, Any]:
    """The DeepSpeed config of a run: pure data-parallel, no accumulation, our own schedule."""
    return {
        "train_batch_size": batch_size_per_rank * world_size,
        "train_micro_batch_size_per_gpu": batch_size_per_rank,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip_norm or 0.0,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 2**31 - 1,  # progress is ours to print
        "wall_clock_breakdown": False,
    }


def resolve_precision(requested: str, engine: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that support it, fp32 on CPU. fp16 needs DeepSpeed's loss scaling."""
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if device.type == "cuda" and engine == "deepspeed" else "fp32"
    if requested == "fp16" and engine != "deepspeed":
        raise TrainingError("fp16 needs the deepspeed engine (loss scaling); use bf16 or fp32")
    if requested == "fp16" and device.type != "cuda":
        raise TrainingError("fp16 training needs a GPU; use fp32 or bf16 on CPU")
    return requested


# --- the loop -----------------------------------------------------------------------------------


class EarlyStop:
    """Stop when the validation MSE has not improved for ``patience`` epochs (``None``: never)."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best = math.inf
        self.since_best = 0

    def update(self, val_mse: float) -> bool:
        """Record one epoch's validation MSE; True when training should stop."""
        if val_mse < self.best:
            self.best, self.since_best = val_mse, 0
        else:
            self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience


def _sync_sums(values: list[float], world_size: int, device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


@torch.no_grad()
def evaluate(engine: Engine, lines: Lines, info: DistInfo, num_workers: int) -> SplitMetrics:
    """Exact errors on ``lines`` (centred windows); every rank returns the same numbers."""
    module = engine.module
    was_training = module.training
    module.eval()
    shard = torch.utils.data.Subset(lines, range(info.rank, len(lines), info.world_size))
    loader = DataLoader(shard, batch_size=EVAL_BATCH_SIZE, num_workers=num_workers)
    sse = torch.zeros(2, dtype=torch.float64)
    for x, y in loader:
        pred = module(x.to(engine.device, engine.input_dtype)).float().cpu()
        sse += ((pred - y) ** 2).sum(dim=0).double()
    module.train(was_training)
    speed_sse, power_sse, count = _sync_sums(
        [float(sse[0]), float(sse[1]), float(len(shard))], info.world_size, engine.device
    )
    n = max(count, 1.0)
    mse = (speed_sse + power_sse) / (2 * n)
    return SplitMetrics(
        mse=mse,
        rmse=math.sqrt(mse),
        rmse_speed_mm_s=math.sqrt(speed_sse / n) * SPEED_SCALE_MM_S,
        rmse_power_w=math.sqrt(power_sse / n) * POWER_SCALE_W,
        samples=int(count),
    )


def _make_optimizer(req: TrainRequest, model: nn.Module) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if req.hparams.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=req.hparams.lr, weight_decay=req.options.weight_decay)


def _make_scheduler(req: TrainRequest, optimizer: torch.optim.Optimizer) -> Any:
    if req.options.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=req.epochs)
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=req.hparams.lr_step_epochs, gamma=req.hparams.lr_gamma
    )


def _device(info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def _init_distributed(engine: str, info: DistInfo, device: torch.device) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    if engine == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend)
    elif info.world_size > 1:
        dist.init_process_group(backend=backend)


def _build_engine(
    engine: str, req: TrainRequest, info: DistInfo, device: torch.device, precision: str
) -> Engine:
    from hpc2edge.models import build_model

    torch.manual_seed(req.seed)  # the same initial weights on every rank and every rerun
    model = build_model(req.spec).to(device)
    optimizer = _make_optimizer(req, model)
    if engine == "deepspeed":
        config = deepspeed_config(
            req.hparams.batch_size_per_gpu,
            info.world_size,
            zero_stage=req.resources.zero_stage,
            precision=precision,
            grad_clip_norm=req.options.grad_clip_norm,
        )
        return _DeepSpeedEngine(model, optimizer, device, config=config)
    return _TorchEngine(
        engine,
        model,
        optimizer,
        device,
        grad_clip_norm=req.options.grad_clip_norm,
        autocast_bf16=precision == "bf16",
    )


def run_rank(
    req: TrainRequest,
    run_dir: Path,
    info: DistInfo,
    *,
    engine_name: str,
    allow_fallback: bool = False,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult | None:
    """Train and evaluate on this rank; rank 0 writes the checkpoint and returns the result.

    Args:
        req: the validated request.
        run_dir: where the checkpoint goes (shared by the ranks of one node).
        info: this process's rank and the world size.
        engine_name: ``deepspeed``, ``ddp`` or ``single`` (resolved by the launcher).
        allow_fallback: when DeepSpeed cannot start, fall back to ``ddp``/``single`` (``auto``).
        on_step: called with the global step number after each step (a test hook).
        log: progress lines (rank 0 only).

    Raises:
        TrainingError: non-finite loss, unusable precision.
        DataError: the data cannot make the splits.
    """
    started = time.perf_counter()
    torch.manual_seed(req.seed)
    np.random.seed(req.seed % 2**32)
    if not torch.cuda.is_available() and info.world_size > 1:
        # Ranks share the node's cores: oversubscribed threads make every rank slower.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world_size))
    device = _device(info)
    note = ""
    try:
        precision = resolve_precision(req.resources.precision, engine_name, device)
        _init_distributed(engine_name, info, device)
        engine = _build_engine(engine_name, req, info, device, precision)
    except (ImportError, RuntimeError, AttributeError) as exc:
        if engine_name != "deepspeed" or not allow_fallback:
            raise TrainingError(f"{engine_name} engine could not start: {exc}") from exc
        note = f"deepspeed could not start ({type(exc).__name__}: {exc}); fell back"
        engine_name = "ddp" if info.world_size > 1 else "single"
        precision = resolve_precision("auto", engine_name, device)
        if info.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        engine = _build_engine(engine_name, req, info, device, precision)
    rank0 = info.rank == 0
    splits = make_splits(req)
    b = req.hparams.batch_size_per_gpu
    global_batch = b * info.world_size
    if len(splits.train) < global_batch:
        raise DataError(
            f"{len(splits.train)} training lines are fewer than one global batch "
            f"({b} x {info.world_size} processes)"
        )
    sampler: DistributedSampler[Any] = DistributedSampler(
        splits.train,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=req.seed,
        drop_last=True,
    )
    loader = DataLoader(
        splits.train,
        batch_size=b,
        sampler=sampler,
        drop_last=True,
        num_workers=req.resources.num_workers,
    )
    scheduler = _make_scheduler(req, engine.optimizer)
    loss_fn = nn.MSELoss()
    if rank0:
        log(
            f"engine={engine_name} world_size={info.world_size} device={device} "
            f"precision={precision} train={len(splits.train)} val={len(splits.val)} "
            f"global_batch={global_batch} val_mse_constant={splits.val_mse_constant:.6g}"
        )

    train_losses: list[float] = []
    val_curve: list[float] = []
    early_stop, stopped_early = EarlyStop(req.options.early_stop_patience), False
    step, samples, train_s = 0, 0, 0.0
    val = None
    for epoch in range(req.epochs):
        t_epoch = time.perf_counter()
        sampler.set_epoch(epoch)
        splits.train.set_epoch(epoch)
        engine.module.train()
        loss_sum, n_steps = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            pred = engine.forward(x)
            loss = loss_fn(pred.float(), y)
            mean_loss = _sync_sums([float(loss.detach())], info.world_size, device)[0]
            mean_loss /= info.world_size
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f"loss is not finite ({mean_loss}) at epoch {epoch + 1}, step {step + 1} "
                    f"(lr {req.hparams.lr:g}): the training diverged"
                )
            engine.backward_step(loss)
            loss_sum += mean_loss
            n_steps += 1
            step += 1
            samples += global_batch
            if on_step is not None:
                on_step(step)
        scheduler.step()
        train_s += time.perf_counter() - t_epoch
        train_losses.append(loss_sum / max(n_steps, 1))
        val = evaluate(engine, splits.val, info, req.resources.num_workers)
        val_curve.append(val.mse)
        if rank0:
            log(
                f"epoch {epoch + 1}/{req.epochs}: train_loss={train_losses[-1]:.6g} "
                f"val_mse={val.mse:.6g} ({time.perf_counter() - t_epoch:.1f} s)"
            )
        if early_stop.update(val.mse) and epoch + 1 < req.epochs:
            stopped_early = True
            break
    assert val is not None  # epochs >= 1
    test = evaluate(engine, splits.test, info, req.resources.num_workers) if splits.test else None

    result = None
    if rank0:
        path = run_dir / "model.pt"
        state = {k: v.detach().cpu() for k, v in engine.module.state_dict().items()}
        torch.save(state, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        result = TrainResult(
            arch_id=req.spec.arch_id,
            engine=engine_name,
            engine_note=note,
            world_size=info.world_size,
            device=device.type,
            precision=precision,
            zero_stage=req.resources.zero_stage if engine_name == "deepspeed" else 0,
            global_batch_size=global_batch,
            epochs_budget=req.epochs,
            epochs_run=len(val_curve),
            stopped_early=stopped_early,
            val_mse=val.mse,
            val_rmse=val.rmse,
            val_rmse_speed_mm_s=val.rmse_speed_mm_s,
            val_rmse_power_w=val.rmse_power_w,
            val_mse_constant=splits.val_mse_constant,
            val_samples=val.samples,
            train_samples=len(splits.train),
            train_loss_per_epoch=train_losses,
            val_mse_per_epoch=val_curve,
            samples_per_s=samples / train_s if train_s > 0 else 0.0,
            train_s=train_s,
            wall_s=time.perf_counter() - started,
            seed=req.seed,
            checkpoint_path=str(path.resolve()),
            checkpoint_sha256=digest,
            versions=versions(VERSION_PACKAGES),
            test=test,
        )
    if info.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return result
