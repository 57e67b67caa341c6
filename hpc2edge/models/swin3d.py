"""Video Swin Transformer ("Swin3D") regressing [speed, power] from a grey-scale clip.

Written from the Video Swin paper's description (Liu et al., 2022) in plain PyTorch:

- **3D patch embedding**: the clip is zero-padded to a multiple of the patch, cut into
  non-overlapping (t, h, w) patches by a strided Conv3d, then layer-normalised.
- **4 stages** of Swin blocks. Inside a stage the token grid is (D, H, W); a block attends
  within non-overlapping 3D windows, every second block with the windows shifted by half a
  window (cyclic roll + attention mask so tokens only attend to tokens that were neighbours
  before the roll). Attention has a learned **relative position bias** per head.
- **Patch merging** between stages halves H and W and doubles C; D is kept (as in Video Swin).
- **Head** (the paper's): layer norm, global average pool over (D, H, W), then
  Linear(8C, 400) -> Linear(400, 200) -> ReLU -> Linear(200, 2). There is no nonlinearity
  between the first two layers; kept as the paper has it.

Decisions:

- **Static geometry.** A spec fixes the input shape, so every grid, window, pad and shift is a
  Python int computed at build time. Reshapes use -1 only for the batch axis: the ONNX graph
  has a dynamic batch and otherwise constant shapes, and nothing depends on data.
- **Windows clamp to the feature map** per stage (Video Swin's ``get_window_size``): on an axis
  where the map is no longer than the window, the window is the map and that axis is not
  shifted. The relative position bias table is sized from the *clamped* window, so it holds no
  rows that can never be used (Video Swin sizes it from the nominal window); parameter counts
  therefore depend slightly on the input shape.
- **Padding** to a multiple of the window happens after ``norm1``, with zeros, like Video Swin;
  the shift mask is computed on the padded grid.
- **Masks are computed, not stored.** Each stage keeps the small (nW, N) window-region labels
  and one (N, N) position index shared by its blocks; the (nW, N, N) additive mask is built in
  ``forward``. Stored masks would be ~400 MB in the ONNX file of the largest space point
  (observed). Both are *persistent* buffers: the TorchScript exporter turns non-persistent
  buffers into trace-time constants and would bake the full masks into the file again.
- No dropout or stochastic depth: the paper trains 2 epochs, and eval-mode export is the point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpc2edge.errors import SpecError

Int3 = tuple[int, int, int]

# Swin's value for "must not attend": large enough that softmax gives ~0, small enough to keep
# fp16 finite (TensorRT FP16 engines run these graphs).
MASK_VALUE = -100.0


@dataclass(frozen=True)
class Swin3DConfig:
    """Every number that defines a Swin3D network. Fields match ``ArchSpec.params`` names."""

    frames: int = 16
    size: int = 224
    in_chans: int = 1
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    patch_size: Int3 = (2, 4, 4)
    window_size: Int3 = (8, 7, 7)
    mlp_ratio: float = 4.0
    head_hidden: tuple[int, ...] = (400, 200)
    out_features: int = 2  # [speed, power]

    def __post_init__(self) -> None:
        problems = []
        if len(self.depths) != len(self.num_heads):
            problems.append(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if heads <= 0 or dim % heads:
                problems.append(f"num_heads[{i}]={heads} does not divide stage width {dim}")
        if len(self.patch_size) != 3 or len(self.window_size) != 3:
            problems.append("patch_size and window_size need 3 entries (t, h, w)")
        if len(self.head_hidden) < 1:
            problems.append("head_hidden needs at least one layer")
        if problems:
            raise SpecError("swin3d: " + "; ".join(problems))

    @classmethod
    def from_spec(cls, frames: int, size: int, params: Any) -> Swin3DConfig:
        names = {f.name for f in fields(cls)} - {"frames", "size", "out_features"}
        missing = sorted(names - set(params))
        extra = sorted(set(params) - names)
        if missing or extra:
            raise SpecError(f"swin3d params: missing {missing}, unknown {extra}")
        return cls(frames=frames, size=size, **dict(params))


def _per_axis(op: Callable[[int, int], int], a: Int3, b: Int3) -> Int3:
    return (op(a[0], b[0]), op(a[1], b[1]), op(a[2], b[2]))


def stage_grids(cfg: Swin3DConfig) -> list[Int3]:
    """Token grid (D, H, W) of each stage: patch embedding pads up, merging pads H, W to even."""
    d = math.ceil(cfg.frames / cfg.patch_size[0])
    h = math.ceil(cfg.size / cfg.patch_size[1])
    w = math.ceil(cfg.size / cfg.patch_size[2])
    grids = []
    for _ in cfg.depths:
        grids.append((d, h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return grids


def window_partition(x: torch.Tensor, grid: Int3, window: Int3) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * nW, window volume, C), windows in (d, h, w) raster order."""
    (d, h, w), (wd, wh, ww) = grid, window
    c = x.shape[-1]
    x = x.reshape(-1, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, c)


