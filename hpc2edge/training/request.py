"""A validated ``hpc2edge.train`` request: everything one training run needs, as JSON.

The request (JSON)::

    {"trial_key": "study-1/17",                 # idempotency key of the trial
     "space": "cnn3d",                          # the spec must be a point of this space
     "spec": {...ArchSpec.to_dict()...},
     "hparams": {...TrainingHParams fields...}, # lr, lr_step_epochs, lr_gamma, batch_size_per_gpu,
                                                # epochs, optimizer ("adam" | "adamw")
     "epochs": 2,                               # optional: overrides hparams.epochs
     "seed": 0,
     "data": {"paths": ["/data/C027.hdf5", ...], "objects": null, "layers": null,
              "test_fraction": null,            # null: split by object (the paper's held-out
              "test_objects": null,             #   objects), else a random split of lines
              "val_fraction": 0.2,              # validation lines, drawn from the train split
              "evaluate_test": false},
     "options": {"scheduler": "step" | "cosine", "weight_decay": 0.0, "grad_clip_norm": 1.0,
                 "early_stop_patience": null},
     "resources": {"engine": "auto" | "deepspeed" | "ddp" | "single", "nproc": 1 | "auto",
                   "zero_stage": 0 | 1, "precision": "auto" | "fp32" | "bf16" | "fp16",
                   "num_workers": 0}}

:meth:`TrainRequest.from_json` checks every field and raises one ``ValueError`` that lists every
problem; nothing here imports torch (the Celery worker validates before it starts a child).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hpc2edge.errors import SpecError
from hpc2edge.space.base import ArchSpec, TrainingHParams
from hpc2edge.space.registry import get_space

ENGINE_CHOICES = ("auto", "deepspeed", "ddp", "single")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("step", "cosine")
OPTIMIZERS = ("adam", "adamw")
MAX_NPROC = 64
MAX_EPOCHS = 10_000

_TOP = {"trial_key", "space", "spec", "hparams", "epochs", "seed", "data", "options", "resources"}
_DATA = {"paths", "objects", "layers", "test_fraction", "test_objects", "val_fraction"}
_DATA_ALL = _DATA | {"evaluate_test"}
_OPTIONS = {"scheduler", "weight_decay", "grad_clip_norm", "early_stop_patience"}
_RESOURCES = {"engine", "nproc", "zero_stage", "precision", "num_workers"}


@dataclass(frozen=True)
class DataRequest:
    """Which lines to train, validate and test on."""

    paths: tuple[str, ...]
    objects: str | None = None
    layers: str | None = None
    test_fraction: float | None = None
    test_objects: tuple[str, ...] | None = None
    val_fraction: float = 0.2
    evaluate_test: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "objects": self.objects,
            "layers": self.layers,
            "test_fraction": self.test_fraction,
            "test_objects": None if self.test_objects is None else list(self.test_objects),
            "val_fraction": self.val_fraction,
            "evaluate_test": self.evaluate_test,
        }


@dataclass(frozen=True)
class Options:
    """The training recipe beyond :class:`TrainingHParams`."""

    scheduler: str = "step"  # the paper's StepLR
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0
    early_stop_patience: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler,
            "weight_decay": self.weight_decay,
            "grad_clip_norm": self.grad_clip_norm,
            "early_stop_patience": self.early_stop_patience,
        }


@dataclass(frozen=True)
class Resources:
    """How to run: engine, processes, precision. ``nproc`` 0 means "auto" (one per GPU)."""

    engine: str = "auto"
    nproc: int = 1
    zero_stage: int = 0
    precision: str = "auto"
    num_workers: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "nproc": "auto" if self.nproc == 0 else self.nproc,
            "zero_stage": self.zero_stage,
            "precision": self.precision,
            "num_workers": self.num_workers,
        }


@dataclass(frozen=True)
class TrainRequest:
    """A validated training request (see the module docstring)."""

    trial_key: str
    space: str
    spec: ArchSpec
    hparams: TrainingHParams
    epochs: int
    seed: int
    data: DataRequest
    options: Options = field(default_factory=Options)
    resources: Resources = field(default_factory=Resources)

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_key": self.trial_key,
            "space": self.space,
            "spec": self.spec.to_dict(),
            "hparams": self.hparams.to_dict(),
            "epochs": self.epochs,
            "seed": self.seed,
            "data": self.data.to_json(),
            "options": self.options.to_json(),
            "resources": self.resources.to_json(),
        }

    def digest(self) -> str:
        """sha256 of the canonical request: two deliveries of one trial must agree on it."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_json(cls, data: Any) -> TrainRequest:
        """Validate every field; raise ValueError listing all problems at once."""
        if not isinstance(data, dict):
            raise ValueError(f"request must be a JSON object, got {type(data).__name__}")
        problems: list[str] = [f"{k}: unknown field" for k in sorted(set(data) - _TOP)]
        v = _Validator(problems)

        trial_key = v.text(data, "trial_key", "trial_key")
        space_name = v.text(data, "space", "space", limit=50)
        spec: ArchSpec | None = None
        try:
            spec = ArchSpec.from_dict(data.get("spec"))
            if space_name:
                get_space(space_name).validate(spec)
        except SpecError as exc:
            problems.append(f"spec: {exc}")

        hparams = _hparams(data.get("hparams", {}), problems)
        epochs = v.integer(data, "epochs", "epochs", 1, MAX_EPOCHS, hparams.epochs)
        seed = v.integer(data, "seed", "seed", 0, 2**31 - 1, 0)
        data_req = _data(data.get("data"), problems, v)
        options = _options(data.get("options", {}), problems, v)
        resources = _resources(data.get("resources", {}), problems, v)
        if problems or spec is None:
            raise ValueError("invalid train request: " + "; ".join(problems))
        return cls(
            trial_key=trial_key,
            space=space_name,
            spec=spec,
            hparams=hparams,
            epochs=epochs,
            seed=seed,
            data=data_req,
            options=options,
            resources=resources,
        )


