"""The paper's search space: a Video Swin Transformer ("Swin3D") regressing [speed, power].

Searched (docs/paper.md, "Search space"), 124,416 architectures:

=================  ==========================================  =====================
Optuna name        choices                                     spec field
=================  ==========================================  =====================
patch_t/_h/_w      {2, 4} each                                 ``patch_size`` (t,h,w)
depth_1 .. 4       {1, 2, 4} each                              ``depths``
heads_1 .. 4       {3}, {3, 6}, {3, 6, 12}, {3, 6, 12, 24}     ``num_heads``
mlp_ratio          {1, 2, 3, 4}                                ``mlp_ratio``
embed_dim          {24, 48}                                    ``embed_dim``
=================  ==========================================  =====================

Fixed, but part of every spec (and so of its id): window (8, 7, 7), one input channel, the
paper's head widths (pool -> 400 -> 200 -> ReLU -> 2), input 16 x 224 x 224. Every head choice
divides its stage's width (embed * 2**i for stage i), so every point of the space builds.

The opt-in ``swin3d-input`` space also searches the input (``frames`` {8, 16, 32}, ``size``
{41, 112, 224}): the paper upsamples 41 x 41 crops to 224 x 224, ~30x the pixels, and input
resolution is the cheapest latency knob there is.

Baseline: Video Swin-T (embed 96, depths 2-2-6-2, heads 3-6-12-24, patch (2, 4, 4), window
(8, 7, 7), mlp 4) at 16 x 224 x 224, the paper's human-designed reference. It is *not* a point
of the searched space (embed 96 and depth 6 are outside it); :meth:`Swin3DSpace.validate`
accepts it anyway, because the reports must be able to measure and export it.
"""

from __future__ import annotations

import math
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

FAMILY = "swin3d"

PATCH_CHOICES = (2, 4)
DEPTH_CHOICES = (1, 2, 4)
HEAD_CHOICES = ((3,), (3, 6), (3, 6, 12), (3, 6, 12, 24))  # per stage
MLP_RATIO_CHOICES = (1, 2, 3, 4)
EMBED_DIM_CHOICES = (24, 48)

WINDOW_SIZE = (8, 7, 7)  # (t, h, w) tokens, clamped to the feature map per stage
IN_CHANS = 1  # grey-scale melt-pool video
# The paper's regression head: Linear(8C, 400) -> Linear(400, 200) -> ReLU -> Linear(200, 2).
HEAD_HIDDEN = (400, 200)

FRAMES = 16
SIZE = 224
FRAMES_CHOICES = (8, 16, 32)  # swin3d-input only
SIZE_CHOICES = (41, 112, 224)  # swin3d-input only

PAPER_AXES = ("t", "h", "w")
STAGES = 4

BASELINE_PARAMS: dict[str, Any] = {
    "embed_dim": 96,
    "depths": (2, 2, 6, 2),
    "num_heads": (3, 6, 12, 24),
    "patch_size": (2, 4, 4),
    "window_size": WINDOW_SIZE,
    "mlp_ratio": 4,
    "in_chans": IN_CHANS,
    "head_hidden": HEAD_HIDDEN,
}


def _spec(frames: int, size: int, **params: Any) -> ArchSpec:
    full: dict[str, Any] = {
        "window_size": WINDOW_SIZE,
        "in_chans": IN_CHANS,
        "head_hidden": HEAD_HIDDEN,
    }
    full.update(params)
    return ArchSpec(FAMILY, frames, size, full)


