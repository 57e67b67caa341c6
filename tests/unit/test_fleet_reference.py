"""The reference model every unit measures, the time-scale drill knob, and their settings."""

from __future__ import annotations

import hashlib
import math
import statistics

import pytest

from hpc2edge.config import load_settings
from hpc2edge.config.settings import EdgeSettings, Settings
from hpc2edge.errors import ConfigError
from hpc2edge.latency import reference
from hpc2edge.latency.backends.table import TableBackend
from hpc2edge.latency.protocol import Protocol
from hpc2edge.testing.latency import contract_model, contract_records

pytestmark = pytest.mark.unit

COMPUTE_MS = tuple(1.0 + 0.01 * (i % 7) for i in range(64))
END_TO_END_MS = tuple(1.3 + 0.01 * (i % 5) for i in range(64))


PINNED = "395b7bb821ca41b9467e8cbd06458351ab967af8549e14680dbec024686e0bad"


def recorded() -> TableBackend:
    return TableBackend([reference.table_record(COMPUTE_MS, END_TO_END_MS), *contract_records()])


def test_the_shipped_model_is_what_onnx_helper_builds():
    pytest.importorskip("onnx")
    assert reference.build_model() == reference.MODEL
    # Pinned: recordings of the reference (tables, stored checks) are keyed by this hash.
    assert hashlib.sha256(reference.MODEL).hexdigest() == reference.MODEL_SHA256 == PINNED


def test_onnx_runtime_runs_the_shipped_model_without_onnx():
    import numpy as np

    from hpc2edge.latency.backends.onnxruntime import model_input_shape

    pytest.importorskip("onnxruntime")
    import onnxruntime

    assert model_input_shape(reference.MODEL) == list(reference.INPUT_SHAPE)
    session = onnxruntime.InferenceSession(reference.MODEL, providers=["CPUExecutionProvider"])
    x = np.ones((3, *reference.INPUT_SHAPE), dtype=np.float32)
    (out,) = session.run(None, {"frames": x})
    assert out.shape == (3, reference.OUTPUTS) and np.isfinite(out).all()


def test_a_check_on_a_recorded_table_is_the_recorded_compute_median():
    check = reference.check(recorded(), clock=lambda: 123.0)
    assert check.error is None and check.at_unix_s == 123.0
    assert check.p50_ms == pytest.approx(statistics.median(COMPUTE_MS), rel=0.01)
    assert check.n >= reference.PROTOCOL.min_runs and check.throttled is False


def test_a_table_without_a_recording_of_the_reference_reports_the_error_not_raises():
    check = reference.check(TableBackend(contract_records()))
    assert check.p50_ms is None
    assert "MeasurementError" in check.error and reference.MODEL_SHA256[:12] in check.error


def test_a_check_on_onnx_runtime_gives_a_positive_median():
    pytest.importorskip("onnxruntime")
    from hpc2edge.latency import get_backend

    quick = Protocol(
        warmup_min_s=0.0, warmup_min_runs=1, min_runs=5, min_time_s=0.0, max_time_s=1.0
    )
    check = reference.check(get_backend("onnxruntime", intra_op_threads=1), protocol=quick)
    assert check.error is None and check.p50_ms > 0 and check.n >= 5


def test_time_scale_multiplies_every_sample_of_every_series_and_nothing_else():
    plain, scaled = recorded(), reference.time_scaled(recorded(), 2.0)
    prepared = plain.prepare(reference.MODEL, "fp32", reference.INPUT_SHAPE)
    got = scaled.measure(
        scaled.prepare(reference.MODEL, "fp32", reference.INPUT_SHAPE), 1, reference.PROTOCOL
    )
    want = plain.measure(prepared, 1, reference.PROTOCOL)
    for series in ("compute", "end_to_end"):
        a, b = getattr(want, series).stats, getattr(got, series).stats
        assert b.samples_ms == tuple(2.0 * s for s in a.samples_ms)
        assert b.median_ms == pytest.approx(2.0 * a.median_ms) and b.cv == pytest.approx(a.cv)
    assert scaled.name == "table" and scaled.precisions == plain.precisions
    # A drilled unit's runtime differs by its scale alone: its rows never stand in for real ones.
    assert scaled.fingerprint() == {**plain.fingerprint(), "time_scale": scaled.factor}
    check = reference.check(scaled)
    assert check.p50_ms == pytest.approx(2.0 * statistics.median(COMPUTE_MS), rel=0.01)


def test_time_scale_one_is_the_backend_itself_and_a_bad_factor_is_refused():
    backend = recorded()
    assert reference.time_scaled(backend, 1.0) is backend
    for factor in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="time scale"):
            reference.TimeScaled(backend, factor)


def test_time_scale_keeps_the_output_check_and_the_refusals_of_the_backend():
    from hpc2edge.errors import MeasurementError
    from hpc2edge.testing.latency import contract_reference

    scaled = reference.time_scaled(recorded(), 3.0)
    prepared = scaled.prepare(contract_model().onnx_bytes, "fp32", (1, 4, 8, 8), (1, 2))
    assert scaled.check_outputs(prepared, contract_reference()).ok
    with pytest.raises(MeasurementError):
        scaled.prepare(b"not a recorded model", "fp32", (1, 4, 8, 8))


def test_the_software_stack_summary_keeps_what_explains_a_difference_in_speed():
    jetson = {
        "device_model": "NVIDIA Jetson AGX Orin",
        "l4t_release": "36.3.0",
        "jetpack_version": "6.0+b106",
        "nvpmodel": {"name": "MAXN", "id": 0},
        "jetson_clocks": {"active": True},
        "versions": {"onnxruntime": None, "tensorrt": "10.3.0", "pycuda": "2024.1"},
    }
    trt = {"backend": "tensorrt", "tensorrt_version": "10.3.0", "cuda_driver_version": "12.6"}
    assert reference.software_stack(trt, jetson) == {
        "backend": "tensorrt",
        "tensorrt": "10.3.0",
        "cuda_driver": "12.6",
        "jetpack": "6.0+b106",
        "l4t": "36.3.0",
        "power_mode": "MAXN",
        "clocks_pinned": True,
        "device": "NVIDIA Jetson AGX Orin",
    }
    assert reference.software_stack({"backend": "table"}, {}) == {"backend": "table"}


# --- settings -----------------------------------------------------------------------------------


def test_the_defaults_check_every_50_measurements_at_real_speed():
    edge = EdgeSettings()
    assert edge.reference_every == 50 and edge.time_scale == 1.0
    assert Settings().problems() == []


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_a_time_scale_that_is_not_positive_and_finite_is_a_problem(value):
    problems = Settings(edge=EdgeSettings(time_scale=value)).problems()
    assert any(p.startswith("edge.time_scale:") for p in problems)


def test_a_negative_reference_interval_is_a_problem():
    problems = Settings(edge=EdgeSettings(reference_every=-1)).problems()
    assert problems == ["edge.reference_every: must be >= 0 (0: no reference checks)"]


def test_both_settings_load_from_the_environment(tmp_path):
    env = {
        "HPC2EDGE_STATE_DIR": str(tmp_path),
        "HPC2EDGE_EDGE_TIME_SCALE": "2.5",
        "HPC2EDGE_EDGE_REFERENCE_EVERY": "0",
    }
    s = load_settings(environ=env)
    assert s.edge.time_scale == 2.5 and s.edge.reference_every == 0
    with pytest.raises(ConfigError, match=r"edge\.time_scale"):
        load_settings(environ={**env, "HPC2EDGE_EDGE_TIME_SCALE": "0"})
