"""A lightweight 3D-CNN space: the default for CPU demos.

A network is 1-4 conv blocks, then a global average pool and a small MLP head regressing
[speed, power]. Each block: Conv3d (``kernel_t`` x ``kernel_s`` x ``kernel_s``, "same" padding)
-> optional BatchNorm3d -> activation -> 2x downsampling in t, h and w (a 2x2x2 max pool, or
stride 2 in the conv itself). Downsampling is skipped on an axis that is already 1 long, so every
point builds at every input shape.

=====================  =====================================  =====================
Optuna name            choices                                spec field
=====================  =====================================  =====================
n_blocks               {1, 2, 3, 4}                           (length of the lists)
block{i}_channels      {8, 16, 32, 64, 128}                   ``channels[i]``
block{i}_kernel_t      {1, 3, 5}                              ``kernel_t[i]``
block{i}_kernel_s      {3, 5}                                 ``kernel_s[i]``
downsample             {"pool", "stride"}                     ``downsample``
batch_norm             {False, True}                          ``batch_norm``
activation             {"relu", "gelu", "silu"}               ``activation``
head_width             {32, 64, 128, 256}                     ``head_hidden[0]``
head_layers            {1, 2}                                 len(``head_hidden``)
frames                 {8, 16, 32}                            ``input.frames``
size                   {41, 64, 112}                          ``input.size``
=====================  =====================================  =====================

``block{i}_*`` (i = 1..4) are asked only for i <= n_blocks. A two-layer head halves its width
in the second layer (256 -> 128), as the baseline does.

Baseline: a mid-size 3D CNN of the kind published for melt-pool video — conv 5x5x5-64, pool,
conv 5x5x5-128, pool, fc 256, fc 128, 2 outputs, ReLU, no batch norm, at 32 x 41 x 41.
Deviation, on purpose: the head starts with a global average pool rather than a flatten. A
flatten after two pools at 32 x 41 x 41 is 8 x 10 x 10 x 128 = 102,400 features, a 26 M-weight
first FC layer; at 112 x 112 inputs it would be 200 M. The pool keeps every point of the space
small, which is the point of a CPU-demo space.
"""

from __future__ import annotations

from typing import Any

from hpc2edge.errors import SpecError
from hpc2edge.space.base import (
    ArchSpec,
    SearchSpace,
    TrialLike,
    check_choice,
    check_fixed,
    check_no_extra,
)

FAMILY = "cnn3d"

N_BLOCKS_CHOICES = (1, 2, 3, 4)
CHANNELS_CHOICES = (8, 16, 32, 64, 128)
KERNEL_T_CHOICES = (1, 3, 5)
KERNEL_S_CHOICES = (3, 5)
DOWNSAMPLE_CHOICES = ("pool", "stride")
BATCH_NORM_CHOICES = (False, True)
ACTIVATION_CHOICES = ("relu", "gelu", "silu")
HEAD_WIDTH_CHOICES = (32, 64, 128, 256)
HEAD_LAYERS_CHOICES = (1, 2)
FRAMES_CHOICES = (8, 16, 32)
SIZE_CHOICES = (41, 64, 112)

IN_CHANS = 1

PER_BLOCK = (
    ("channels", CHANNELS_CHOICES),
    ("kernel_t", KERNEL_T_CHOICES),
    ("kernel_s", KERNEL_S_CHOICES),
)
FIELDS = {
    "channels",
    "kernel_t",
    "kernel_s",
    "downsample",
    "batch_norm",
    "activation",
    "head_hidden",
    "in_chans",
}