def window_reverse(windows: torch.Tensor, grid: Int3, window: Int3) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    (d, h, w), (wd, wh, ww) = grid, window
    c = windows.shape[-1]
    x = windows.reshape(-1, d // wd, h // wh, w // ww, wd, wh, ww, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, d, h, w, c)


def relative_position_index(window: Int3) -> torch.Tensor:
    """(N, N) row of the bias table for each (query, key) pair of one window."""
    wd, wh, ww = window
    coords = torch.stack(
        torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij")
    ).flatten(1)  # (3, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 3), in [-(w-1), w-1]
    rel = rel + torch.tensor([wd - 1, wh - 1, ww - 1])
    return rel[..., 0] * (2 * wh - 1) * (2 * ww - 1) + rel[..., 1] * (2 * ww - 1) + rel[..., 2]


def shift_region_labels(grid: Int3, window: Int3, shift: Int3) -> torch.Tensor:
    """(nW, N) label of the pre-roll region each token of each window came from.

    After the cyclic roll, a window at the far edge holds tokens from up to 2 regions per axis
    that were not neighbours; tokens may only attend to tokens with the same label.
    """
    labels = torch.zeros(grid)
    regions = []
    for w, s in zip(window, shift, strict=True):
        regions.append((slice(0, -w), slice(-w, -s), slice(-s, None)) if s else (slice(None),))
    label = 0
    for rd in regions[0]:
        for rh in regions[1]:
            for rw in regions[2]:
                labels[rd, rh, rw] = label
                label += 1
    return window_partition(labels[None, ..., None], grid, window).squeeze(-1)


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside one window, with a relative position bias."""

    def __init__(self, dim: int, window: Int3, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.tokens = window[0] * window[1] * window[2]
        self.scale = (dim // num_heads) ** -0.5
        n_offsets = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n_offsets, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, position_index: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        n, c, heads = self.tokens, x.shape[-1], self.num_heads
        qkv = self.qkv(x).reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B*nW, heads, N, C/heads)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, heads).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            attn = attn.reshape(-1, n_windows, heads, n, n) + mask[None, :, None]
            attn = attn.reshape(-1, heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock3D(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, each with a residual connection."""

    def __init__(
        self, dim: int, heads: int, grid: Int3, window: Int3, shift: Int3, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.grid, self.window, self.shift = grid, window, shift
        # Zero-pad the grid up to a multiple of the window (after norm1, as Video Swin does).
        self.padded = _per_axis(lambda g, w: math.ceil(g / w) * w, grid, window)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, position_index: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        (d, h, w), (pd, ph, pw) = self.grid, self.padded
        shortcut = x
        x = self.norm1(x)
        if (pd, ph, pw) != (d, h, w):
            x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h, 0, pd - d))
        shifted = any(self.shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in self.shift), dims=(1, 2, 3))
        windows = window_partition(x, self.padded, self.window)
        windows = self.attn(windows, position_index, mask if shifted else None)
        x = window_reverse(windows, self.padded, self.window)
        if shifted:
            x = torch.roll(x, shifts=self.shift, dims=(1, 2, 3))
        if (pd, ph, pw) != (d, h, w):
            x = x[:, :d, :h, :w, :]
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 (h, w) neighbourhood (4C), normalise, project to 2C."""

    def __init__(self, dim: int, grid: Int3) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w = self.grid
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x0 = x[:, :, 0::2, 0::2, :]
        x1 = x[:, :, 1::2, 0::2, :]
        x2 = x[:, :, 0::2, 1::2, :]
        x3 = x[:, :, 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], dim=-1)))


class Stage(nn.Module):
    """``depth`` Swin blocks (every second one shifted), then optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        grid: Int3,
        window: Int3,
        mlp_ratio: float,
        merge: bool,
    ) -> None:
        super().__init__()
        # Clamp to the map; shift only where the (nominal) window is smaller than the map.
        self.window = _per_axis(min, grid, window)
        self.shift = _per_axis(lambda g, w: 0 if g <= w else w // 2, grid, window)
        padded = _per_axis(lambda g, w: math.ceil(g / w) * w, grid, self.window)
        self.register_buffer(
            "position_index", relative_position_index(self.window), persistent=True
        )
        self.region_labels: torch.Tensor | None
        if any(self.shift) and depth > 1:
            self.register_buffer(
                "region_labels",
                shift_region_labels(padded, self.window, self.shift),
                persistent=True,
            )
        else:
            self.region_labels = None
        no_shift = (0, 0, 0)
        self.blocks = nn.ModuleList(
            SwinBlock3D(dim, heads, grid, self.window, self.shift if i % 2 else no_shift, mlp_ratio)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, grid) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.region_labels is not None:
            labels = self.region_labels
            different = labels.unsqueeze(1) != labels.unsqueeze(2)  # (nW, N, N)
            mask = different.to(x.dtype) * MASK_VALUE
        for block in self.blocks:
            x = block(x, self.position_index, mask)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed3D(nn.Module):
    def __init__(self, cfg: Swin3DConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.pads = (
            -cfg.size % cfg.patch_size[2],
            -cfg.size % cfg.patch_size[1],
            -cfg.frames % cfg.patch_size[0],
        )
        self.proj = nn.Conv3d(
            cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pw, ph, pd = self.pads
        if pw or ph or pd:
            x = F.pad(x, (0, pw, 0, ph, 0, pd))
        x = self.proj(x).permute(0, 2, 3, 4, 1)  # (B, D, H, W, C): channels last from here on
        return self.norm(x)


class Swin3D(nn.Module):
    """(B, in_chans, T, S, S) clip -> (B, 2) [speed, power] (normalised targets)."""

    def __init__(self, cfg: Swin3DConfig) -> None:
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbed3D(cfg)
        grids = stage_grids(cfg)
        n_stages = len(cfg.depths)
        self.stages = nn.ModuleList(
            Stage(
                dim=cfg.embed_dim * 2**i,
                depth=cfg.depths[i],
                heads=cfg.num_heads[i],
                grid=grids[i],
                window=cfg.window_size,
                mlp_ratio=cfg.mlp_ratio,
                merge=i < n_stages - 1,
            )
            for i in range(n_stages)
        )
        width = cfg.embed_dim * 2 ** (n_stages - 1)
        self.norm = nn.LayerNorm(width)
        layers: list[nn.Module] = []
        for hidden in cfg.head_hidden:
            layers.append(nn.Linear(width, hidden))
            width = hidden
        layers += [nn.ReLU(), nn.Linear(width, cfg.out_features)]
        self.head = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.stages:
            x = stage(x)
        x = self.norm(x).mean(dim=(1, 2, 3))
        return self.head(x)


def _init_weights(module: nn.Module) -> None:
    # Swin's initialisation: truncated normal linears, unit layer norms.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
