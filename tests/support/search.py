"""The orchestrator over the inline dispatcher, as the search tests build it: real Optuna
(SQLite), a real measurement store and artifact store, real ONNX export; the device and the
trainer are the doubles of :mod:`hpc2edge.testing.fakes`, time is a :class:`FakeClock`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpc2edge.errors import Hpc2EdgeError
from hpc2edge.search import candidate as cand
from hpc2edge.search import prepare
from hpc2edge.search import study as st
from hpc2edge.search.dispatch import InlineDispatcher
from hpc2edge.search.objectives import Objective
from hpc2edge.search.orchestrator import Orchestrator, SearchConfig
from hpc2edge.space import get_space
from hpc2edge.space.base import TrainingHParams
from hpc2edge.store.artifacts import DirectoryArtifactStore
from hpc2edge.store.measurements import MeasurementStore
from hpc2edge.testing.fakes import FakeClock, FakeEdge, FakeTrainer

# Small, fast networks: one or two blocks at 8 x 41 x 41 would still be many; pin the input
# and let the sampler pick the rest.
PIN = {"frames": 8, "size": 41}


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.url = f"sqlite:///{tmp / 'search.db'}"
        self.store = MeasurementStore(f"sqlite:///{tmp / 'measurements.db'}")
        self.artifacts = DirectoryArtifactStore(tmp / "artifacts")
        self.edge = FakeEdge(self.artifacts)
        self.trainer = FakeTrainer()
        self.dispatcher = InlineDispatcher(
            {"measure": self.edge, "train": self.trainer}, self.artifacts
        )
        self.clock = FakeClock()
        self.plan = cand.TrainPlan(("/data/x.hdf5",), TrainingHParams(), epochs=1)

    def orchestrator(
        self,
        name: str = "s",
        *,
        objective: Objective | None = None,
        sampler: str = "random",
        seed: int = 0,
        orchestrator: dict[str, Any] | None = None,
        **config: Any,
    ) -> Orchestrator:
        objective = objective or Objective("pareto")
        config.setdefault("trials", 6)
        config.setdefault("parallel", 2)
        config.setdefault("pin", PIN)
        config.setdefault("baseline", False)
        study = st.open_study(
            name,
            self.url,
            objective,
            st.make_sampler(sampler, objective, seed=seed, trials=config["trials"]),
        )
        o = Orchestrator(
            study,
            self.dispatcher,
            get_space("cnn3d"),
            objective,
            self.store,
            self.plan,
            SearchConfig(**config),
            clock=self.clock,
            **(orchestrator or {}),
        )
        return o

    def sent(self, kind: str) -> int:
        return self.dispatcher.count(kind)


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


ONE_POINT = {**PIN, "n_blocks": 1, "block1_channels": 8, "block1_kernel_t": 1,
             "block1_kernel_s": 3, "downsample": "pool", "batch_norm": False,
             "activation": "relu", "head_width": 32, "head_layers": 1}  # fmt: skip


def step_until(o: Orchestrator, clock: FakeClock, done: Any, limit: int = 500) -> bool:
    """Step ``o`` until ``done()`` (bounded: a hang is a failed assertion, not a stuck test)."""
    for _ in range(limit):
        if done():
            return True
        if not o.step():
            clock.sleep(o.config.poll_interval_s)
    return bool(done())


@contextmanager
def one_build_per_network() -> Iterator[dict[tuple[str, int], cand.Candidate]]:
    """Build each (spec, export seed) once while it lasts: the first build is the real one
    (ONNX export, the ONNX Runtime check, reference outputs), later builds of the same network
    get that candidate back.

    The export is deterministic (tests/unit/test_export.py: equal bytes for an equal spec and
    seed, in a fresh process too), so a search test that runs the same seeded networks again
    proves nothing more by exporting them again. Errors are not kept: each failing build runs.
    Patches :func:`hpc2edge.search.prepare.build`, which the in-loop preparer, pairing and
    confirmation call; a test may patch it again on top (its ``real`` is then this one).
    """
    real = prepare.build
    built: dict[tuple[str, int], cand.Candidate] = {}

    def build(spec: Any, seed: int) -> cand.Candidate | Hpc2EdgeError:
        key = (spec.to_json(), seed)
        if key not in built:
            result = real(spec, seed)
            if isinstance(result, Hpc2EdgeError):
                return result
            built[key] = result
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare, "build", build)
        yield built
