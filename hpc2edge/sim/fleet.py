"""A simulated fleet on a virtual clock: train workers and edge units that answer from a benchmark.

:class:`SimFleet` is a :class:`~hpc2edge.search.dispatch.Dispatcher`: the real orchestrator
sends it tasks by the same calls as the Celery one. Each queue has workers (``train``: train
workers; ``edge`` / ``edge.<kind>``: a kind's units) that take tasks first come, first served,
one at a time, as a Celery worker with prefetch 1 does, and answer after a simulated duration:

- a **train** task takes the benchmark's seconds per epoch times its epochs (times
  ``SimTimes.train_scale``), plus ``SimTimes.train_overhead_s`` (start-up, data loading); its
  result carries the benchmark's validation curve up to those epochs;
- a **measure** task takes ``SimTimes.build_s`` (an engine build) plus the protocol's warm-up and
  timed series at the benchmark's latency (at least ``min_time_s``/``min_runs``, at most
  ``max_time_s``); its result carries the benchmark's median latency for the unit's kind.

Results have the real workers' shape (:mod:`hpc2edge.sim.results`), so the orchestrator checks
and stores them with its own code. A unit reads the model it is sent from the artifact store, as
a device does; the simulated model's bytes are its spec (:func:`candidate`).

The fleet runs on the orchestrator's :class:`~hpc2edge.sim.clock.VirtualClock`, which tells it
when time moves (and whether the loop was computing meanwhile: the fleet then counts the
worker-seconds idle while the orchestrator had work for them).

Faults (:class:`Fault`) happen at a virtual time: an edge unit drops (it stops answering; the task
it held is lost, and the orchestrator's timeout and retry take over), or a train worker dies
mid-task (the same for its training).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hpc2edge.errors import Hpc2EdgeError, as_result
from hpc2edge.latency.protocol import Protocol as TimingProtocol
from hpc2edge.roles import DEFAULT_KIND, QUEUE_TRAIN, check_kind, edge_queue, kind_of_queue
from hpc2edge.search import candidate as cand
from hpc2edge.search.dispatch import Dispatcher, Outcome, task_kind_of_queue
from hpc2edge.sim import results
from hpc2edge.sim.clock import VirtualClock
from hpc2edge.space.base import ArchSpec
from hpc2edge.store.artifacts import MemoryArtifactStore
from hpc2edge.transport.taskids import queue_of


class Answered(Protocol):
    """What a benchmark answers for one architecture (:class:`hpc2edge.sim.benchmark.Answer`)."""

    @property
    def val_mse_per_epoch(self) -> tuple[float, ...]: ...

    @property
    def val_mse_constant(self) -> float: ...

    @property
    def s_per_epoch(self) -> float: ...

    @property
    def latency_ms(self) -> Mapping[str, float]: ...

    @property
    def params(self) -> int: ...

    @property
    def flops(self) -> int: ...


class Answers(Protocol):
    """What the fleet reads of a benchmark (:class:`hpc2edge.sim.benchmark.Benchmark`)."""

    @property
    def kinds(self) -> tuple[str, ...]: ...

    @property
    def max_epochs(self) -> int: ...

    def answer(self, spec: ArchSpec, epochs: int, seed: int = 0) -> Answered: ...


class Memo:
    """A benchmark's answers, computed once per network and seed (a surrogate's answer costs
    milliseconds, and a trial asks for its network's three times: candidate, measurement,
    training).

    The answer for ``e`` epochs is the first ``e`` epochs of the answer for the benchmark's
    maximum (its contract: one curve serves every budget, :mod:`hpc2edge.sim.benchmark`).
    """

    def __init__(self, benchmark: Answers, clock: VirtualClock | None = None) -> None:
        self.benchmark = benchmark
        self.clock = clock
        self._memo: dict[tuple[str, int], Answered] = {}

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.benchmark.kinds

    @property
    def max_epochs(self) -> int:
        return self.benchmark.max_epochs

    def answer(self, spec: ArchSpec, epochs: int, seed: int = 0) -> Answered:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs: expected a positive integer, got {epochs!r}")
        key = (spec.arch_id, seed)
        if key not in self._memo:
            with self.clock.excluded() if self.clock else contextlib.nullcontext():
                self._memo[key] = self.benchmark.answer(spec, self.max_epochs, seed)
        full = self._memo[key]
        curve = tuple(full.val_mse_per_epoch[: min(epochs, self.max_epochs)])
        return replace(full, val_mse_per_epoch=curve, val_mse=curve[-1])  # type: ignore[type-var]


@dataclass(frozen=True)
class SimTimes:
    """How long simulated tasks take, besides what the benchmark says.

    Attributes:
        train_scale: multiplies the benchmark's seconds per epoch (a faster or slower node).
        train_overhead_s: per training: process start, data loading, the final evaluation.
        build_s: per measurement: building the engine (minutes with TensorRT on a Jetson,
            nothing with ONNX Runtime).
        measure_overhead_s: per measurement: fetching the model, the result's round trip.
    """

    train_scale: float = 1.0
    train_overhead_s: float = 5.0
    build_s: float = 0.0
    measure_overhead_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("train_scale", "train_overhead_s", "build_s", "measure_overhead_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number of seconds, got {value}")

    def measure_s(self, ms: float, protocol: Mapping[str, Any] | None) -> float:
        """A measurement's duration: the build, the warm-up and the timed series at ``ms``."""
        p = TimingProtocol.from_json(dict(protocol or {}))
        run_s = ms / 1000.0
        warmup = max(p.warmup_min_s, p.warmup_min_runs * run_s)
        timed = min(max(p.min_time_s, p.min_runs * run_s), p.max_time_s)
        return self.build_s + self.measure_overhead_s + warmup + timed

    def train_s(self, s_per_epoch: float, epochs: int) -> float:
        return self.train_overhead_s + self.train_scale * s_per_epoch * epochs