class Swin3DSpace(SearchSpace):
    """The paper's Swin3D space; ``search_input=True`` also searches frames and size."""

    family = FAMILY

    def __init__(self, *, search_input: bool = False) -> None:
        self.search_input = search_input
        self.name = "swin3d-input" if search_input else "swin3d"

    def suggest(self, trial: TrialLike) -> ArchSpec:
        patch = tuple(
            int(trial.suggest_categorical(f"patch_{axis}", PATCH_CHOICES)) for axis in PAPER_AXES
        )
        depths = tuple(
            int(trial.suggest_categorical(f"depth_{i + 1}", DEPTH_CHOICES)) for i in range(STAGES)
        )
        heads = tuple(
            int(trial.suggest_categorical(f"heads_{i + 1}", HEAD_CHOICES[i])) for i in range(STAGES)
        )
        mlp_ratio = int(trial.suggest_categorical("mlp_ratio", MLP_RATIO_CHOICES))
        embed_dim = int(trial.suggest_categorical("embed_dim", EMBED_DIM_CHOICES))
        frames, size = FRAMES, SIZE
        if self.search_input:
            frames = int(trial.suggest_categorical("frames", FRAMES_CHOICES))
            size = int(trial.suggest_categorical("size", SIZE_CHOICES))
        return _spec(
            frames,
            size,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=heads,
            patch_size=patch,
            mlp_ratio=mlp_ratio,
        )

    def baseline(self) -> ArchSpec:
        return ArchSpec(FAMILY, FRAMES, SIZE, BASELINE_PARAMS)

    def smallest(self) -> ArchSpec:
        """The point with the fewest parameters (and least compute): every choice minimal,
        patch (4, 4, 4) for the fewest tokens."""
        return _spec(
            FRAMES,
            SIZE,
            embed_dim=min(EMBED_DIM_CHOICES),
            depths=(min(DEPTH_CHOICES),) * STAGES,
            num_heads=tuple(min(c) for c in HEAD_CHOICES),
            patch_size=(max(PATCH_CHOICES),) * 3,
            mlp_ratio=min(MLP_RATIO_CHOICES),
        )

    def largest(self) -> ArchSpec:
        """The point with the most parameters and compute: every choice maximal, patch
        (2, 2, 2) for the most tokens."""
        return _spec(
            FRAMES,
            SIZE,
            embed_dim=max(EMBED_DIM_CHOICES),
            depths=(max(DEPTH_CHOICES),) * STAGES,
            num_heads=tuple(max(c) for c in HEAD_CHOICES),
            patch_size=(min(PATCH_CHOICES),) * 3,
            mlp_ratio=max(MLP_RATIO_CHOICES),
        )

    def _input_choices(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self.search_input:
            return FRAMES_CHOICES, SIZE_CHOICES
        return (FRAMES,), (SIZE,)

    def _check_params(self, spec: ArchSpec) -> None:
        check_no_extra(spec, set(BASELINE_PARAMS))
        if spec.params == self.baseline().params:
            return  # the human reference sits outside the searched choices on purpose
        check_fixed(spec, "window_size", WINDOW_SIZE)
        check_fixed(spec, "in_chans", IN_CHANS)
        check_fixed(spec, "head_hidden", HEAD_HIDDEN)
        check_choice(spec, "embed_dim", EMBED_DIM_CHOICES)
        check_choice(spec, "mlp_ratio", MLP_RATIO_CHOICES)
        for name, per_item in (
            ("patch_size", (PATCH_CHOICES,) * 3),
            ("depths", (DEPTH_CHOICES,) * STAGES),
            ("num_heads", HEAD_CHOICES),
        ):
            value = spec.params.get(name)
            if not isinstance(value, tuple) or len(value) != len(per_item):
                raise SpecError(f"params.{name}: expected {len(per_item)} integers, got {value!r}")
            for i, (v, choices) in enumerate(zip(value, per_item, strict=True)):
                if isinstance(v, bool) or v not in choices:
                    raise SpecError(f"params.{name}[{i}]: {v!r} not in {list(choices)}")

    def n_architectures(self) -> int:
        """Number of distinct specs this space can suggest."""
        n = len(PATCH_CHOICES) ** 3 * len(DEPTH_CHOICES) ** STAGES
        n *= math.prod(len(c) for c in HEAD_CHOICES) * len(MLP_RATIO_CHOICES)
        n *= len(EMBED_DIM_CHOICES)
        if self.search_input:
            n *= len(FRAMES_CHOICES) * len(SIZE_CHOICES)
        return n

    def describe(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            f"patch_{a}": {"choices": list(PATCH_CHOICES), "field": f"patch_size[{i}]"}
            for i, a in enumerate(PAPER_AXES)
        }
        for i in range(STAGES):
            params[f"depth_{i + 1}"] = {"choices": list(DEPTH_CHOICES), "field": f"depths[{i}]"}
        for i in range(STAGES):
            params[f"heads_{i + 1}"] = {
                "choices": list(HEAD_CHOICES[i]),
                "field": f"num_heads[{i}]",
            }
        params["mlp_ratio"] = {"choices": list(MLP_RATIO_CHOICES), "field": "mlp_ratio"}
        params["embed_dim"] = {"choices": list(EMBED_DIM_CHOICES), "field": "embed_dim"}
        inputs: dict[str, Any] = {"frames": FRAMES, "size": SIZE}
        if self.search_input:
            params["frames"] = {"choices": list(FRAMES_CHOICES), "field": "input.frames"}
            params["size"] = {"choices": list(SIZE_CHOICES), "field": "input.size"}
            inputs = {"frames": list(FRAMES_CHOICES), "size": list(SIZE_CHOICES)}
        return {
            "name": self.name,
            "family": self.family,
            "parameters": params,
            "fixed": {
                "window_size": list(WINDOW_SIZE),
                "in_chans": IN_CHANS,
                "head_hidden": list(HEAD_HIDDEN),
                "outputs": ["speed", "power"],
            },
            "input": inputs,
            "n_architectures": self.n_architectures(),
            "baseline": self.baseline().to_dict(),
            "training": self._describe_training(),
        }
