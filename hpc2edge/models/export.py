"""ONNX export of an architecture spec, checked against PyTorch with ONNX Runtime.

``export_onnx(spec, seed)`` is what the orchestrator sends to the edge (through the artifact
store, keyed by the sha256 of these bytes), so it must be reproducible:

- **Weights** come from ``torch.manual_seed(seed)`` inside a forked RNG (the caller's torch RNG
  is left alone). Latency does not depend on the weights' values, but the cache keys on the
  bytes, so equal (spec, seed) must give equal bytes.
- **Exporter**: the TorchScript ("legacy") exporter, opset 17, ``dynamo=False``. It needs no
  extra package, writes one self-contained protobuf (no ``.onnx.data``), and its output is
  byte-identical across runs. It handles the Swin rolls, pads and strided slices with standard
  ops; no custom ops. Input ``frames`` (batch, channels, T, S, S), output ``speed_power``
  (batch, 2); the batch axis is dynamic, every other dimension is fixed by the spec.
- **No constant folding**: folding would bake each block's gathered position bias (heads x N x
  N) and each shifted stage's attention mask (nW x N x N) into the file — ~160 MB of constants
  for the largest Swin3D point instead of a few KB of tables and labels. ONNX Runtime and
  TensorRT fold them at load time anyway.
- **Checks**: ``onnx.checker`` on the model, then ONNX Runtime (CPU) against PyTorch on a fixed
  seeded input of batch 2 (batch 2, not the traced batch 1, so a batch size baked into a reshape
  fails here rather than on the device). Max abs error above ``atol`` (1e-4, fp32) raises
  :class:`ExportError` with the error.

Foreign errors (torch.onnx, onnx, onnxruntime) become :class:`ExportError` here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from hpc2edge.errors import ExportError, SpecError
from hpc2edge.models import build_model, example_input
from hpc2edge.space.base import ArchSpec

OPSET = 17
INPUT_NAME = "frames"
OUTPUT_NAME = "speed_power"
ATOL = 1e-4  # fp32: attention softmax and layer norms reorder sums; observed errors ~1e-6
CHECK_BATCH = 2


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`check_onnx` compared."""

    max_abs_error: float
    batch_size: int
    atol: float


def build_eval_model(spec: ArchSpec, seed: int) -> torch.nn.Module:
    """``build_model(spec)`` with weights from ``seed``, in eval mode; the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec).eval()


def export_onnx(spec: ArchSpec, seed: int = 0, *, check: bool = True) -> bytes:
    """Serialized ONNX model of ``spec`` with weights from ``seed``; deterministic.

    Args:
        spec: the architecture (any buildable spec, not only points of a search space).
        seed: weight initialisation seed.
        check: run ``onnx.checker`` and the ONNX Runtime equivalence check.

    Raises:
        SpecError: the spec does not describe a network.
        ExportError: export failed, the checker rejected the model, or ONNX Runtime differs
            from PyTorch by more than 1e-4.
    """
    model = build_eval_model(spec, seed)
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter announces its deprecation on every call.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            # Shape inference reports that it cannot fold strided slices; we fold nothing.
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(
                model,
                (example_input(spec, batch_size=1, seed=seed),),
                buffer,  # type: ignore[arg-type]  # file-likes work; the hint is narrow
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=False,
            )
    except SpecError:
        raise
    except Exception as exc:
        raise ExportError(f"{spec.space} {spec.arch_id[:12]}: ONNX export failed: {exc}") from exc
    data = buffer.getvalue()
    if check:
        check_onnx(data, spec, model, seed=seed)
    return data


def check_onnx(
    data: bytes, spec: ArchSpec, model: torch.nn.Module, seed: int = 0, atol: float = ATOL
) -> ExportCheck:
    """Validate ``data`` with ``onnx.checker`` and compare ONNX Runtime with ``model``.

    Raises:
        ExportError: checker failure, ONNX Runtime failure, or max abs error > ``atol``.
    """
    import onnx
    import onnxruntime as ort

    label = f"{spec.space} {spec.arch_id[:12]}"
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:
        raise ExportError(f"{label}: onnx.checker rejected the model: {exc}") from exc

    x = example_input(spec, batch_size=CHECK_BATCH, seed=seed + 1)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    except Exception as exc:
        raise ExportError(f"{label}: ONNX Runtime could not run the model: {exc}") from exc
    if got.shape != expected.shape:
        raise ExportError(f"{label}: ONNX Runtime output {got.shape}, PyTorch {expected.shape}")
    error = float(np.max(np.abs(got - expected)))
    if not error <= atol:  # also catches NaN
        raise ExportError(
            f"{label}: ONNX Runtime differs from PyTorch by {error:.3g} (max abs) > {atol:g}"
        )
    return ExportCheck(max_abs_error=error, batch_size=CHECK_BATCH, atol=atol)