@dataclass(frozen=True)
class Fault:
    """A worker that stops at ``at_s`` virtual seconds after the start.

    ``what`` is ``unit`` (an edge unit of ``kind`` drops) or ``train`` (a train worker dies);
    the first worker of that queue still alive at that time is the one.
    """

    at_s: float
    what: str
    kind: str = DEFAULT_KIND

    def __post_init__(self) -> None:
        if self.what not in ("unit", "train"):
            raise ValueError(f"a fault is 'unit' or 'train', not {self.what!r}")
        if not (math.isfinite(self.at_s) and self.at_s >= 0):
            raise ValueError("a fault's time is a non-negative number of seconds")
        check_kind(self.kind)

    @property
    def queue(self) -> str:
        return QUEUE_TRAIN if self.what == "train" else edge_queue(self.kind)

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``unit[:KIND]@SECONDS`` or ``train@SECONDS``.

        Raises:
            ValueError: anything else (one line naming the form).
        """
        what, _, seconds = text.partition("@")
        name, _, kind = what.partition(":")
        try:
            return cls(float(seconds), name, kind or DEFAULT_KIND)
        except ValueError as exc:
            raise ValueError(
                f"fault {text!r}: expected unit[:KIND]@SECONDS or train@SECONDS ({exc})"
            ) from None


@dataclass
class _Task:
    id: str
    kind: str
    queue: str
    payload: dict[str, Any]
    sent_at: float


@dataclass
class _Worker:
    name: str
    queue: str
    alive: bool = True
    task: _Task | None = None
    started: float = 0.0
    until: float = 0.0
    #: What the task it holds will return when it ends.
    result: dict[str, Any] | None = None


@dataclass
class QueueUse:
    """What one queue's workers did (virtual seconds)."""

    workers: int = 0
    tasks: int = 0
    busy_s: float = 0.0
    #: Worker-seconds idle while a task waited in this queue (zero unless workers died).
    idle_while_queued_s: float = 0.0
    #: Worker-seconds idle while the orchestrator's loop was computing (``charge_cpu``) and
    #: had work for the queue (:attr:`SimFleet.demand`).
    idle_while_loop_busy_s: float = 0.0
    #: The same, from the moment every worker of the queue first had a task (the fleet filled):
    #: the steady state, without the start-up, when every worker waits for the first asks.
    idle_while_loop_busy_filled_s: float = 0.0
    #: Virtual seconds from the start to that moment (None: it never filled).
    filled_at_s: float | None = None
    lost: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SimFleet(Dispatcher):
    """Simulated workers per queue; see the module docstring.

    Args:
        benchmark: answers per architecture (:class:`hpc2edge.sim.benchmark.Benchmark`).
        clock: the orchestrator's clock; the fleet registers itself with it.
        train_workers: train workers on the ``train`` queue.
        units: edge units per device kind (each kind its queue).
        scales: latency factor of a kind the benchmark did not record, which is simulated as
            the benchmark's first kind times its factor (default 1).
        seed: the training noise seed (:meth:`Benchmark.answer`): runs of one seed see the same
            losses for the same networks.
        faults: workers that stop at set times.
        times: durations besides the benchmark's.
    """

    benchmark: Answers
    clock: VirtualClock
    train_workers: int = 1
    units: Mapping[str, int] = field(default_factory=lambda: {DEFAULT_KIND: 1})
    scales: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    faults: Sequence[Fault] = ()
    times: SimTimes = field(default_factory=SimTimes)

    def __post_init__(self) -> None:
        if self.train_workers < 1:
            raise ValueError("a simulated fleet has at least one train worker")
        if not self.units or any(n < 1 for n in self.units.values()):
            raise ValueError("a simulated fleet has at least one unit per device kind")
        for kind in (*self.units, *self.scales):
            check_kind(kind)
        unknown = sorted(set(self.scales) - set(self.units))
        if unknown:
            raise ValueError(f"latency scale for a kind without units: {', '.join(unknown)}")
        for kind, scale in self.scales.items():
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"{kind}: a latency scale is a positive number")
        if not isinstance(self.benchmark, Memo):
            self.benchmark = Memo(self.benchmark, self.clock)
        self.artifacts = MemoryArtifactStore()
        self._workers: dict[str, list[_Worker]] = {
            QUEUE_TRAIN: [_Worker(f"train-{i}", QUEUE_TRAIN) for i in range(self.train_workers)]
        }
        for kind, n in self.units.items():
            q = edge_queue(kind)
            self._workers[q] = [_Worker(f"{kind}-unit-{i}", q) for i in range(n)]
        self.use = {q: QueueUse(workers=len(ws)) for q, ws in self._workers.items()}
        self._queued: dict[str, deque[_Task]] = {q: deque() for q in self._workers}
        self._tasks: dict[str, _Task] = {}
        self._done: dict[str, Outcome] = {}
        # (time, order, worker) of each running task's end; stale entries are skipped.
        self._ends: list[tuple[float, int, _Worker]] = []
        self._order = itertools.count()
        self._faults = sorted(self.faults, key=lambda f: f.at_s)
        self.now = self.clock.now
        #: Whether the orchestrator has work for a queue (a trial still to ask, a task ready
        #: and not sent): idle time while the loop is busy counts only then. Set by the run.
        self.demand: Callable[[str], bool] = lambda queue: True
        #: Every submission in order: (task kind, task id, virtual seconds since the start).
        self.sent: list[tuple[str, str, float]] = []
        self.clock.fleet = self

    # --- the dispatcher -------------------------------------------------------------------

    def submit(self, kind: str, payload: dict[str, Any], task_id: str, expires_s: float) -> None:
        queue = str(queue_of(task_id))
        if queue not in self._workers or task_kind_of_queue(queue) != kind:
            raise ValueError(f"no simulated queue for a {kind!r} task with id {task_id!r}")
        now = self.clock.time()
        with self.clock.excluded():
            self.advance(now)
            if task_id in self._tasks or task_id in self._done:
                return  # a resend under the same id: one task, as the broker's dedup makes it
            t = _Task(task_id, kind, queue, payload, self.now)
            self._tasks[task_id] = t
            self._queued[queue].append(t)
            self.sent.append((kind, task_id, self.now - self.clock.start))
            self._assign(queue)

    def poll(self, task_id: str) -> Outcome | None:
        now = self.clock.time()
        with self.clock.excluded():
            self.advance(now)
        return self._done.get(task_id)

    def forget(self, task_id: str) -> None:
        self._done.pop(task_id, None)

    def workers(self, queues: Sequence[str] = ()) -> dict[str, int]:
        now = self.clock.time()
        with self.clock.excluded():
            self.advance(now)
        return {q: sum(w.alive for w in ws) for q, ws in self._workers.items()}

    def idle(self) -> dict[str, int]:
        """Live workers without a task, per queue, now."""
        return {
            q: sum(1 for w in ws if w.alive and w.task is None) for q, ws in self._workers.items()
        }

    def queue_depths(self) -> dict[str, int]:
        return {q: len(d) for q, d in self._queued.items()}

    def probe_edge(self, timeout_s: float, queue: str = edge_queue(DEFAULT_KIND)) -> Any:
        kind = kind_of_queue(queue)
        live = [w for w in self._workers.get(queue, []) if w.alive]
        if kind is None or not live:
            return None
        return {"hostname": live[0].name, "measurement": self._identity(kind)}

    def quarantined(self, queue: str) -> dict[str, str]:
        return {}

    # --- time -------------------------------------------------------------------------------

    def next_event(self) -> float:
        """When the next task ends or fault strikes (infinity: nothing will happen)."""
        ends = self._ends
        while ends and (ends[0][2].task is None or ends[0][2].until != ends[0][0]):
            heapq.heappop(ends)  # the end of a task lost with its worker
        nxt = ends[0][0] if ends else math.inf
        if self._faults:
            nxt = min(nxt, self.clock.start + self._faults[0].at_s)
        return nxt

    def advance(self, to: float, *, loop_busy: bool = False) -> None:
        """Run the fleet up to ``to``: tasks end, faults strike, idle workers take queued tasks."""
        while True:
            nxt = self.next_event()
            if nxt > to:
                break
            self._account(nxt, loop_busy)
            self._event(nxt)
        self._account(to, loop_busy)

    def _account(self, to: float, loop_busy: bool) -> None:
        dt = to - self.now
        if dt <= 0:
            return
        for q, ws in self._workers.items():
            use = self.use[q]
            idle = sum(1 for w in ws if w.alive and w.task is None)
            if not idle and use.filled_at_s is None and ws:
                use.filled_at_s = self.now - self.clock.start
            if idle and self._queued[q]:
                use.idle_while_queued_s += idle * dt
            if idle and loop_busy and self.demand(q):
                use.idle_while_loop_busy_s += idle * dt
                if use.filled_at_s is not None:
                    use.idle_while_loop_busy_filled_s += idle * dt
        self.now = to

    def _event(self, at: float) -> None:
        while self._faults and self.clock.start + self._faults[0].at_s <= at:
            self._strike(self._faults.pop(0))
        while self._ends and self._ends[0][0] <= at:
            end, _, w = heapq.heappop(self._ends)
            if w.task is not None and w.until == end:
                self._finish(w)
        for q in self._workers:
            self._assign(q)

    def _strike(self, fault: Fault) -> None:
        live = [w for w in self._workers.get(fault.queue, []) if w.alive]
        if not live:
            return
        w = live[0]
        w.alive = False
        if w.task is not None:
            self.use[w.queue].lost += 1
            self.use[w.queue].busy_s += self.now - w.started  # spent, for nothing
            del self._tasks[w.task.id]  # nobody answers it: the orchestrator's timeout will
            w.task, w.result = None, None

    def _assign(self, queue: str) -> None:
        for w in self._workers[queue]:
            if not self._queued[queue]:
                return
            if w.alive and w.task is None:
                t = self._queued[queue].popleft()
                try:
                    took, w.result = self._run(t, w)
                except (Hpc2EdgeError, ValueError, KeyError, TypeError) as exc:
                    # What a real worker returns for a payload it cannot run (an unknown network).
                    took = self.times.measure_overhead_s
                    w.result = {"status": "error", "error": as_result(exc)}
                w.task, w.started, w.until = t, self.now, self.now + took
                heapq.heappush(self._ends, (w.until, next(self._order), w))

    def _finish(self, w: _Worker) -> None:
        t = w.task
        assert t is not None
        self.use[w.queue].busy_s += w.until - w.started
        self.use[w.queue].tasks += 1
        del self._tasks[t.id]
        self._done[t.id] = Outcome.from_result(w.result, t.kind)
        w.task, w.result = None, None

    # --- answers ------------------------------------------------------------------------------

    def _kind_of(self, w: _Worker) -> str:
        kind = kind_of_queue(w.queue)
        assert kind is not None
        return kind

    def _spec(self, payload: Mapping[str, Any]) -> ArchSpec:
        """The spec a measure payload's model holds (read from the store, as a device does)."""
        return ArchSpec.from_dict(json.loads(self.artifacts.get(payload["artifact_key"])))

    def _latency(self, spec: ArchSpec, kind: str) -> float:
        by_kind = self.benchmark.answer(spec, 1, self.seed).latency_ms
        if kind in by_kind:
            return float(by_kind[kind])
        first = self.benchmark.kinds[0]
        return float(by_kind[first]) * self.scales.get(kind, 1.0)

    def _identity(self, kind: str) -> dict[str, Any]:
        device = {**results.DEVICE, "hostname": f"sim-{kind}", "device_model": f"simulated {kind}"}
        backend = {"backend": "sim", "version": "1"}
        return {"kind": kind, "device": device, "backend": backend}

    def _run(self, t: _Task, w: _Worker) -> tuple[float, dict[str, Any]]:
        """How long ``t`` takes on ``w``, and what it returns."""
        if t.kind == "train":
            spec = ArchSpec.from_dict(t.payload["spec"])
            a = self.benchmark.answer(spec, int(t.payload["epochs"]), self.seed)
            epochs = len(a.val_mse_per_epoch)
            result = results.train_result(
                t.payload,
                arch_id=spec.arch_id,
                val_mse_per_epoch=list(a.val_mse_per_epoch),
                val_mse_constant=a.val_mse_constant,
                train_s=self.times.train_scale * a.s_per_epoch * epochs,
                worker=w.name,
            )
            return self.times.train_s(a.s_per_epoch, epochs), result
        kind = self._kind_of(w)
        ms = self._latency(self._spec(t.payload), kind)
        pair = t.payload.get("pair")
        pair_ms = None if pair is None else self._latency(self._spec(pair), kind)
        identity = self._identity(kind)
        result = results.measure_result(
            t.payload,
            ms,
            kind=kind,
            worker=w.name,
            device=identity["device"],
            backend=identity["backend"],
            pair_ms=pair_ms,
        )
        took = self.times.measure_s(ms + (pair_ms or 0.0), t.payload.get("protocol"))
        return took, result

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """The fleet's answers as in-process task handlers (an
        :class:`~hpc2edge.search.dispatch.InlineDispatcher`'s, by task kind and by queue), each
        answered at once as the queue's first worker would: the same results, without time."""

        def on(queue: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
            w = self._workers[queue][0]

            def handler(payload: dict[str, Any]) -> dict[str, Any]:
                kind = task_kind_of_queue(queue)
                return self._run(_Task("inline", str(kind), queue, payload, self.now), w)[1]

            return handler

        out = {q: on(q) for q in self._workers}
        out["train"] = out[QUEUE_TRAIN]
        out["measure"] = out[edge_queue(next(iter(self.units)))]
        return out

    def train_busy_s(self) -> float:
        """Train worker-seconds spent so far (GPU time: one GPU per worker), running tasks'
        included."""
        ws = self._workers[QUEUE_TRAIN]
        running = sum(self.now - w.started for w in ws if w.task is not None)
        return self.use[QUEUE_TRAIN].busy_s + running

    def utilisation(self) -> dict[str, dict[str, Any]]:
        """Per queue: tasks, busy seconds, the share of worker time busy, idle accounts."""
        span = max(self.now - self.clock.start, 1e-9)
        out = {}
        for q, u in self.use.items():
            out[q] = {**u.to_json(), "busy_share": u.busy_s / (u.workers * span)}
        return out


def candidate(spec: ArchSpec, benchmark: Answers, seed: int = 0) -> cand.Candidate:
    """A simulated candidate: its model's bytes are its spec (what a simulated unit reads back),
    its size figures the benchmark's; no torch, no export."""
    onnx = json.dumps(spec.to_dict(), sort_keys=True).encode()
    a = benchmark.answer(spec, 1, seed)
    return cand.Candidate(
        spec=spec,
        onnx=onnx,
        onnx_sha256=hashlib.sha256(onnx).hexdigest(),
        reference={"seed": cand.REFERENCE_SEED, "outputs": [0.0, 0.0]},
        params=int(a.params),
        flops=int(a.flops),
    )


def units_of(values: Iterable[str]) -> tuple[dict[str, int], dict[str, float]]:
    """``--devices KIND:UNITS[:SCALE]`` values -> units and latency scales per kind.

    Raises:
        ValueError: a kind that is not a kind name, a count that is not a positive integer, a
            scale that is not a positive number, a kind given twice (one line naming it).
    """
    units: dict[str, int] = {}
    scales: dict[str, float] = {}
    for value in values:
        kind, _, rest = value.partition(":")
        count_text, _, scale_text = rest.partition(":")
        check_kind(kind)
        if kind in units:
            raise ValueError(f"devices: kind {kind!r} given twice")
        try:
            n = int(count_text or "1")
            scale = float(scale_text) if scale_text else None
        except ValueError:
            raise ValueError(f"devices: {value!r} is not KIND:UNITS[:SCALE]") from None
        if n < 1:
            raise ValueError(f"devices: {value!r}: at least one unit")
        units[kind] = n
        if scale is not None:
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"devices: {value!r}: a scale is a positive number")
            scales[kind] = scale
    return units or {DEFAULT_KIND: 1}, scales


__all__ = [
    "Answered",
    "Answers",
    "Fault",
    "Memo",
    "QueueUse",
    "SimFleet",
    "SimTimes",
    "candidate",
    "units_of",
]
