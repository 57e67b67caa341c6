"""A small 3D CNN regressing [speed, power] from a grey-scale clip.

Conv blocks (Conv3d with "same" padding -> optional BatchNorm3d -> activation -> 2x
downsampling by max pool or by conv stride), a global average pool, then an MLP head with the
same activation. Downsampling is skipped on an axis already 1 long, so short clips and small
crops build at any depth. The conv has no bias when batch norm follows it (the norm's shift
replaces it). Geometry is static per spec, like :mod:`hpc2edge.models.swin3d`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from hpc2edge.errors import SpecError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass(frozen=True)
class Cnn3DConfig:
    """Every number that defines a Cnn3D network. Fields match ``ArchSpec.params`` names."""

    frames: int = 32
    size: int = 41
    in_chans: int = 1
    channels: tuple[int, ...] = (64, 128)
    kernel_t: tuple[int, ...] = (5, 5)
    kernel_s: tuple[int, ...] = (5, 5)
    downsample: str = "pool"  # "pool": 2x2x2 max pool after the conv; "stride": conv stride 2
    batch_norm: bool = False
    activation: str = "relu"
    head_hidden: tuple[int, ...] = (256, 128)
    out_features: int = 2  # [speed, power]

    def __post_init__(self) -> None:
        problems = []
        if not len(self.channels) == len(self.kernel_t) == len(self.kernel_s) >= 1:
            problems.append("channels, kernel_t and kernel_s need the same length >= 1")
        if any(k % 2 == 0 for k in (*self.kernel_t, *self.kernel_s)):
            problems.append("kernel sizes must be odd ('same' padding)")
        if self.downsample not in ("pool", "stride"):
            problems.append(f"downsample {self.downsample!r} is not 'pool' or 'stride'")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}")
        if problems:
            raise SpecError("cnn3d: " + "; ".join(problems))

    @classmethod
    def from_spec(cls, frames: int, size: int, params: Any) -> Cnn3DConfig:
        names = {f.name for f in fields(cls)} - {"frames", "size", "out_features"}
        missing = sorted(names - set(params))
        extra = sorted(set(params) - names)
        if missing or extra:
            raise SpecError(f"cnn3d params: missing {missing}, unknown {extra}")
        return cls(frames=frames, size=size, **dict(params))


class ConvBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: tuple[int, int, int],
        factor: tuple[int, int, int],
        cfg: Cnn3DConfig,
    ) -> None:
        super().__init__()
        stride = factor if cfg.downsample == "stride" else (1, 1, 1)
        padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
        self.conv = nn.Conv3d(
            c_in, c_out, kernel, stride=stride, padding=padding, bias=not cfg.batch_norm
        )
        self.norm = nn.BatchNorm3d(c_out) if cfg.batch_norm else nn.Identity()
        self.act = ACTIVATIONS[cfg.activation]()
        pooled = cfg.downsample == "pool" and factor != (1, 1, 1)
        self.pool = nn.MaxPool3d(factor, stride=factor) if pooled else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class Cnn3D(nn.Module):
    """(B, in_chans, T, S, S) clip -> (B, 2) [speed, power] (normalised targets)."""

    def __init__(self, cfg: Cnn3DConfig) -> None:
        super().__init__()
        self.config = cfg
        blocks = []
        dims = [cfg.frames, cfg.size, cfg.size]
        c_in = cfg.in_chans
        for c_out, kt, ks in zip(cfg.channels, cfg.kernel_t, cfg.kernel_s, strict=True):
            factor = (2 if dims[0] > 1 else 1, 2 if dims[1] > 1 else 1, 2 if dims[2] > 1 else 1)
            blocks.append(ConvBlock(c_in, c_out, (kt, ks, ks), factor, cfg))
            # Max pool floors (41 -> 20); a stride-2 "same" conv ceils (41 -> 21).
            if cfg.downsample == "pool":
                dims = [d // f for d, f in zip(dims, factor, strict=True)]
            else:
                dims = [-(-d // f) for d, f in zip(dims, factor, strict=True)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        layers: list[nn.Module] = []
        for hidden in cfg.head_hidden:
            layers += [nn.Linear(c_in, hidden), ACTIVATIONS[cfg.activation]()]
            c_in = hidden
        layers.append(nn.Linear(c_in, cfg.out_features))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3, 4)))  # global average pool
