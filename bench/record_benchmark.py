"""Record a benchmark table: real latencies and real training curves of a sample of the cnn3d
space (and a few swin3d networks), for simulated searches (:mod:`hpc2edge.sim.benchmark`).

For every architecture of a seeded uniform sample (the space's baseline first) that the output
file does not have yet, in this process and with the real task functions
(:func:`hpc2edge.search.dispatch.local_handlers`, as ``bench/search.py`` calls them):

1. **build**: :func:`hpc2edge.search.candidate.build` (ONNX export, reference outputs, params,
   FLOPs), the ONNX file stored in an artifact store;
2. **measure**: the real ``hpc2edge.measure`` function on ONNX Runtime (one intra-op thread,
   batch 1, fp32, the ``quick`` protocol), through the real request;
3. **train**: the real ``hpc2edge.train`` function (a training child) on the demo problem's
   synthetic data and recipe (:mod:`hpc2edge.search.problem`) for ``--max-epochs`` epochs; the
   per-epoch val MSE and train loss, and ``train_s / epochs_run`` as seconds per epoch. A subset
   (``--seed-subset``) is trained with a second seed, to know the seed noise.

Then the row is added and the file saved (atomically: a temporary file, then a rename), so
killing the recorder at any moment loses at most the row in progress, and running it again
resumes where it stopped. ``--time-limit-min`` stops cleanly after the row that crosses it.
A file recorded on another problem, protocol or CPU is refused rather than mixed with.

A network whose measurement or training fails (a diverged training, say) is logged, filed under
the header's ``failed`` with the reason, and skipped by later runs (``--retry-failed`` tries it
again). ``--report`` prints the table's summary and the surrogate's held-out quality and records
nothing.

Usage::

    python bench/record_benchmark.py --out PATH --n 200 [--swin 20] [--seed-subset 30]
        [--max-epochs E] [--time-limit-min M] [--data DIR] [--report]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the training children inherit it
os.environ.setdefault("MKL_NUM_THREADS", "1")

import _machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpc2edge.sim import surrogate as sur  # noqa: E402
from hpc2edge.sim.benchmark import (  # noqa: E402
    DEFAULT,
    FORMAT,
    Benchmark,
    BenchmarkError,
    Curve,
    Row,
    load,
)
from hpc2edge.space import RandomTrial, get_space  # noqa: E402
from hpc2edge.space.base import ArchSpec  # noqa: E402

MAIN_SPACE = "cnn3d"
SWIN_SPACE = "swin3d-input"  # the swin3d family at a searched input: 8 x 41 x 41 is a point of it
PROTOCOL = "quick"
PRECISION = "fp32"
BATCH_SIZE = 1
INTRA_OP_THREADS = 1
VAL_FRACTION = 0.2
SAMPLE_SEED = 0
SECOND_SEED = 1
#: Recipe entries that go to the train request's ``options`` (the rest is its hparams).
OPTION_KEYS = ("scheduler", "weight_decay", "grad_clip_norm")

# --- the problem ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """What the table is recorded on."""

    pin: dict[str, int]
    synth: Any  # a SynthSpec
    recipe: dict[str, Any]
    max_epochs: int  # the default --max-epochs
    source: str


def problem() -> Problem:
    """The calibrated demo problem (:mod:`hpc2edge.search.problem`), or today's demo values
    where that module does not exist."""
    try:
        p = importlib.import_module("hpc2edge.search.problem")
    except ModuleNotFoundError as exc:
        if exc.name != "hpc2edge.search.problem":
            raise  # the module is there but broken: never record on the fallback silently
        from hpc2edge.cli.search import DEMO_PIN
        from hpc2edge.data.synth import SynthSpec

        synth = SynthSpec(objects=4, layers=1, lines=96, frame_size=32, seed=0)
        recipe = {"epochs": 2, "lr": 1e-2, "batch_size": 8, "engine": "single",
                  "test_fraction": 0.25}  # fmt: skip
        return Problem(dict(DEMO_PIN), synth, recipe, 4, "hpc2edge demo defaults")
    recipe = _as_dict(p.DEMO_RECIPE)
    max_epochs = int(getattr(p, "DEMO_MAX_EPOCHS", 2 * int(recipe_value(recipe, "epochs"))))
    return Problem(dict(p.DEMO_PIN), p.DEMO_DATA, recipe, max_epochs, "hpc2edge.search.problem")


def _as_dict(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"DEMO_RECIPE: expected a dataclass or a mapping, got {type(value).__name__}")


def recipe_value(recipe: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in recipe:
            return recipe[name]
    if default is not None:
        return default
    raise KeyError(f"the recipe has none of {', '.join(names)}")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- the sample ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One architecture to record, and the seeds to train it with."""

    space: str
    spec: ArchSpec
    seeds: tuple[int, ...]


