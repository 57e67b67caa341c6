"""Which samples a reader serves: objects, layers, and a train/test split.

Decisions:

- **Objects** are names (``C027``); a bare number means that object (``27`` -> ``C027``).
- **Layers** are either a Python slice over each object's *sorted* layers (``"100:-8"`` drops an
  object's first 100 and last 8 layers: the support layers and the top skin) or a comma list of
  layer *numbers* (``"3,5,7"``). A string with ``:`` is a slice, anything else a list.
- **Split by object** (default): the held-out objects are the paper's C029, C032, C035, C040
  among those present; ``train`` is every other object. Objects never straddle the split, which
  is what measures generalisation to unseen parts.
- **Split by fraction**: each line goes to ``test`` when a hash of (object, layer, line, seed) is
  below the fraction. A hash rather than a permutation makes a line's side independent of which
  files, objects or layers were selected, so train and test stay disjoint across selections.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The paper's held-out objects (docs/data-format.md, "Objects, layers and splits").
DEFAULT_TEST_OBJECTS = ("C029", "C032", "C035", "C040")
SPLITS = ("all", "train", "test")


def parse_objects(objects: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"C027,C030"`` or a sequence -> ``("C027", "C030")``; ``None`` or ``""`` -> all."""
    if objects is None:
        return None
    tokens = objects.split(",") if isinstance(objects, str) else list(objects)
    names = []
    for token in (t.strip() for t in tokens):
        if not token:
            continue
        names.append(f"C{int(token):03d}" if token.isdigit() else token)
    return tuple(names) or None


def parse_layers(layers: str | None) -> slice | tuple[int, ...] | None:
    """``"100:-8"`` -> a slice over sorted layers; ``"3,5"`` -> layer numbers; ``None`` -> all.

    Raises:
        ValueError: the text is neither form.
    """
    if layers is None or not layers.strip():
        return None
    text = layers.strip()
    try:
        if ":" in text:
            parts = [p.strip() for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            values = [int(p) if p else None for p in parts]
            return slice(*values)
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ValueError(
            f"layers must be a slice like '100:-8' or numbers like '3,5', got {layers!r}"
        ) from None


@dataclass(frozen=True)
class Selection:
    """Which samples to serve.

    Attributes:
        objects: object names to keep (``None``: all).
        layers: a layer slice or layer numbers as text (see :func:`parse_layers`).
        split: ``"all"``, ``"train"`` or ``"test"``.
        test_objects: held-out objects for the split by object (those present are used).
        test_fraction: when set, split lines at random with this test fraction instead.
        seed: seed of the random split.
    """

    objects: tuple[str, ...] | None = None
    layers: str | None = None
    split: str = "all"
    test_objects: tuple[str, ...] = DEFAULT_TEST_OBJECTS
    test_fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.split not in SPLITS:
            problems.append(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.test_fraction is not None and not 0.0 < self.test_fraction < 1.0:
            problems.append(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        try:
            parse_layers(self.layers)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))


def _unit_hash(objects: np.ndarray, layers: np.ndarray, lines: np.ndarray, seed: int) -> np.ndarray:
    # splitmix64 over a mix of the three keys: a stable, uniform number in [0, 1) per line.
    u = np.uint64
    with np.errstate(over="ignore"):
        x = objects.astype(u) * u(0x9E3779B97F4A7C15)
        x ^= layers.astype(u) * u(0xBF58476D1CE4E5B9)
        x ^= lines.astype(u) * u(0x94D049BB133111EB)
        x ^= u(seed & 0xFFFFFFFFFFFFFFFF)
        x ^= x >> u(30)
        x *= u(0xBF58476D1CE4E5B9)
        x ^= x >> u(27)
        x *= u(0x94D049BB133111EB)
        x ^= x >> u(31)
    return (x >> u(11)).astype(np.float64) / float(1 << 53)


def select(
    selection: Selection, objects: np.ndarray, layers: np.ndarray, lines: np.ndarray
) -> np.ndarray:
    """Boolean mask over samples given their object names, layer numbers and line numbers.

    Raises:
        ValueError: a named object is absent, or a ``test`` split has no held-out object.
    """
    present = sorted(set(objects.tolist()))
    mask = np.ones(objects.shape[0], dtype=bool)
    wanted = parse_objects(selection.objects)
    if wanted is not None:
        missing = [o for o in wanted if o not in present]
        if missing:
            raise ValueError(
                f"objects not in the data: {', '.join(missing)} (present: {', '.join(present)})"
            )
        mask &= np.isin(objects, wanted)
    layer_sel = parse_layers(selection.layers)
    if isinstance(layer_sel, slice):
        keep = np.zeros_like(mask)
        for name in present:
            of_object = objects == name
            chosen = np.unique(layers[of_object])[layer_sel]
            keep |= of_object & np.isin(layers, chosen)
        mask &= keep
    elif layer_sel is not None:
        mask &= np.isin(layers, layer_sel)
    if selection.split == "all":
        return mask
    if selection.test_fraction is not None:
        names, inverse = np.unique(objects, return_inverse=True)  # crc32 once per object
        codes = np.array([zlib.crc32(str(o).encode()) for o in names], dtype=np.uint64)[inverse]
        is_test = _unit_hash(codes, layers, lines, selection.seed) < selection.test_fraction
    else:
        held_out = [o for o in selection.test_objects if o in present]
        if not held_out and selection.split == "test":
            raise ValueError(
                f"none of the held-out objects {', '.join(selection.test_objects)} is in the data "
                f"(present: {', '.join(present)}); name test_objects or use test_fraction"
            )
        is_test = np.isin(objects, held_out)
    return mask & (is_test if selection.split == "test" else ~is_test)
