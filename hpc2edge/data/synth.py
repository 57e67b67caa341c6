"""Synthetic RAISE-LPBF-Laser data: the real files' structure with a plausible, learnable physics.

The real data may not be redistributed, so demos and tests run on files made here. They have the
real layouts (v1.0 one file with ``C0NN/layerNNNN``, v1.1 one ``C0NN.hdf5`` per object) and
datasets (``frame`` uint8, ``scan_line_index``, ``laser_params`` = [speed mm/s, power W]).

The picture of one scan line (coaxial camera: the melt pool stays near one spot of the image,
and the camera moves with the laser):

- a **teardrop**: Gaussian across the scan direction with width ``sigma ∝ sqrt(P / v)`` (the
  melt-pool width scaling of a moving heat source; 50 um at 0.24 J/mm), Gaussian ahead of the
  laser with the same width, and a longer **tail** behind it whose length grows with speed
  ``v``; drawn at a fixed magnification (``pixel_um``), so the frame size sets only the field of
  view;
- **brightness** rising with power ``P`` and saturating at 255 (a real sensor clips);
- the lit **scene** around the pool (powder bed and track, a random texture of 100-300 um
  wavelengths) **streaming past** at the scan speed, ``v / fps`` per frame (0.75-2.25 px at
  20 um per pixel) along the scan direction: how fast it moves is the video's speed cue (a
  frame-to-frame difference), the pool's shape the still one. The pool covers it (a maximum,
  not a sum);
- **frames per line** ``≈ 20000 fps * L / v`` for a line of length ``L`` (varied per line, so
  some lines are shorter than a 16-frame window);
- sensor **noise**, random **spatter** dots, and **dim frames** at line start and end while
  the laser ramps;
- the pool's position varies per line (the crop must find it) and the scan direction alternates
  per line and rotates 67° per layer, a common LPBF strategy.

Why the scene and the magnification (issue 17, docs/decisions.md "A problem that learns"): with
the pool's shape as the only speed cue, and the pool drawn at half size on 32-px frames, the
small 3D CNNs of the demo learned the power and never the speed in a demo's budget.

Determinism: each layer is drawn from its own generator seeded with (seed, object number, layer
number), and its scene from a second one (seed, object, layer, 1), so a layer's content does not
depend on how many objects or layers are generated, nor on the layout: the same seed gives the
same samples in v1.0 and v1.1. Datasets are written without timestamps (``track_times=False``)
so equal inputs give equal files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hpc2edge.data import layout as lay

#: Changes whenever the same spec would give other frames (a new physics): data written by an
#: older generator is then not the data a spec describes.
GENERATOR_VERSION = 2
CAMERA_FPS = 20_000.0
#: Scan-strategy rotation between layers.
LAYER_ROTATION_DEG = 67.0
#: Melt-pool width (Gaussian sigma across the scan) at the reference line energy P / v.
POOL_SIGMA_UM = 50.0
REFERENCE_J_MM = 0.24
#: The texture of the lit scene around the pool: its wavelengths and its number of plane waves.
SCENE_WAVELENGTH_UM = (100.0, 300.0)
SCENE_WAVES = 32


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. Sizes count per file, per object and per layer.

    Attributes:
        layout: ``"v1.1"`` (one file per object) or ``"v1.0"`` (one file for all objects).
        objects, layers, lines: number of objects, layers per object, scan lines per layer.
        frame_size: frame side in pixels (square frames).
        line_length_mm: longest line; each line is 50–100 % of it.
        speed_mm_s, power_w: uniform ranges the labels are drawn from.
        labels: ``False`` writes no ``laser_params`` (the "test" variant).
        first_object, first_layer: numbering of the first object (C027) and layer.
        dim_frames: frames ramping up at line start and down at line end.
        noise_std: sensor noise, grey levels.
        spatter_per_frame: mean number of spatter dots per frame.
        pixel_um: the camera's pixel pitch on the powder bed: the pool's size in pixels and
            the scene's motion per frame follow from it.
        scene_grey: mean brightness of the lit scene around the pool, grey levels (0: a dark
            scene, no motion cue).
        scene_contrast: standard deviation of its texture, relative to ``scene_grey``.
        seed: everything follows from it.
    """

    layout: str = lay.LAYOUT_V11
    objects: int = 4
    layers: int = 2
    lines: int = 8
    frame_size: int = 64
    line_length_mm: float = 5.0
    speed_mm_s: tuple[float, float] = (300.0, 900.0)
    power_w: tuple[float, float] = (60.0, 215.0)
    labels: bool = True
    first_object: int = 27
    first_layer: int = 1
    dim_frames: int = 3
    noise_std: float = 2.0
    spatter_per_frame: float = 0.3
    pixel_um: float = 20.0
    scene_grey: float = 60.0
    scene_contrast: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.layout not in lay.LAYOUTS:
            problems.append(f"layout must be one of {', '.join(lay.LAYOUTS)}, got {self.layout!r}")
        for name in ("objects", "layers", "lines"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.frame_size < 8:
            problems.append(f"frame_size must be >= 8, got {self.frame_size}")
        if self.line_length_mm <= 0:
            problems.append(f"line_length_mm must be > 0, got {self.line_length_mm}")
        for name in ("speed_mm_s", "power_w"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                problems.append(f"{name} must be a range 0 < low <= high, got {(lo, hi)}")
        if self.dim_frames < 0 or self.noise_std < 0 or self.spatter_per_frame < 0:
            problems.append("dim_frames, noise_std and spatter_per_frame must be >= 0")
        if not self.pixel_um > 0:
            problems.append(f"pixel_um must be > 0, got {self.pixel_um}")
        if self.scene_grey < 0 or self.scene_contrast < 0:
            problems.append("scene_grey and scene_contrast must be >= 0")
        if self.first_object < 0 or self.first_layer < 0:
            problems.append("first_object and first_layer must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    def object_names(self) -> list[str]:
        return [f"C{self.first_object + i:03d}" for i in range(self.objects)]

    def layer_numbers(self) -> list[int]:
        return [self.first_layer + i for i in range(self.layers)]


@dataclass(frozen=True)
class SynthLayer:
    """One generated layer: what goes into its group, plus the truth the tests check against."""

    frames: np.ndarray  # [N, H, W] uint8
    scan_line_index: np.ndarray  # [N] int64
    laser_params: np.ndarray  # [lines, 2] float64: speed mm/s, power W
    centres: np.ndarray  # [lines, 2] float64: melt-pool (row, col) per line


def _melt_pool(
    size: int,
    centre: np.ndarray,
    angle_rad: float,
    speed_mm_s: float,
    power_w: float,
    pixel_um: float = 20.0,
) -> np.ndarray:
    sigma = POOL_SIGMA_UM / pixel_um * np.sqrt((power_w / speed_mm_s) / REFERENCE_J_MM)
    tail = sigma * (1.0 + 3.0 * speed_mm_s / 900.0)
    peak = 70.0 + 230.0 * power_w / 215.0  # above 255 from ~180 W: the sensor saturates
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - centre[0], xx - centre[1]
    along = dx * np.cos(angle_rad) + dy * np.sin(angle_rad)  # > 0 ahead of the laser
    across = -dx * np.sin(angle_rad) + dy * np.cos(angle_rad)
    length = np.where(along >= 0, sigma, tail)
    return peak * np.exp(-(across**2) / (2 * sigma**2) - along**2 / (2 * length**2))


def _scene(
    spec: SynthSpec,
    rng: np.random.Generator,
    angle_rad: float,
    speed_mm_s: float,
    n_frames: int,
) -> np.ndarray:
    """``[n, H, W]`` brightness of the lit bed and track around the pool, streaming past.

    A Gaussian random texture (a sum of ``SCENE_WAVES`` plane waves of random direction,
    wavelength in ``SCENE_WAVELENGTH_UM`` and phase) seen through a window that moves with the
    laser: frame ``t`` shows the texture at ``p + t * d * u`` for the scan direction ``u`` and
    ``d = v / fps`` in pixels. Each wave's phase is a spatial part plus one linear in ``t``, so
    the whole line is two matrix products (``cos(a + b) = cos a cos b - sin a sin b``).
    """
    size = spec.frame_size
    if spec.scene_grey == 0 or spec.scene_contrast == 0:
        return np.zeros((n_frames, size, size))
    k = SCENE_WAVES
    theta = rng.uniform(0.0, 2 * np.pi, k)
    wavenumber = 2 * np.pi * spec.pixel_um / rng.uniform(*SCENE_WAVELENGTH_UM, k)
    phase = rng.uniform(0.0, 2 * np.pi, k)
    kx, ky = wavenumber * np.cos(theta), wavenumber * np.sin(theta)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    spatial = np.outer(kx, xx.ravel()) + np.outer(ky, yy.ravel()) + phase[:, None]  # [k, H*W]
    step_px = speed_mm_s * 1000.0 / CAMERA_FPS / spec.pixel_um
    temporal = np.outer(
        np.arange(n_frames), step_px * (kx * np.cos(angle_rad) + ky * np.sin(angle_rad))
    )
    # sum_k cos(spatial_k + temporal_k): two matrix products instead of n x k x H x W cosines.
    texture = np.cos(temporal) @ np.cos(spatial) - np.sin(temporal) @ np.sin(spatial)
    texture *= np.sqrt(2.0 / k)  # unit variance
    scene = spec.scene_grey * np.clip(1.0 + spec.scene_contrast * texture, 0.0, None)
    return scene.reshape(n_frames, size, size)


def _line_frames(
    spec: SynthSpec, rng: np.random.Generator, pool: np.ndarray, scene: np.ndarray
) -> np.ndarray:
    size = spec.frame_size
    n_frames = int(scene.shape[0])
    gain = 1.0 + 0.05 * rng.standard_normal(n_frames)  # flicker of the process emission
    ramp = np.ones(n_frames)
    for k in range(min(spec.dim_frames, (n_frames + 1) // 2)):
        level = (k + 1) / (spec.dim_frames + 1)
        ramp[k] = min(ramp[k], level)
        ramp[n_frames - 1 - k] = min(ramp[n_frames - 1 - k], level)
    img = np.maximum(pool[None], scene) * (gain * ramp)[:, None, None] + 6.0
    img += spec.noise_std * rng.standard_normal(img.shape)
    n_dots = rng.poisson(spec.spatter_per_frame, n_frames)
    if n_dots.sum():
        which = np.repeat(np.arange(n_frames), n_dots)
        ys = rng.integers(0, size, which.size)
        xs = rng.integers(0, size, which.size)
        img[which, ys, xs] = np.maximum(img[which, ys, xs], rng.uniform(120, 255, which.size))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_layer(spec: SynthSpec, object_number: int, layer_number: int) -> SynthLayer:
    """Generate one layer of one object (deterministic in spec.seed, object and layer)."""
    rng = np.random.default_rng([spec.seed, object_number, layer_number])
    n_lines = spec.lines
    speed = rng.uniform(*spec.speed_mm_s, n_lines)
    power = rng.uniform(*spec.power_w, n_lines)
    length_mm = spec.line_length_mm * rng.uniform(0.5, 1.0, n_lines)
    n_frames = np.maximum(1, np.rint(CAMERA_FPS * length_mm / speed)).astype(np.int64)
    half = spec.frame_size / 2.0
    centres = half + rng.uniform(-spec.frame_size / 6, spec.frame_size / 6, (n_lines, 2))
    base_deg = LAYER_ROTATION_DEG * layer_number
    # The scene's texture has a generator of its own: the draws of the rest stay as they were.
    scene_rng = np.random.default_rng([spec.seed, object_number, layer_number, 1])
    chunks = []
    for i in range(n_lines):
        angle = np.deg2rad(base_deg + 180.0 * (i % 2) + rng.uniform(-5, 5))
        pool = _melt_pool(spec.frame_size, centres[i], angle, speed[i], power[i], spec.pixel_um)
        scene = _scene(spec, scene_rng, angle, speed[i], int(n_frames[i]))
        chunks.append(_line_frames(spec, rng, pool, scene))
    return SynthLayer(
        frames=np.concatenate(chunks),
        scan_line_index=np.repeat(np.arange(n_lines, dtype=np.int64), n_frames),
        laser_params=np.stack([speed, power], axis=1),
        centres=centres,
    )


def _write_layer(group: h5py.Group, layer: SynthLayer, labels: bool) -> None:
    group.create_dataset(lay.FRAME, data=layer.frames, track_times=False)
    group.create_dataset(lay.SCAN_LINE_INDEX, data=layer.scan_line_index, track_times=False)
    if labels:
        group.create_dataset(lay.LASER_PARAMS, data=layer.laser_params, track_times=False)


def output_files(out_dir: Path, spec: SynthSpec) -> list[Path]:
    """The files :func:`generate` writes for ``spec`` into ``out_dir``."""
    if spec.layout == lay.LAYOUT_V10:
        return [out_dir / ("RAISE_LPBF_train.hdf5" if spec.labels else "RAISE_LPBF_test.hdf5")]
    return [out_dir / f"{name}.hdf5" for name in spec.object_names()]


def generate(out_dir: Path | str, spec: SynthSpec, *, overwrite: bool = False) -> list[Path]:
    """Write synthetic files for ``spec`` into the folder ``out_dir`` (created if needed).

    Args:
        out_dir: target folder. v1.0 writes ``RAISE_LPBF_train.hdf5`` (``_test`` without labels),
            v1.1 one ``C0NN.hdf5`` per object.
        spec: what to generate.
        overwrite: replace existing files; without it an existing file is an error.

    Returns:
        The written files.

    Raises:
        FileExistsError: a target file exists and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    files = output_files(out_dir, spec)
    existing = [str(p) for p in files if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"would overwrite {', '.join(existing)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = [spec.first_object + i for i in range(spec.objects)]
    if spec.layout == lay.LAYOUT_V10:
        with h5py.File(files[0], "w") as f:
            for obj, name in zip(objects, spec.object_names(), strict=True):
                for layer in spec.layer_numbers():
                    group = f.create_group(f"{name}/layer{layer:04d}")
                    _write_layer(group, render_layer(spec, obj, layer), spec.labels)
    else:
        for obj, path in zip(objects, files, strict=True):
            with h5py.File(path, "w") as f:
                for layer in spec.layer_numbers():
                    group = f.create_group(f"layer{layer:04d}")
                    _write_layer(group, render_layer(spec, obj, layer), spec.labels)
    return files
