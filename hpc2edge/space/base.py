"""Architecture specs, search spaces and the registry of spaces.

An :class:`ArchSpec` is the unit of work of the whole system: the orchestrator asks Optuna for
one, the artifact store keys ONNX files by it, the measurement store deduplicates by its id. So
its identity must be stable across processes, machines and Python versions:

- **Canonical form.** ``{"input": {"frames": T, "size": S}, "params": {...}, "space": NAME}``
  serialised with sorted keys and no whitespace, ASCII only. Ints stay ints, booleans stay
  booleans, floats are rounded to 12 significant digits (so ``0.1 + 0.2`` and ``0.3`` are the
  same spec), tuples become lists. ``arch_id = sha256(canonical JSON as UTF-8)``, hex.
- **What is inside the id.** Everything that changes the network or its input: the model family
  (``space``), every architecture parameter *including the fixed ones* (window size, head
  widths, input channels: if a default ever changes, the ids change with it), and the input
  shape (frames, size). Training hyper-parameters (:class:`TrainingHParams`) sit beside the spec,
  not inside the id: the latency of a network does not depend on its learning rate.
- **Family vs. space.** ``ArchSpec.space`` names the model family that
  :func:`hpc2edge.models.build_model` dispatches on (``swin3d``, ``cnn3d``). A registered
  :class:`SearchSpace` has a ``name`` (``swin3d``, ``swin3d-input``, ``cnn3d``) and a ``family``.
  ``swin3d-input`` is the paper's space plus searched input frames and size; its specs are
  ``swin3d`` specs, so the same network at the same input has the same id in both spaces.

Neither this module nor the spaces import torch or optuna: the orchestrator's ask path and the
edge worker need specs and ids without them. ``SearchSpace.suggest`` is written against the few
``suggest_*`` methods of an Optuna trial (:class:`TrialLike`); :meth:`SearchSpace.sample` drives
the same code with a seeded :class:`random.Random`, so tests and the CLI sample without Optuna.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from hpc2edge.errors import SpecError

Scalar = bool | int | float | str | None
Value = Scalar | tuple[Scalar, ...]

_FLOAT_DIGITS = 12  # significant digits kept in the canonical form


def _normalise_float(x: float, where: str) -> float:
    if not math.isfinite(x):
        raise SpecError(f"{where}: {x!r} is not a finite number")
    return float(f"{x:.{_FLOAT_DIGITS}g}")


def _normalise_scalar(value: Any, where: str) -> Scalar:
    # bool is an int subclass: test it first so True stays true, not 1.
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _normalise_float(value, where)
    raise SpecError(f"{where}: unsupported value {value!r} (use numbers, strings, booleans)")


def _normalise_value(value: Any, where: str) -> Value:
    if isinstance(value, (list, tuple)):
        return tuple(_normalise_scalar(v, f"{where}[{i}]") for i, v in enumerate(value))
    return _normalise_scalar(value, where)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"{where}: expected a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class ArchSpec:
    """One architecture of one model family at one input shape. Immutable, hashable.

    Attributes:
        space: the model family (``swin3d`` or ``cnn3d``); :func:`hpc2edge.models.build_model`
            dispatches on it.
        frames: input clip length T (frames).
        size: input height = width S (pixels).
        params: architecture parameters, names as the model's config fields. Values are
            numbers, strings, booleans or tuples of them; the mapping is read-only.
    """

    space: str
    frames: int
    size: int
    params: Mapping[str, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.space, str) or not self.space:
            raise SpecError(f"space: expected a non-empty name, got {self.space!r}")
        object.__setattr__(self, "frames", _positive_int(self.frames, "input.frames"))
        object.__setattr__(self, "size", _positive_int(self.size, "input.size"))
        if not isinstance(self.params, Mapping):
            raise SpecError(f"params: expected an object, got {type(self.params).__name__}")
        normalised: dict[str, Value] = {}
        for key in sorted(self.params):
            if not isinstance(key, str):
                raise SpecError(f"params: parameter names must be strings, got {key!r}")
            normalised[key] = _normalise_value(self.params[key], f"params.{key}")
        object.__setattr__(self, "params", MappingProxyType(normalised))

    # --- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples as lists) in the canonical layout."""
        return {
            "space": self.space,
            "input": {"frames": self.frames, "size": self.size},
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        """Inverse of :meth:`to_dict`. Raises SpecError naming the malformed field."""
        if not isinstance(data, Mapping):
            raise SpecError(f"spec: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"space", "input", "params"})
        if unknown:
            raise SpecError(f"spec: unknown field(s) {', '.join(map(repr, unknown))}")
        for key in ("space", "input", "params"):
            if key not in data:
                raise SpecError(f"spec: missing field {key!r}")
        shape = data["input"]
        if not isinstance(shape, Mapping) or set(shape) != {"frames", "size"}:
            raise SpecError(f"input: expected {{'frames': T, 'size': S}}, got {shape!r}")
        return cls(data["space"], shape["frames"], shape["size"], data["params"])

    def to_json(self, indent: int | None = None) -> str:
        """Readable JSON (sorted keys); use :meth:`canonical_json` for hashing."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchSpec:
        """Parse a spec; malformed JSON or fields raise SpecError."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SpecError(f"spec: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, ASCII: the exact text :attr:`arch_id` hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @property
    def arch_id(self) -> str:
        """sha256 hex digest of :meth:`canonical_json` (64 characters)."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    # --- variants -----------------------------------------------------------------------------

    def with_input(self, frames: int | None = None, size: int | None = None) -> ArchSpec:
        """The same architecture at another input shape (a new id). Used by tests and
        benchmarks to run big networks on small clips; windows clamp to the feature maps."""
        return ArchSpec(
            self.space,
            self.frames if frames is None else frames,
            self.size if size is None else size,
            self.params,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArchSpec):
            return NotImplemented
        return self.canonical_json() == other.canonical_json()

    def __hash__(self) -> int:
        return hash(self.canonical_json())

    def __repr__(self) -> str:
        return f"ArchSpec({self.canonical_json()})"


@dataclass(frozen=True)
class TrainingHParams:
    """Training hyper-parameters of one trial: beside the ArchSpec, never inside its id.

    The paper's recipe: Adam, StepLR, batch 8 per GPU, 2 epochs.
    """

    lr: float = 1e-3
    lr_step_epochs: int = 20
    lr_gamma: float = 0.5
    batch_size_per_gpu: int = 8
    epochs: int = 2
    optimizer: str = "adam"

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "lr_step_epochs": self.lr_step_epochs,
            "lr_gamma": self.lr_gamma,
            "batch_size_per_gpu": self.batch_size_per_gpu,
            "epochs": self.epochs,
            "optimizer": self.optimizer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingHParams:
        unknown = sorted(set(data) - set(cls().to_dict()))
        if unknown:
            raise SpecError(f"training: unknown field(s) {', '.join(map(repr, unknown))}")
        return cls(**data)


class TrialLike(Protocol):
    """The part of ``optuna.trial.Trial`` a search space uses (FixedTrial fits too)."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


class RandomTrial:
    """A seeded stand-in for an Optuna trial: uniform over choices, log-uniform when asked.

    Deterministic per seed; needs no Optuna. ``params`` records what was suggested, by name.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = choices[self._rng.randrange(len(choices))]
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if log:
            value = math.exp(self._rng.uniform(math.log(low), math.log(high)))
        else:
            value = self._rng.uniform(low, high)
        self.params[name] = value
        return value


# The paper's training recipe, searched alongside the architecture (docs/paper.md, "Search space").
LR_RANGE = (1e-4, 1.0)  # log-uniform
LR_STEP_EPOCHS_CHOICES = (10, 20, 40)
LR_GAMMA_RANGE = (0.1, 0.9)  # uniform


class SearchSpace(abc.ABC):
    """A family of architectures Optuna can search, and the only place that knows their
    parameter names, choices and fixed values.

    Contract:

    - :meth:`suggest` asks ``trial`` with stable parameter names (Optuna keys its history by
      them: renaming one breaks resumed studies) and returns a spec that :meth:`validate`
      accepts. Parameters that only exist under some choice (the layers of block 3 when there
      are 2 blocks) are not asked, and are absent from the spec, so equal networks get equal ids.
    - :meth:`sample` is :meth:`suggest` driven by a seeded :class:`RandomTrial`: the same seed
      gives the same spec in every process.
    - :meth:`baseline` is the hand-designed reference network the reports compare against.
    - :meth:`validate` raises :class:`SpecError` naming the first field that does not belong.
    - :meth:`describe` is JSON-able: parameters and their choices, fixed values, inputs.

    Attributes:
        name: the registry name (``hpc2edge space show NAME``).
        family: the model family of the specs it makes (``ArchSpec.space``).
    """

    name: str
    family: str

    @abc.abstractmethod
    def suggest(self, trial: TrialLike) -> ArchSpec:
        """Ask ``trial`` (an ``optuna.trial.Trial`` or :class:`RandomTrial`) for one spec."""

    @abc.abstractmethod
    def baseline(self) -> ArchSpec:
        """The hand-designed reference architecture of this family."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Parameters with their choices, fixed values and inputs, as a JSON-able dict."""

    @abc.abstractmethod
    def _check_params(self, spec: ArchSpec) -> None:
        """Raise SpecError if ``spec.params`` are not a point of this space."""

    @abc.abstractmethod
    def _input_choices(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Allowed (frames, sizes)."""

    def sample(self, seed: int | random.Random) -> ArchSpec:
        """A uniformly drawn spec, deterministic per seed, without Optuna."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)  # noqa: S311 (seeded sampling)
        return self.suggest(RandomTrial(rng))

    def validate(self, spec: ArchSpec) -> ArchSpec:
        """Return ``spec`` if it is a point of this space, else raise SpecError."""
        if not isinstance(spec, ArchSpec):
            raise SpecError(f"expected an ArchSpec, got {type(spec).__name__}")
        if spec.space != self.family:
            raise SpecError(
                f"space: spec is a {spec.space!r} architecture, not one of space {self.name!r}"
            )
        frames, sizes = self._input_choices()
        if spec.frames not in frames:
            raise SpecError(f"input.frames: {spec.frames} not in {list(frames)} of {self.name!r}")
        if spec.size not in sizes:
            raise SpecError(f"input.size: {spec.size} not in {list(sizes)} of {self.name!r}")
        self._check_params(spec)
        return spec

    def suggest_training(self, trial: TrialLike) -> TrainingHParams:
        """The paper's training hyper-parameters (Adam lr, StepLR step and gamma)."""
        return TrainingHParams(
            lr=_normalise_float(trial.suggest_float("lr", *LR_RANGE, log=True), "lr"),
            lr_step_epochs=int(trial.suggest_categorical("lr_step_epochs", LR_STEP_EPOCHS_CHOICES)),
            lr_gamma=_normalise_float(trial.suggest_float("lr_gamma", *LR_GAMMA_RANGE), "gamma"),
        )

    def _describe_training(self) -> dict[str, Any]:
        return {
            "lr": {"low": LR_RANGE[0], "high": LR_RANGE[1], "log": True},
            "lr_step_epochs": {"choices": list(LR_STEP_EPOCHS_CHOICES)},
            "lr_gamma": {"low": LR_GAMMA_RANGE[0], "high": LR_GAMMA_RANGE[1], "log": False},
            "fixed": {
                k: v
                for k, v in TrainingHParams().to_dict().items()
                if k not in ("lr", "lr_step_epochs", "lr_gamma")
            },
        }


def check_choice(spec: ArchSpec, name: str, choices: Sequence[Any]) -> Any:
    """Return ``spec.params[name]`` if present and one of ``choices``, else raise SpecError."""
    if name not in spec.params:
        raise SpecError(f"params.{name}: missing")
    value = spec.params[name]
    # type() as well as ==: True == 1 would otherwise pass for an int parameter.
    if not any(type(value) is type(c) and value == c for c in choices):
        raise SpecError(f"params.{name}: {value!r} not in {list(choices)}")
    return value


def check_fixed(spec: ArchSpec, name: str, expected: Value) -> None:
    """Raise SpecError unless ``spec.params[name] == expected`` (the space's fixed value)."""
    if name not in spec.params:
        raise SpecError(f"params.{name}: missing")
    if spec.params[name] != expected:
        raise SpecError(f"params.{name}: {spec.params[name]!r} is fixed to {expected!r}")


def check_no_extra(spec: ArchSpec, allowed: set[str]) -> None:
    extra = sorted(set(spec.params) - allowed)
    if extra:
        raise SpecError(f"params.{extra[0]}: not a parameter of this space")
