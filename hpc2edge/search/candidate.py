"""One candidate made ready for the queues: ONNX bytes, PyTorch reference outputs, size figures,
and the JSON requests for ``hpc2edge.measure`` and ``hpc2edge.train``.

Runs on the orchestrator (it needs torch); the workers get only JSON and the artifact key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc2edge.space.base import ArchSpec, TrainingHParams

#: Measurement protocols by name: ``default`` suits a Jetson or a GPU host; ``quick`` is for CPU
#: demos and tests (seconds per model, wider confidence intervals). Its CI target is 10 %: what
#: a 3 s cap can meet for a 50 ms model on a loaded 2-core CPU (at 5 % a third of the demo's
#: measurements were unstable and measured twice more, for nothing a CPU demo needs).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": {
        "warmup_min_s": 0.2,
        "warmup_min_runs": 3,
        "min_runs": 20,
        "min_time_s": 0.3,
        "max_time_s": 3.0,
        "target_rel_ci": 0.10,
        "cooldown_timeout_s": 5.0,
    },
}

REFERENCE_SEED = 11


@dataclass(frozen=True)
class Candidate:
    """What the orchestrator derives from a spec before sending anything."""

    spec: ArchSpec
    onnx: bytes
    onnx_sha256: str
    reference: dict[str, Any]
    params: int
    flops: int


def build(spec: ArchSpec, seed: int = 0) -> Candidate:
    """Export ``spec`` with weights from ``seed`` and compute its reference outputs."""
    import torch

    from hpc2edge.latency.base import reference_input
    from hpc2edge.models import flops, input_shape, params
    from hpc2edge.models.export import build_eval_model, export_onnx

    onnx = export_onnx(spec, seed=seed)
    x = reference_input(list(input_shape(spec)[1:]), 1, REFERENCE_SEED)
    with torch.no_grad():
        out = build_eval_model(spec, seed=seed)(torch.from_numpy(x)).numpy().ravel().tolist()
    return Candidate(
        spec=spec,
        onnx=onnx,
        onnx_sha256=hashlib.sha256(onnx).hexdigest(),
        reference={"seed": REFERENCE_SEED, "outputs": out},
        params=params(spec),
        flops=flops(spec),
    )


def measure_request(
    c: Candidate,
    artifact_key: str,
    *,
    batch_size: int,
    precision: str,
    protocol: str | dict[str, Any],
) -> dict[str, Any]:
    """The ``hpc2edge.measure`` payload for ``c`` (samples are not sent back: stats suffice)."""
    from hpc2edge.models import input_shape

    return {
        "arch_id": c.spec.arch_id,
        "artifact_key": artifact_key,
        "input_shape": list(input_shape(c.spec)[1:]),
        "batch_sizes": [batch_size],
        "precision": precision,
        "protocol": PROTOCOLS[protocol] if isinstance(protocol, str) else protocol,
        "reference": c.reference,
        "keep_samples": False,
    }


@dataclass(frozen=True)
class TrainPlan:
    """How every candidate of a study is trained: same data, recipe and resources."""

    data_paths: tuple[str, ...]
    hparams: TrainingHParams
    epochs: int
    seed: int = 0
    test_fraction: float | None = None
    val_fraction: float = 0.2
    resources: dict[str, Any] | None = None

    def request(self, trial_key: str, spec: ArchSpec, space: str) -> dict[str, Any]:
        return {
            "trial_key": trial_key,
            "space": space,
            "spec": spec.to_dict(),
            "hparams": self.hparams.to_dict(),
            "epochs": self.epochs,
            "seed": self.seed,
            "data": {
                "paths": list(self.data_paths),
                "test_fraction": self.test_fraction,
                "val_fraction": self.val_fraction,
            },
            "resources": self.resources or {"engine": "auto", "nproc": "auto"},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "data_paths": list(self.data_paths),
            "hparams": self.hparams.to_dict(),
            "epochs": self.epochs,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "val_fraction": self.val_fraction,
            "resources": self.resources,
        }


def data_paths(path: Path) -> tuple[str, ...]:
    """The HDF5 files at ``path`` (a file, or a folder of ``*.hdf5`` / ``*.h5``), absolute."""
    from hpc2edge.errors import DataError

    path = path.expanduser().absolute()
    if path.is_file():
        return (str(path),)
    if path.is_dir():
        files = sorted([*path.glob("*.hdf5"), *path.glob("*.h5")])
        if files:
            return tuple(str(f) for f in files)
        raise DataError(f"{path}: no *.hdf5 or *.h5 files in this folder")
    raise DataError(f"{path}: no such file or folder")
