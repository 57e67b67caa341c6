"""The 200 seeded swin3d samples built and run forward (~30 s): ``slow``, not ``unit``."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from tests.unit.test_models_build import forward_200_samples, one_torch_thread  # noqa: F401

pytestmark = pytest.mark.slow


def test_200_swin3d_samples_build_and_run_forward():
    forward_200_samples("swin3d")