class _Validator:
    """Small typed getters that record a problem and return a placeholder instead of raising."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def text(self, obj: dict[str, Any], key: str, where: str, limit: int = 200) -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value or len(value) > limit:
            self.problems.append(f"{where}: expected a non-empty string of at most {limit} chars")
            return ""
        return value

    def optional_text(self, obj: dict[str, Any], key: str, where: str) -> str | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 1000:
            self.problems.append(f"{where}: expected a string or null")
            return None
        return value

    def integer(
        self, obj: dict[str, Any], key: str, where: str, lo: int, hi: int, default: int
    ) -> int:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.problems.append(f"{where}: expected an integer in [{lo}, {hi}], got {value!r}")
            return default
        return value

    def number(
        self,
        obj: dict[str, Any],
        key: str,
        where: str,
        default: float | None,
        *,
        lo: float,
        hi: float,
        nullable: bool = False,
    ) -> float | None:
        value = obj.get(key, default)
        if value is None and nullable:
            return None
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and lo <= value <= hi
        )
        if not ok:
            self.problems.append(f"{where}: expected a number in [{lo:g}, {hi:g}], got {value!r}")
            return default
        return float(value)  # type: ignore[arg-type]

    def choice(
        self, obj: dict[str, Any], key: str, where: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = obj.get(key, default)
        if value not in choices:
            self.problems.append(f"{where}: {value!r} is not one of {', '.join(choices)}")
            return default
        return str(value)

    def mapping(self, value: Any, where: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problems.append(f"{where}: expected an object, got {type(value).__name__}")
            return {}
        for key in sorted(set(value) - known):
            self.problems.append(f"{where}.{key}: unknown field")
        return value


def _hparams(value: Any, problems: list[str]) -> TrainingHParams:
    if not isinstance(value, dict):
        problems.append(f"hparams: expected an object, got {type(value).__name__}")
        return TrainingHParams()
    try:
        hp = TrainingHParams.from_dict(value)
    except (SpecError, TypeError) as exc:
        problems.append(f"hparams: {exc}")
        return TrainingHParams()
    checks = [
        (
            _is_number(hp.lr) and math.isfinite(hp.lr) and hp.lr > 0,
            "lr: expected a positive finite number",
        ),
        (_is_int(hp.lr_step_epochs) and hp.lr_step_epochs >= 1, "lr_step_epochs: expected >= 1"),
        (
            _is_number(hp.lr_gamma) and 0 < hp.lr_gamma <= 1,
            "lr_gamma: expected a number in (0, 1]",
        ),
        (
            _is_int(hp.batch_size_per_gpu) and 1 <= hp.batch_size_per_gpu <= 4096,
            "batch_size_per_gpu: expected an integer in [1, 4096]",
        ),
        (_is_int(hp.epochs) and 1 <= hp.epochs <= MAX_EPOCHS, "epochs: expected >= 1"),
        (hp.optimizer in OPTIMIZERS, f"optimizer: expected one of {', '.join(OPTIMIZERS)}"),
    ]
    bad = [f"hparams.{msg}" for ok, msg in checks if not ok]
    problems.extend(bad)
    return TrainingHParams() if bad else hp


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or a float, not a bool (JSON's true would otherwise pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _data(value: Any, problems: list[str], v: _Validator) -> DataRequest:
    obj = v.mapping(value, "data", _DATA_ALL)
    paths = obj.get("paths")
    ok = (
        isinstance(paths, list)
        and 0 < len(paths) <= 1000
        and all(isinstance(p, str) and p and len(p) <= 4096 for p in paths)
    )
    if not ok:
        if isinstance(value, dict):
            problems.append("data.paths: expected 1-1000 non-empty path strings")
        paths = []
    elif not all(str(p).startswith("/") for p in paths or []):
        # The training runs in a child process in its own run folder, on a node whose working
        # folder the sender does not know: only absolute paths mean the same thing there.
        problems.append("data.paths: must be absolute paths on the training node")
        paths = []
    test_objects = obj.get("test_objects")
    if test_objects is not None and not (
        isinstance(test_objects, list) and all(isinstance(o, str) and o for o in test_objects)
    ):
        problems.append("data.test_objects: expected a list of object names or null")
        test_objects = None
    evaluate_test = obj.get("evaluate_test", False)
    if not isinstance(evaluate_test, bool):
        problems.append("data.evaluate_test: expected true or false")
        evaluate_test = False
    return DataRequest(
        paths=tuple(paths),  # type: ignore[arg-type]
        objects=v.optional_text(obj, "objects", "data.objects"),
        layers=v.optional_text(obj, "layers", "data.layers"),
        test_fraction=v.number(
            obj, "test_fraction", "data.test_fraction", None, lo=1e-6, hi=0.999, nullable=True
        ),
        test_objects=None if test_objects is None else tuple(test_objects),
        val_fraction=v.number(obj, "val_fraction", "data.val_fraction", 0.2, lo=1e-6, hi=0.9)
        or 0.2,
        evaluate_test=evaluate_test,
    )


def _options(value: Any, problems: list[str], v: _Validator) -> Options:
    obj = v.mapping(value, "options", _OPTIONS)
    patience = obj.get("early_stop_patience")
    if patience is not None and not (_is_int(patience) and patience >= 1):
        problems.append("options.early_stop_patience: expected an integer >= 1 or null")
        patience = None
    return Options(
        scheduler=v.choice(obj, "scheduler", "options.scheduler", SCHEDULERS, "step"),
        weight_decay=v.number(obj, "weight_decay", "options.weight_decay", 0.0, lo=0.0, hi=10.0)
        or 0.0,
        grad_clip_norm=v.number(
            obj, "grad_clip_norm", "options.grad_clip_norm", 1.0, lo=1e-9, hi=1e9, nullable=True
        ),
        early_stop_patience=patience,
    )


def _resources(value: Any, problems: list[str], v: _Validator) -> Resources:
    obj = v.mapping(value, "resources", _RESOURCES)
    nproc_value = obj.get("nproc", 1)
    if nproc_value == "auto":
        nproc = 0
    elif _is_int(nproc_value) and 1 <= nproc_value <= MAX_NPROC:
        nproc = int(nproc_value)
    else:
        problems.append(f"resources.nproc: expected 'auto' or 1-{MAX_NPROC}, got {nproc_value!r}")
        nproc = 1
    return Resources(
        engine=v.choice(obj, "engine", "resources.engine", ENGINE_CHOICES, "auto"),
        nproc=nproc,
        zero_stage=v.integer(obj, "zero_stage", "resources.zero_stage", 0, 1, 0),
        precision=v.choice(obj, "precision", "resources.precision", PRECISIONS, "auto"),
        num_workers=v.integer(obj, "num_workers", "resources.num_workers", 0, 64, 0),
    )
