"""Candidates made ready beside the loop: ONNX export and reference outputs, in a process pool.

Building a candidate (:func:`hpc2edge.search.candidate.build`) costs ~0.2 s of CPU per network,
more than the rest of a trial's bookkeeping together. With ``workers=0`` it runs in the loop when
asked for (tests, small searches); with ``workers > 0`` it runs in that many spawned processes
while the loop goes on, and a trial's measure stage waits for its candidate like any other input.
A build that fails (an export error, a spec the exporter refuses) comes back as the error, and
fails that trial alone.

``builder`` is the seam for a candidate made another way: the fleet simulator
(:mod:`hpc2edge.sim`) builds one from a recorded benchmark, without torch, in the loop.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import fields
from typing import Any

from hpc2edge.errors import ExportError, Hpc2EdgeError
from hpc2edge.search import candidate as cand
from hpc2edge.space.base import ArchSpec


class Preparer:
    """Builds candidates by job key, in the loop or in a pool.

    ``builder`` (in the loop only: a pool runs the real export) makes a candidate of a spec and a
    seed, or returns the error that says why it cannot.
    """

    def __init__(
        self,
        seed: int = 0,
        workers: int = 0,
        builder: Callable[[ArchSpec, int], cand.Candidate | Hpc2EdgeError] | None = None,
    ) -> None:
        if builder is not None and workers > 0:
            raise ValueError("a custom build runs in the loop: workers must be 0")
        self.seed = seed
        self.workers = workers
        self._build = builder or build
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[str, Future[Any]] = {}
        self._done: dict[str, cand.Candidate | Hpc2EdgeError] = {}
        self._specs: dict[str, ArchSpec] = {}

    def request(self, key: str, spec: ArchSpec) -> None:
        """Start building ``key``'s candidate (again only once it was taken)."""
        if key in self._futures or key in self._done:
            return
        if self.workers <= 0:
            self._done[key] = self._build(spec, self.seed)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_one_thread,
            )
        # An ArchSpec holds read-only mappings, which do not pickle: it travels as its dict.
        self._specs[key] = spec
        self._futures[key] = self._pool.submit(_build_fields, spec.to_dict(), self.seed)

    def take(self, key: str) -> cand.Candidate | Hpc2EdgeError | None:
        """The candidate (or why it cannot be built), or None while it is being built."""
        future = self._futures.get(key)
        if future is not None and future.done():
            del self._futures[key]
            spec = self._specs.pop(key)
            try:
                built = future.result()
                self._done[key] = (
                    built if isinstance(built, Hpc2EdgeError) else cand.Candidate(spec, **built)
                )
            except Exception as exc:  # the pool itself broke (a child killed)
                why = f"candidate build failed: {type(exc).__name__}: {exc}"
                self._done[key] = ExportError(why)
        return self._done.pop(key, None)

    def pending(self) -> int:
        return len(self._futures)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._futures.clear()
        self._specs.clear()


def build(spec: ArchSpec, seed: int) -> cand.Candidate | Hpc2EdgeError:
    """The candidate, or the error that says why it cannot be built (never raises for it)."""
    try:
        return cand.build(spec, seed=seed)
    except Hpc2EdgeError as exc:
        try:  # rebuilt from its message, so it travels back from a pool process
            return type(exc)(str(exc))
        except TypeError:
            return ExportError(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # torch refusing a network is about this candidate only
        return ExportError(f"{type(exc).__name__}: {exc}")


def _build_fields(spec: dict[str, Any], seed: int) -> dict[str, Any] | Hpc2EdgeError:
    """:func:`build` in a pool process: the candidate's fields but its spec."""
    built = build(ArchSpec.from_dict(spec), seed)
    if isinstance(built, Hpc2EdgeError):
        return built
    return {f.name: getattr(built, f.name) for f in fields(built) if f.name != "spec"}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


__all__ = ["Preparer", "build"]
