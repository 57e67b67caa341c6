"""A small benchmark made from formulas, in the real format, for tests of the simulator.

Rows are architectures of the cnn3d space drawn at the demo's input, each with a latency that
grows with its size (as :class:`hpc2edge.testing.fakes.FakeEdge`'s), a validation curve that
falls with epochs and, up to a point, with size, and seconds per epoch that grow with size: a
real trade-off for the samplers, fixed by the seed. Built with :class:`hpc2edge.sim.benchmark.
Benchmark` itself, so the simulator's tests also run the real table, answers and surrogate.
"""

from __future__ import annotations

import hashlib
import math
import random

from hpc2edge.search.candidate import PROTOCOLS
from hpc2edge.search.runconfig import Pinned
from hpc2edge.sim.benchmark import FORMAT, Benchmark, Curve, Row
from hpc2edge.space import get_space
from hpc2edge.space.base import RandomTrial
from hpc2edge.testing.fakes import _size

PIN = {"frames": 8, "size": 41}
MAX_EPOCHS = 4
CONSTANT = 0.05


def _wobble(arch_id: str) -> float:
    return int(hashlib.sha256(arch_id.encode()).hexdigest()[:6], 16) / 0xFFFFFF


def formula_benchmark(n: int = 40, seed: int = 0, *, name: str = "formula") -> Benchmark:
    """``n`` distinct architectures (the baseline among them) with formula figures."""
    space = get_space("cnn3d")
    rng = random.Random(seed)
    specs = {}
    base = space.baseline().with_input(PIN["frames"], PIN["size"])
    specs[base.arch_id] = base
    while len(specs) < n:
        spec = space.validate(space.suggest(Pinned(RandomTrial(rng), PIN)))
        specs[spec.arch_id] = spec
    rows = {}
    for arch_id, spec in specs.items():
        size = _size(spec)
        final = 0.008 + 0.03 / (1.0 + math.log1p(size)) + 0.004 * _wobble(arch_id)
        curve = tuple(final * (1.0 + 0.6 * (MAX_EPOCHS - e) / MAX_EPOCHS)
                      for e in range(1, MAX_EPOCHS + 1))  # fmt: skip
        ms = 0.2 + size
        curves = [Curve(0, curve, curve, 2.0 + 3.0 * size, CONSTANT)]
        if len(rows) % 4 == 0:  # a second seed for a quarter of the rows: the seed noise
            other = tuple(v * (1.0 + 0.05 * (_wobble(arch_id + "s") - 0.5)) for v in curve)
            curves.append(Curve(1, other, other, 2.0 + 3.0 * size, CONSTANT))
        rows[arch_id] = Row(
            arch_id=arch_id,
            space="cnn3d",
            spec=spec.to_dict(),
            params=int(size * 1e4),
            flops=int(size * 1e7),
            latency={"default": {"median_ms": ms, "ci95_ms": [ms * 0.99, ms * 1.01],
                                 "p90_ms": ms * 1.05, "n": 50, "stopped_by": "converged"}},
            curves=tuple(curves),
        )  # fmt: skip
    header = {
        "format": FORMAT,
        "name": name,
        "spaces": ["cnn3d"],
        "pin": dict(PIN),
        "max_epochs": MAX_EPOCHS,
        "recipe": {"epochs": 2, "lr": 0.01, "train_batch_size": 8, "protocol": "quick"},
        # as bench/record_benchmark.py records it: the protocol's settings and its name
        "latency": {
            "default": {
                "backend": "formula",
                "device": {},
                "protocol": {"name": "quick", **PROTOCOLS["quick"]},
            }
        },
    }
    return Benchmark(header, rows)
