"""Exports checked in a pool of spawned processes, one torch thread each (test_export_slow.py).

Each sample is exported and checked exactly as in the test process (:func:`export_and_check`):
the same spec, seed and checks; only which process runs it differs. A pool of as many processes as
the machine has cores (at most two: the CI machine's) keeps both cores busy where the test process
alone, one torch thread, would leave one idle.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def one_thread() -> None:
    """Pool initializer: one torch thread per process, as the unit tier's ``one_torch_thread``."""
    import torch

    torch.set_num_threads(1)


def export_and_check(spec_json: str) -> str | None:
    """Export ``spec_json`` (seed 0, ``onnx.checker`` and ONNX Runtime against PyTorch, any
    non-finite output failing it) and check the graph's output is ``speed_power [batch, 2]``.

    Returns None, or what failed (an exception travels back as its type and message).
    """
    import onnx

    from hpc2edge.models.export import OUTPUT_NAME, export_onnx
    from hpc2edge.space import ArchSpec

    try:
        data = export_onnx(ArchSpec.from_json(spec_json), seed=0)  # ExportError beyond 1e-4
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    (out,) = onnx.load_from_string(data).graph.output
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    if out.name != OUTPUT_NAME or dims != ["batch", 2]:
        return f"the graph's output is {out.name} {dims}, not {OUTPUT_NAME} ['batch', 2]"
    return None


def pool(processes: int | None = None) -> ProcessPoolExecutor:
    """Spawned exporters (no fork of a process that holds torch's threads)."""
    n = processes or max(1, min(2, len(os.sched_getaffinity(0))))
    return ProcessPoolExecutor(
        n, mp_context=multiprocessing.get_context("spawn"), initializer=one_thread
    )