def sample(space_name: str, pin: Mapping[str, int], count: int, seed: int) -> list[ArchSpec]:
    """``count`` distinct specs drawn uniformly from the space's choices, the pin answered
    without asking (as the orchestrator's ``Pinned`` does); deterministic per seed."""
    from hpc2edge.search.runconfig import Pinned

    space = get_space(space_name)
    rng = random.Random(f"{space_name}:{seed}")
    out: dict[str, ArchSpec] = {}
    tries = 0
    while len(out) < count and tries < 100 * count + 100:
        tries += 1
        spec = space.validate(space.suggest(Pinned(RandomTrial(rng), dict(pin))))
        out.setdefault(spec.arch_id, spec)
    return list(out.values())


def plan(
    n: int,
    swin: int,
    seed_subset: int,
    pin: Mapping[str, int],
    *,
    baseline: bool = True,
    seed: int = SAMPLE_SEED,
) -> list[Job]:
    """The recording order: ``n`` cnn3d networks (the baseline first), a swin3d one after every
    ``n / swin`` of them, and every ``n / seed_subset``-th cnn3d one with a second seed, so a
    recording stopped early is a uniform sample with its share of each."""
    space = get_space(MAIN_SPACE)
    main: list[ArchSpec] = []
    if baseline and n > 0:
        main.append(space.validate(space.baseline().with_input(pin["frames"], pin["size"])))
    for spec in sample(MAIN_SPACE, pin, n + 1, seed):
        if len(main) >= n:
            break
        if spec not in main:
            main.append(spec)
    swins = sample(SWIN_SPACE, pin, swin, seed) if swin > 0 else []
    every_seed = max(1, n // seed_subset) if seed_subset > 0 else 0
    every_swin = max(1, n // swin) if swin > 0 else 0
    jobs: list[Job] = []
    seeded = 0
    for i, spec in enumerate(main):
        two = bool(every_seed) and i % every_seed == every_seed - 1 and seeded < seed_subset
        seeded += two
        jobs.append(Job(MAIN_SPACE, spec, (0, SECOND_SEED) if two else (0,)))
        if every_swin and (i + 1) % every_swin == 0 and swins:
            jobs.append(Job(SWIN_SPACE, swins.pop(0), (0,)))
    jobs += [Job(SWIN_SPACE, s, (0,)) for s in swins]
    return jobs


# --- data and header ----------------------------------------------------------------------------


def ensure_data(folder: Path, synth: Any) -> tuple[list[Path], str]:
    """The problem's synthetic files in ``folder`` and their digest: generated once, and again
    when the spec or the generator's source changed (generation is deterministic and writes no
    timestamps, so the digest names the data)."""
    from hpc2edge.data import synth as synth_module

    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "synth-spec.json"
    source = Path(synth_module.__file__).read_bytes()
    want = {
        "spec": _jsonable(dataclasses.asdict(synth)),
        "generator_sha256": hashlib.sha256(source).hexdigest(),
    }
    files = sorted(folder.glob("*.hdf5"))
    if not (files and marker.exists() and json.loads(marker.read_text()) == want):
        print(f"generating the synthetic data in {folder}", file=sys.stderr, flush=True)
        for old in files:
            old.unlink()
        files = sorted(synth_module.generate(folder, synth, overwrite=True))
        marker.write_text(json.dumps(want, sort_keys=True) + "\n")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return files, digest.hexdigest()


def device_record(kind: str) -> dict[str, Any]:
    """How latency is measured on this machine (the device without its host name)."""
    from hpc2edge.latency import get_backend, telemetry
    from hpc2edge.search.candidate import PROTOCOLS

    device = {k: v for k, v in telemetry.fingerprint().items() if k != "hostname"}
    backend = get_backend("onnxruntime", intra_op_threads=INTRA_OP_THREADS)
    return {
        "backend": "onnxruntime",
        "backend_fingerprint": _jsonable(backend.fingerprint()),
        "intra_op_threads": INTRA_OP_THREADS,
        "precision": PRECISION,
        "batch_size": BATCH_SIZE,
        "protocol": {"name": PROTOCOL, **PROTOCOLS[PROTOCOL]},
        "device": _jsonable(device),
        "statistic": "compute series, median of the timed runs (ms)",
    }


def new_header(
    args: argparse.Namespace,
    pin: dict[str, int],
    synth: Any,
    recipe: dict[str, Any],
    source: str,
    kind: str,
) -> dict[str, Any]:
    """The header of a new table (``problem`` fields are compared on every resume)."""
    return {
        "format": FORMAT,
        "name": args.name,
        "spaces": [MAIN_SPACE, SWIN_SPACE],
        "pin": pin,
        **problem_fields(args, synth, recipe),
        "problem_source": source,
        "latency": {kind: device_record(kind)},
        "sample": {
            "seed": SAMPLE_SEED,
            "n": args.n,
            "swin": args.swin,
            "seed_subset": args.seed_subset,
            "second_seed": SECOND_SEED,
            "how": "uniform over each parameter's choices (RandomTrial), pin answered by "
            "Pinned, cnn3d baseline first",
        },
        "machine": _machine.describe({}),
        "versions": versions(),
        "created": _now(),
        "recorder": "bench/record_benchmark.py",
        "notes": [
            "val_mse after epoch e of the E-epoch run equals an e-epoch run's: StepLR does not "
            "depend on the epoch budget, the data order depends on seed and epoch only",
            "s_per_epoch = train_s / epochs_run of the training result (the training loop only, "
            "one process, OMP_NUM_THREADS=1, a shared 2-core machine)",
            "latency: compute series at batch 1, stats only (no raw samples)",
            "the validation split follows the training seed, so each curve has its own "
            "val_mse_constant",
        ],
    }


def problem_fields(args: argparse.Namespace, synth: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {
            "synth": _jsonable(dataclasses.asdict(synth)),
            "test_fraction": recipe_value(recipe, "test_fraction"),
            "val_fraction": recipe_value(recipe, "val_fraction", default=VAL_FRACTION),
            "files": "v1.1 layout, generated by hpc2edge.data.synth.generate; sha256 over "
            "'<name>:<sha256>' lines of the files",
        },
        "recipe": _jsonable(recipe),
        "max_epochs": args.max_epochs,
    }


def versions() -> dict[str, str | None]:
    import hpc2edge

    return {
        "hpc2edge": hpc2edge.__version__,
        "python": platform.python_version(),
        **{
            name: _machine.version(name)
            for name in ("torch", "onnxruntime", "onnx", "numpy", "h5py", "optuna")
        },
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_resume(
    bench: Benchmark, header: dict[str, Any], kind: str, *, another_cpu: bool = False
) -> bool:
    """Refuse to add rows recorded on another problem, pin or latency protocol to ``bench``.

    Another CPU model is refused too unless ``another_cpu``; then True is returned: this sitting's
    training times must be calibrated (:func:`calibrate`) and every latency measured again in one
    sitting (``--remeasure-latency``) before the table is used."""
    old = bench.header
    for key in ("pin", "data", "recipe", "max_epochs"):
        if _jsonable(old.get(key)) != _jsonable(header[key]):
            raise SystemExit(
                f"the output was recorded with another {key} ({json.dumps(old.get(key))[:200]}; "
                f"now {json.dumps(header[key])[:200]}): use another --out"
            )
    if kind not in old["latency"]:
        raise SystemExit(
            f"the output has no device kind {kind!r} (it has {', '.join(old['latency'])})"
        )
    was, now = old["latency"][kind], header["latency"][kind]
    for key in ("protocol", "intra_op_threads", "precision", "batch_size"):
        if _jsonable(was.get(key)) != _jsonable(now.get(key)):
            raise SystemExit(
                f"the output's latency was measured with another {key}: use another --out"
            )
    cpu_was, cpu_now = was["device"].get("cpu_model"), now["device"].get("cpu_model")
    if cpu_was == cpu_now:
        return False
    if not another_cpu:
        raise SystemExit(
            f"the output's latency was measured on {cpu_was!r}, this is {cpu_now!r}: pass "
            f"--another-cpu to go on here (training times are then scaled to the first "
            f"sitting's machine, and every latency must be measured again in one sitting with "
            f"--remeasure-latency)"
        )
    return True


#: Rows of the table (the first by arch id) trained again when a sitting runs on another CPU.
CALIBRATION_ROWS = 3


def calibrate(rec: Recorder, bench: Benchmark, cpu_model: str | None) -> dict[str, Any]:
    """Train the table's first :data:`CALIBRATION_ROWS` rows again (seed 0) on this machine.

    Returns the session's calibration: ``speed_factor`` (the median of recorded / now seconds per
    epoch; this sitting's times are multiplied by it, so every ``s_per_epoch`` of the table is in
    the first sitting's machine's seconds) and how far the curves moved (``val_mse_rel_diff``,
    the largest relative difference over the epochs: the same seed on another CPU's kernels)."""
    rows = [r for r in bench.rows.values() if r.curve(0) is not None][:CALIBRATION_ROWS]
    if not rows:
        return {"cpu_model": cpu_model, "speed_factor": 1.0, "rows": []}
    checks = []
    for row in rows:
        was = row.curve(0)
        assert was is not None
        now = rec.train(row.space, row.arch(), 0)
        pairs = zip(was.val_mse, now.val_mse, strict=True)
        diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)
        checks.append(
            {
                "arch_id": row.arch_id,
                "s_per_epoch_recorded": was.s_per_epoch,
                "s_per_epoch_now": now.s_per_epoch,
                "val_mse_rel_diff": round(diff, 6),
            }
        )
        print(f"calibration {row.arch_id[:12]}: {was.s_per_epoch:.3f} s/epoch recorded, "
              f"{now.s_per_epoch:.3f} now; val_mse within {diff:.1%}", file=sys.stderr,
              flush=True)  # fmt: skip
    ratios = sorted(c["s_per_epoch_recorded"] / c["s_per_epoch_now"] for c in checks)
    factor = ratios[len(ratios) // 2]
    return {"cpu_model": cpu_model, "speed_factor": round(factor, 6), "rows": checks}


# --- one row ------------------------------------------------------------------------------------


class Recorder:
    """Builds, measures and trains one architecture with the real task functions."""

    def __init__(
        self, data: Sequence[Path], recipe: Mapping[str, Any], epochs: int, work: Path, kind: str
    ) -> None:
        from hpc2edge.search.dispatch import local_handlers
        from hpc2edge.store.artifacts import DirectoryArtifactStore

        self.artifacts = DirectoryArtifactStore(work / "artifacts")
        self.state = work / "train-state"
        self.handlers = local_handlers(
            self.state, self.artifacts, intra_op_threads=INTRA_OP_THREADS
        )
        self.data = tuple(str(Path(p).absolute()) for p in data)  # the child runs elsewhere
        self.recipe = recipe
        self.epochs = epochs
        self.kind = kind
        self.speed_factor = 1.0  # this machine's seconds -> the first sitting's (calibrate)

    def measure(self, spec: ArchSpec) -> tuple[int, int, dict[str, Any]]:
        """(params, FLOPs, latency stats) of ``spec``; NetworkFailed when it cannot be measured."""
        from hpc2edge.errors import ExportError
        from hpc2edge.search import candidate as cand

        try:
            c = cand.build(spec)
        except ExportError as exc:
            raise NetworkFailed(f"build: {' '.join(str(exc).split())[:300]}") from None
        key = self.artifacts.put(c.onnx)
        payload = cand.measure_request(
            c, key, batch_size=BATCH_SIZE, precision=PRECISION, protocol=PROTOCOL
        )
        result = self.handlers["measure"](payload)
        if result is None or result.get("status") != "ok":
            _fail("measure", (result or {}).get("error") or {}, NETWORK_MEASURE_ERRORS)
        compute = result["batches"][0]["compute"]
        stats = compute["stats"]
        latency = {
            "median_ms": float(stats["median_ms"]),
            "ci95_ms": [float(x) for x in stats["ci95_median_ms"]],
            "p90_ms": float(stats["p90_ms"]),
            "n": int(stats["n"]),
            "stopped_by": str(compute.get("stopped_by") or "unknown"),
        }
        return c.params, c.flops, latency

    def train(self, space: str, spec: ArchSpec, seed: int) -> Curve:
        """One training of ``spec``; NetworkFailed when it fails (diverges, say)."""
        from hpc2edge.search import candidate as cand
        from hpc2edge.space.base import TrainingHParams

        r = self.recipe
        hparams = TrainingHParams(
            lr=float(recipe_value(r, "lr")),
            batch_size_per_gpu=int(
                recipe_value(r, "batch_size", "batch_size_per_gpu", "train_batch_size")
            ),
            epochs=self.epochs,
            **{k: r[k] for k in ("lr_step_epochs", "lr_gamma", "optimizer") if k in r},
        )
        train_plan = cand.TrainPlan(
            data_paths=self.data,
            hparams=hparams,
            epochs=self.epochs,
            seed=seed,
            test_fraction=recipe_value(r, "test_fraction"),
            val_fraction=float(recipe_value(r, "val_fraction", default=VAL_FRACTION)),
            resources={"engine": str(recipe_value(r, "engine", default="single")), "nproc": 1},
        )
        key = f"bench-{spec.arch_id[:24]}-s{seed}-e{self.epochs}"
        payload = train_plan.request(key, spec, space)
        options = {k: r[k] for k in OPTION_KEYS if k in r}
        if options:
            payload["options"] = options
        result = self.handlers["train"](payload)
        shutil.rmtree(self.state / "train-runs", ignore_errors=True)  # checkpoints: not needed
        if result is None or result.get("status") != "ok":
            _fail("train", (result or {}).get("error") or {}, NETWORK_TRAIN_ERRORS)
        run = result["epochs_run"]
        if run != self.epochs or len(result["val_mse_per_epoch"]) != self.epochs:
            raise NetworkFailed(f"train: {run} of {self.epochs} epochs run")
        return Curve(
            seed=seed,
            val_mse=tuple(float(v) for v in result["val_mse_per_epoch"]),
            train_loss=tuple(float(v) for v in result["train_loss_per_epoch"]),
            s_per_epoch=float(result["train_s"]) / run * self.speed_factor,
            val_mse_constant=float(result["val_mse_constant"]),
        )


class NetworkFailed(RuntimeError):
    """The network could not be measured or trained (it diverged, say): filed, not retried."""


#: Error types that are the network's (filed under ``failed``); any other error is the
#: recorder's or the machine's (a malformed request, missing data) and stops the recording.
NETWORK_MEASURE_ERRORS = frozenset({"MeasurementError", "OutputMismatch", "ExportError"})
NETWORK_TRAIN_ERRORS = frozenset({"TrainingError"})


def _fail(what: str, error: Mapping[str, Any], network_errors: frozenset[str]) -> None:
    kind = str(error.get("type"))
    message = " ".join(str(error.get("message")).split())
    text = f"{what}: {kind}: {message[-300:]}"
    if kind in network_errors:
        raise NetworkFailed(text)
    raise SystemExit(f"error: {text[:600]} (not the network's fault: stopping)")


# --- the recording ------------------------------------------------------------------------------


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def record(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    prob = problem()
    pin, synth, recipe, source = prob.pin, prob.synth, prob.recipe, prob.source
    if args.max_epochs is None:
        args.max_epochs = prob.max_epochs
    if recipe.get("scheduler", "step") != "step":
        print(f"warning: a {recipe['scheduler']} schedule depends on the epoch budget: the "
              f"curve's first e epochs are not an e-epoch run's", file=sys.stderr)  # fmt: skip
    out: Path = args.out
    kind = args.kind
    data, data_sha256 = ensure_data(
        args.data or out.parent / f"{out.name.split('.')[0]}-data", synth
    )
    header = new_header(args, pin, synth, recipe, source, kind)
    header["data"]["sha256"] = data_sha256
    if out.exists():
        bench = load(out)
        calibrating = check_resume(bench, header, kind, another_cpu=args.another_cpu)
    else:
        calibrating = False
        bench = Benchmark(header)
    session = {
        "started": _now(),
        "load_avg_1m": header["machine"]["load_avg_1m"],
        "rows_added": 0,
        "trainings": 0,
    }
    bench.header.setdefault("sessions", []).append(session)
    if calibrating:
        cpus = bench.header["latency"][kind].setdefault("cpus", [_cpu(bench.header, kind)])
        if _cpu(header, kind) not in cpus:
            cpus.append(_cpu(header, kind))
    jobs = plan(args.n, args.swin, args.seed_subset, pin, baseline=not args.no_baseline)
    failed = bench.header.setdefault("failed", {})
    if args.retry_failed:
        failed.clear()
    todo = [j for j in jobs if _missing(bench, j) and j.spec.arch_id not in failed]
    print(
        f"{len(bench.rows)} rows in {out}; plan {len(jobs)} networks, {len(todo)} to do; "
        f"{len(failed)} failed before and skipped (--retry-failed tries them again); "
        f"{args.max_epochs} epochs; problem from {source}",
        file=sys.stderr,
        flush=True,
    )
    if not todo:
        return 0
    started = time.perf_counter()
    limit_s = None if args.time_limit_min is None else 60.0 * args.time_limit_min
    done_units, spent = 0.0, 0.0
    units_left = sum(_units(bench, j) for j in todo)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="hpc2edge-record-") as tmp:
        rec = Recorder(data, recipe, args.max_epochs, Path(tmp), kind)
        if calibrating:
            session["calibration"] = calibrate(rec, bench, _cpu(header, kind))
            rec.speed_factor = session["calibration"]["speed_factor"]
            bench.save(out)
        for i, job in enumerate(todo):
            if limit_s is not None and time.perf_counter() - started >= limit_s:
                print(f"time limit reached after {i} networks: stopping", file=sys.stderr)
                break
            t0 = time.perf_counter()
            units = _units(bench, job)
            try:
                row = _record_one(rec, bench, job)
            except NetworkFailed as exc:
                failures += 1
                reason = " ".join(str(exc).split())[:300]
                print(f"[{i + 1}/{len(todo)}] {job.spec.arch_id[:12]} {job.space}: FAILED "
                      f"({reason}); skipped", file=sys.stderr, flush=True)  # fmt: skip
                failed[job.spec.arch_id] = {"space": job.space, "reason": reason, "when": _now()}
                bench.save(out)  # not tried again on the next run
                units_left -= units
                continue
            session["rows_added"] += job.spec.arch_id not in bench.rows
            session["trainings"] += int(units)
            bench.add(row)
            bench.header["updated"] = _now()
            bench.save(out)
            seconds = time.perf_counter() - t0
            done_units += units
            units_left -= units
            spent += seconds
            eta = spent / done_units * units_left if done_units else math.inf
            c = row.curves[0]
            lat = row.latency[kind]["median_ms"]
            print(
                f"[{i + 1}/{len(todo)}] {row.arch_id[:12]} {job.space:12} {row.flops / 1e6:8.1f} "
                f"MFLOP {lat:8.2f} ms  mse {c.val_mse[-1]:.4g}/{c.val_mse_constant:.4g} "
                f"({c.val_mse[-1] / c.val_mse_constant:.2f})  {c.s_per_epoch:5.1f} s/epoch "
                f"{len(row.curves)} seed(s)  {seconds:5.1f} s; {len(bench.rows)} rows, "
                f"ETA {_eta(eta)}",
                file=sys.stderr,
                flush=True,
            )
    print(f"{len(bench.rows)} rows in {out} ({failures} failed this run)", file=sys.stderr)
    return 0


def _cpu(header: Mapping[str, Any], kind: str) -> str | None:
    cpu: str | None = header["latency"][kind]["device"].get("cpu_model")
    return cpu


def _missing(bench: Benchmark, job: Job) -> bool:
    row = bench.rows.get(job.spec.arch_id)
    return row is None or any(row.curve(s) is None for s in job.seeds)


def _units(bench: Benchmark, job: Job) -> float:
    """Trainings still to do for ``job`` (what the ETA counts)."""
    row = bench.rows.get(job.spec.arch_id)
    return float(sum(1 for s in job.seeds if row is None or row.curve(s) is None))


def _record_one(rec: Recorder, bench: Benchmark, job: Job) -> Row:
    old = bench.rows.get(job.spec.arch_id)
    if old is None:
        params, flops, latency = rec.measure(job.spec)
        curves: list[Curve] = []
        latencies = {rec.kind: latency}
    else:
        params, flops, latencies, curves = old.params, old.flops, old.latency, list(old.curves)
    for seed in job.seeds:
        if not any(c.seed == seed for c in curves):
            curves.append(rec.train(job.space, job.spec, seed))
    curves.sort(key=lambda c: c.seed)
    return Row(
        job.spec.arch_id, job.space, job.spec.to_dict(), params, flops, latencies, tuple(curves)
    )


def remeasure(args: argparse.Namespace) -> int:
    """Measure the latency of every row again, in one sitting, and replace it: latency is
    seconds per row where training is minutes, so a table recorded over several sittings on a
    shared machine can get all its latencies under one machine state (an idle one, ideally).
    Saved after every row, like the recording; rows are done in arch id order from
    ``--remeasure-from`` on (resume: the last arch id printed)."""
    import torch

    torch.set_num_threads(1)
    out: Path = args.out
    bench = load(out)
    kind = args.kind
    record_now = device_record(kind)
    another = check_resume(
        bench, {**bench.header, "latency": {kind: record_now}}, kind, another_cpu=True
    )
    if another and args.remeasure_from:
        raise SystemExit(
            "--remeasure-from resumes a re-measurement on the machine that began it; this CPU "
            "is another: start from the first row (leave --remeasure-from out)"
        )
    if another or "cpus" in bench.header["latency"][kind]:
        # From the first row on, every latency is this machine's: it becomes the table's.
        bench.header["latency"][kind].update(device=record_now["device"], cpus=[])
    rows = [bench.rows[k] for k in sorted(bench.rows) if k >= (args.remeasure_from or "")]
    started = _now()
    load_now = _machine.describe({})["load_avg_1m"]
    print(f"re-measuring {len(rows)} rows of {out} (load avg 1 min {load_now})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hpc2edge-remeasure-") as tmp:
        rec = Recorder([], {}, bench.max_epochs, Path(tmp), kind)
        for i, row in enumerate(rows):
            t0 = time.perf_counter()
            try:
                _, _, latency = rec.measure(row.arch())
            except NetworkFailed as exc:
                print(f"[{i + 1}/{len(rows)}] {row.arch_id}: FAILED ({exc}); kept the old latency",
                      file=sys.stderr)  # fmt: skip
                continue
            was = row.latency[kind]["median_ms"]
            bench.add(dataclasses.replace(row, latency={**row.latency, kind: latency}))
            if i + 1 == len(rows):
                bench.header["latency"][kind].pop("cpus", None)  # one machine's latencies again
            bench.header["latency"][kind]["remeasured"] = {
                "started": started, "updated": _now(), "load_avg_1m_start": load_now,
                "rows": i + 1, "from": args.remeasure_from,
            }  # fmt: skip
            bench.save(out)
            now_ms = latency["median_ms"]
            print(f"[{i + 1}/{len(rows)}] {row.arch_id} {was:8.2f} -> {now_ms:8.2f} ms "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)  # fmt: skip
    return 0


# --- the report ---------------------------------------------------------------------------------


def report(path: Path, folds: int) -> str:
    """The table's summary and the surrogate's held-out quality, as text."""
    bench = load(path)
    h = bench.header
    lines = [
        f"{path}: {h['name']} ({h['format']}), created {h.get('created')}, "
        f"updated {h.get('updated')}"
    ]
    lines.append(
        f"pin {h['pin']}, max_epochs {bench.max_epochs}, recipe {json.dumps(h.get('recipe'))}"
    )
    for kind, rec in h["latency"].items():
        dev = rec.get("device", {})
        lines.append(
            f"latency [{kind}]: {rec.get('backend')}, {rec.get('intra_op_threads')} "
            f"thread(s), {rec.get('protocol', {}).get('name')} protocol, "
            f"{dev.get('cpu_model')}"
        )
        if "cpus" in rec:
            lines.append(
                f"  WARNING: latencies from more than one machine "
                f"({', '.join(map(str, rec['cpus']))} or a re-measurement not finished): run "
                "--remeasure-latency"
            )
    for sitting in h.get("sessions", []):
        cal = sitting.get("calibration")
        if cal:
            lines.append(
                f"sitting {sitting['started']} on {cal['cpu_model']}: training times x "
                f"{cal['speed_factor']:.3f} (calibrated on {len(cal['rows'])} rows; val MSE within "
                f"{max((c['val_mse_rel_diff'] for c in cal['rows']), default=0):.1%})"
            )
    for space in bench.spaces:
        rows = [r for r in bench.rows.values() if r.space == space]
        if not rows:
            continue
        seeds = sum(len(r.curves) > 1 for r in rows)
        lat = sorted(r.latency[bench.kinds[0]]["median_ms"] for r in rows)
        ratio = sorted(r.curves[0].val_mse[-1] / r.curves[0].val_mse_constant for r in rows)
        spe = sorted(r.curves[0].s_per_epoch for r in rows)
        lines.append(
            f"{space}: {len(rows)} rows ({seeds} with 2 seeds); latency {lat[0]:.2f}-"
            f"{lat[-1]:.2f} ms (median {lat[len(lat) // 2]:.2f}); final val MSE / constant "
            f"{ratio[0]:.2f}-{ratio[-1]:.2f} (median {ratio[len(ratio) // 2]:.2f}, "
            f"{sum(x < 1 for x in ratio)} below 1); s/epoch {spe[0]:.1f}-{spe[-1]:.1f} "
            f"(total {sum(r.curves[0].s_per_epoch for r in rows) * bench.max_epochs / 60:.0f} "
            "min of training)"
        )
    lines.append(f"seed sigma (std of log final val MSE between seeds): {bench.seed_sigma:.3f}")
    agree = sur.seed_agreement(bench)
    main_rows = sum(r.space == bench.spaces[0] for r in bench.rows.values())
    if main_rows < max(folds, 2 * sur.MIN_ROWS):
        lines.append(f"surrogate: {main_rows} {bench.spaces[0]} rows, too few to evaluate")
        return "\n".join(lines)
    lines += [
        "",
        f"surrogate held-out quality ({bench.spaces[0]}, {folds}-fold, {main_rows} rows):",
        f"{'target':24}{'model':>6}{'Kendall tau':>13}{'within 10 %':>13}",
    ]
    for model in sur.MODELS:
        quality = sur.evaluate(bench, folds=folds, model=model)
        for name, q in quality.items():
            lines.append(f"{name:24}{model:>6}{q['kendall_tau']:>13.3f}{q['within_10pct']:>12.0%}")
    if agree is not None:
        lines.append(
            f"{'val_mse, seed 1 vs 0':24}{'':>6}{agree['kendall_tau']:>13.3f}"
            f"{agree['within_10pct']:>12.0%}   (the seed noise: a ceiling; {int(agree['n'])} rows)"
        )
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------------


def default_kind() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        return "cpu-x86"
    if machine in ("aarch64", "arm64"):
        return "cpu-arm"
    return "cpu"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the table (.json.gz)")
    parser.add_argument(
        "--name", default=DEFAULT, help=f"the benchmark's name (default: {DEFAULT})"
    )
    parser.add_argument("--n", type=int, default=200, help="cnn3d networks (default: 200)")
    parser.add_argument("--swin", type=int, default=20, help="swin3d networks (default: 20)")
    parser.add_argument(
        "--seed-subset",
        type=int,
        default=30,
        help="cnn3d networks also trained with seed 1 (default: 30)",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="epochs per training (default: the problem's DEMO_MAX_EPOCHS)",
    )
    parser.add_argument(
        "--time-limit-min",
        type=float,
        default=None,
        help="stop after the row that crosses this many minutes",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of the synthetic data (default: <out>-data beside --out)",
    )
    parser.add_argument(
        "--kind",
        default=default_kind(),
        help="device kind the latencies are filed under (default: %(default)s)",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="do not put the cnn3d baseline first (tests)"
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="train the networks whose training failed before again",
    )
    parser.add_argument(
        "--another-cpu",
        action="store_true",
        help="go on recording on another CPU model: training times are calibrated against rows "
        "already recorded; latencies must then be re-measured with --remeasure-latency",
    )
    parser.add_argument(
        "--remeasure-latency",
        action="store_true",
        help="measure every row's latency again in this sitting (train nothing)",
    )
    parser.add_argument(
        "--remeasure-from",
        default=None,
        metavar="ARCH_ID",
        help="with --remeasure-latency: start at this arch id (resume)",
    )
    parser.add_argument("--report", action="store_true", help="print the summary, record nothing")
    parser.add_argument("--folds", type=int, default=5, help="folds of --report (default: 5)")
    args = parser.parse_args(argv)
    for name in ("n", "swin", "seed_subset"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    if args.max_epochs is not None and not 1 <= args.max_epochs <= 1000:
        parser.error("--max-epochs must be in 1..1000")
    from hpc2edge.roles import KIND_RE

    if not KIND_RE.fullmatch(args.kind):
        parser.error("--kind: lowercase letters, digits and inner hyphens, 1-32 characters")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.report:
            print(report(args.out, args.folds))
            return 0
        if args.remeasure_latency:
            return remeasure(args)
        return record(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