def head_hidden(width: int, layers: int) -> tuple[int, ...]:
    """Widths of the head's hidden layers: ``width``, then halved."""
    return tuple(width // 2**i for i in range(layers))


class Cnn3DSpace(SearchSpace):
    """1-4 conv blocks with searched widths, kernels, downsampling, norm, activation, head."""

    name = "cnn3d"
    family = FAMILY

    def suggest(self, trial: TrialLike) -> ArchSpec:
        n_blocks = int(trial.suggest_categorical("n_blocks", N_BLOCKS_CHOICES))
        per_block: dict[str, list[int]] = {name: [] for name, _ in PER_BLOCK}
        for i in range(1, n_blocks + 1):
            for name, choices in PER_BLOCK:
                per_block[name].append(int(trial.suggest_categorical(f"block{i}_{name}", choices)))
        downsample = str(trial.suggest_categorical("downsample", DOWNSAMPLE_CHOICES))
        batch_norm = bool(trial.suggest_categorical("batch_norm", BATCH_NORM_CHOICES))
        activation = str(trial.suggest_categorical("activation", ACTIVATION_CHOICES))
        width = int(trial.suggest_categorical("head_width", HEAD_WIDTH_CHOICES))
        layers = int(trial.suggest_categorical("head_layers", HEAD_LAYERS_CHOICES))
        frames = int(trial.suggest_categorical("frames", FRAMES_CHOICES))
        size = int(trial.suggest_categorical("size", SIZE_CHOICES))
        params: dict[str, Any] = {k: tuple(v) for k, v in per_block.items()}
        params.update(
            downsample=downsample,
            batch_norm=batch_norm,
            activation=activation,
            head_hidden=head_hidden(width, layers),
            in_chans=IN_CHANS,
        )
        return ArchSpec(FAMILY, frames, size, params)

    def baseline(self) -> ArchSpec:
        return ArchSpec(
            FAMILY,
            32,
            41,
            {
                "channels": (64, 128),
                "kernel_t": (5, 5),
                "kernel_s": (5, 5),
                "downsample": "pool",
                "batch_norm": False,
                "activation": "relu",
                "head_hidden": (256, 128),
                "in_chans": IN_CHANS,
            },
        )

    def _input_choices(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return FRAMES_CHOICES, SIZE_CHOICES

    def _check_params(self, spec: ArchSpec) -> None:
        check_no_extra(spec, FIELDS)
        check_fixed(spec, "in_chans", IN_CHANS)
        check_choice(spec, "downsample", DOWNSAMPLE_CHOICES)
        check_choice(spec, "batch_norm", BATCH_NORM_CHOICES)
        check_choice(spec, "activation", ACTIVATION_CHOICES)
        n_blocks = None
        for name, choices in PER_BLOCK:
            value = spec.params.get(name)
            if not isinstance(value, tuple) or len(value) not in N_BLOCKS_CHOICES:
                raise SpecError(f"params.{name}: expected 1-4 integers, got {value!r}")
            if n_blocks is not None and len(value) != n_blocks:
                raise SpecError(f"params.{name}: {len(value)} entries, channels has {n_blocks}")
            n_blocks = len(value)
            for i, v in enumerate(value):
                if isinstance(v, bool) or v not in choices:
                    raise SpecError(f"params.{name}[{i}]: {v!r} not in {list(choices)}")
        hidden = spec.params.get("head_hidden")
        allowed = [head_hidden(w, n) for w in HEAD_WIDTH_CHOICES for n in HEAD_LAYERS_CHOICES]
        if hidden not in allowed:
            raise SpecError(f"params.head_hidden: {hidden!r} not in {[list(a) for a in allowed]}")

    def n_architectures(self) -> int:
        per_block = len(CHANNELS_CHOICES) * len(KERNEL_T_CHOICES) * len(KERNEL_S_CHOICES)
        bodies = sum(per_block**n for n in N_BLOCKS_CHOICES)
        rest = len(DOWNSAMPLE_CHOICES) * len(BATCH_NORM_CHOICES) * len(ACTIVATION_CHOICES)
        rest *= len(HEAD_WIDTH_CHOICES) * len(HEAD_LAYERS_CHOICES)
        return bodies * rest * len(FRAMES_CHOICES) * len(SIZE_CHOICES)

    def describe(self) -> dict[str, Any]:
        params: dict[str, Any] = {"n_blocks": {"choices": list(N_BLOCKS_CHOICES)}}
        for i in range(1, max(N_BLOCKS_CHOICES) + 1):
            for name, choices in PER_BLOCK:
                params[f"block{i}_{name}"] = {
                    "choices": list(choices),
                    "field": f"{name}[{i - 1}]",
                    "when": f"n_blocks >= {i}",
                }
        params["downsample"] = {"choices": list(DOWNSAMPLE_CHOICES), "field": "downsample"}
        params["batch_norm"] = {"choices": list(BATCH_NORM_CHOICES), "field": "batch_norm"}
        params["activation"] = {"choices": list(ACTIVATION_CHOICES), "field": "activation"}
        params["head_width"] = {"choices": list(HEAD_WIDTH_CHOICES), "field": "head_hidden[0]"}
        params["head_layers"] = {"choices": list(HEAD_LAYERS_CHOICES), "field": "len(head_hidden)"}
        params["frames"] = {"choices": list(FRAMES_CHOICES), "field": "input.frames"}
        params["size"] = {"choices": list(SIZE_CHOICES), "field": "input.size"}
        return {
            "name": self.name,
            "family": self.family,
            "parameters": params,
            "fixed": {"in_chans": IN_CHANS, "outputs": ["speed", "power"]},
            "input": {"frames": list(FRAMES_CHOICES), "size": list(SIZE_CHOICES)},
            "n_architectures": self.n_architectures(),
            "baseline": self.baseline().to_dict(),
            "training": self._describe_training(),
        }
