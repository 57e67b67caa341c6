"""Networks built from architecture specs: ``build_model(spec)`` and what can be counted.

``build_model`` is pure: no I/O, no global state besides the torch RNG its initialisers draw
from (seed it, or use :func:`hpc2edge.models.export.export_onnx`, which forks the RNG). Parameters
and FLOPs are counted on the ``meta`` device, which allocates nothing, so counting the 28 M-weight
Swin-T at 16 x 224 x 224 is instant.

FLOPs follow :mod:`torch.utils.flop_counter`: 2 per multiply-accumulate of matmuls and
convolutions (linear layers, attention products, Conv3d); normalisation, softmax, pooling and
element-wise ops are not counted. Batch size 1.
"""

from __future__ import annotations

import torch
from torch import nn

from hpc2edge.errors import SpecError
from hpc2edge.models.cnn3d import Cnn3D, Cnn3DConfig
from hpc2edge.models.swin3d import Swin3D, Swin3DConfig
from hpc2edge.space.base import ArchSpec

__all__ = [
    "Cnn3D",
    "Cnn3DConfig",
    "Swin3D",
    "Swin3DConfig",
    "build_model",
    "example_input",
    "flops",
    "input_shape",
    "params",
]


def build_model(spec: ArchSpec) -> nn.Module:
    """The network ``spec`` describes, freshly initialised from the torch RNG, in train mode.

    Raises:
        SpecError: unknown family, or params that do not make a network of it.
    """
    if spec.space == "swin3d":
        return Swin3D(Swin3DConfig.from_spec(spec.frames, spec.size, spec.params))
    if spec.space == "cnn3d":
        return Cnn3D(Cnn3DConfig.from_spec(spec.frames, spec.size, spec.params))
    raise SpecError(f"space: no model family {spec.space!r} (known: swin3d, cnn3d)")


def input_shape(spec: ArchSpec, batch_size: int = 1) -> tuple[int, int, int, int, int]:
    """(batch, channels, frames, height, width) of the network's input."""
    in_chans = spec.params.get("in_chans", 1)
    if not isinstance(in_chans, int):
        raise SpecError(f"params.in_chans: expected an integer, got {in_chans!r}")
    return (batch_size, in_chans, spec.frames, spec.size, spec.size)


def example_input(spec: ArchSpec, batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """A fixed standard-normal input, the same for the same (spec shape, batch, seed)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape(spec, batch_size), generator=generator)


def params(spec: ArchSpec) -> int:
    """Number of trainable parameters."""
    with torch.device("meta"):
        model = build_model(spec)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops(spec: ArchSpec) -> int:
    """FLOPs of one forward pass at batch 1 (see the module docstring for what counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(spec).eval()
        x = torch.empty(input_shape(spec))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())
