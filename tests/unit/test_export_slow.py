"""The 200 seeded samples of each space through export and the ONNX Runtime check (minutes).

Marked ``slow``, not ``unit``: 400 exports would make ``pytest -m unit`` take minutes.

Each export builds the sample (``build_model``), traces its forward at batch 1, and the check
runs PyTorch's forward at batch 2 against ONNX Runtime (any non-finite output fails it: the
error is NaN). With the graph's output asserted to be ``[batch, 2]`` too, this also covers what
a separate "build the 200 swin3d samples and run them forward" test did (shape ``(1, 2)``,
finite); the cnn3d ones also run forward in the unit tier (test_models_build.py).

The exports run in a pool of spawned processes (:mod:`tests.support.exports`), submitted in the
order the tests here run (pytest-randomly shuffles them), so the machine's two cores export at
once; each test waits for its own samples and fails with what failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tests.support import exports
from tests.unit.test_export import N_SAMPLES, samples

pytestmark = pytest.mark.slow

WAIT_S = 280  # for one sample's export; the pool works ahead, in the order the tests run
Key = tuple[str, int]


@pytest.fixture(scope="module")
def exported(request: pytest.FixtureRequest) -> Iterator[dict[Key, Future[str | None]]]:
    """(space, sample index) -> the pool's answer for it: None, or what failed."""
    order: list[Key] = []
    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue
        if item.originalname == "test_cnn3d_200_samples_export_and_match_onnx_runtime":
            order += [("cnn3d", i) for i in range(N_SAMPLES)]
        elif item.originalname == "test_swin3d_200_samples_export_and_match_onnx_runtime":
            order.append(("swin3d", item.callspec.params["index"]))
    pool = exports.pool()
    try:
        yield {
            (space, i): pool.submit(
                exports.export_and_check, samples(space, N_SAMPLES)[i].to_json()
            )
            for space, i in order
        }
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_cnn3d_200_samples_export_and_match_onnx_runtime(exported):
    failed = {i: exported["cnn3d", i].result(WAIT_S) for i in range(N_SAMPLES)}
    assert {i: why for i, why in failed.items() if why} == {}


# One test per sample: each stays far below the per-test timeout, and a failure names its sample.
@pytest.mark.parametrize("index", range(N_SAMPLES))
def test_swin3d_200_samples_export_and_match_onnx_runtime(exported, index):
    why = exported["swin3d", index].result(WAIT_S)
    assert why is None, why
