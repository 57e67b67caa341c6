"""Telemetry readers against a fake sysfs/procfs tree, and the throttle rule on known snapshots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hpc2edge.latency import telemetry

pytestmark = pytest.mark.unit


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def jetson(tmp_path: Path) -> Path:
    """A Jetson-like tree: thermal zones, pinned CPU and GPU clocks, L4T release, model."""
    root = tmp_path / "root"
    zones = {
        0: ("CPU-therm", "45500"),
        1: ("GPU-therm", "47000"),
        2: ("PMIC-Die", "100000"),
        3: ("bogus", "-256000"),
        4: ("garbled", "n/a"),
    }
    for i, (kind, temp) in zones.items():
        _write(root, f"sys/class/thermal/thermal_zone{i}/type", kind + "\n")
        _write(root, f"sys/class/thermal/thermal_zone{i}/temp", temp + "\n")
    _write(root, "sys/class/thermal/thermal_zone5/type", "no-temp-file")
    (root / "sys/class/thermal/thermal_zone6/temp").mkdir(parents=True)  # unreadable: a folder
    for cpu in (0, 1):
        d = f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        _write(root, f"{d}/scaling_cur_freq", "2201600")
        _write(root, f"{d}/scaling_min_freq", "2201600")
        _write(root, f"{d}/scaling_max_freq", "2201600")
    gpu = "sys/devices/gpu.0/devfreq/17000000.gv11b"
    _write(root, f"{gpu}/cur_freq", "1377000000")
    _write(root, f"{gpu}/min_freq", "1377000000")
    _write(root, f"{gpu}/max_freq", "1377000000")
    _write(root, "proc/device-tree/model", "NVIDIA Jetson AGX Xavier Developer Kit\x00")
    _write(
        root,
        "etc/nv_tegra_release",
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n",
    )
    _write(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: ARMv8 Processor rev 0 (v8l)\n")
    _write(root, "proc/meminfo", "MemTotal:       32210000 kB\nMemFree: 1 kB\n")
    _write(root, "proc/loadavg", "0.50 0.40 0.30 1/200 1234\n")
    return root


def test_real_host_results_are_json_and_typed():
    fp = telemetry.fingerprint()
    snap = telemetry.snapshot()
    json.dumps(fp)
    json.dumps(snap)
    assert fp["cpu_count"] is None or fp["cpu_count"] >= 1
    temp = telemetry.max_temperature_c()
    assert temp is None or (isinstance(temp, float) and math.isfinite(temp))
    assert telemetry.throttled(snap, snap)["throttled"] in (True, False)


def test_fingerprint_of_a_jetson_tree(jetson):
    fp = telemetry.fingerprint(jetson)
    json.dumps(fp)
    assert fp["device_model"] == "NVIDIA Jetson AGX Xavier Developer Kit"
    assert fp["l4t_release"] == "35.4.1"
    assert fp["cpu_model"] == "ARMv8 Processor rev 0 (v8l)"
    assert fp["memory_total_bytes"] == 32210000 * 1024
    assert fp["jetson_clocks"] == {"cpu_pinned": True, "gpu_pinned": True, "active": True}
    assert fp["nvpmodel"] is None  # commands are not run against a fake root


def test_snapshot_of_a_jetson_tree(jetson):
    snap = telemetry.snapshot(jetson)
    json.dumps(snap)
    # PMIC-Die (constant 100 °C), out-of-range, garbled and unreadable zones are left out.
    assert snap["temperatures_c"] == {"CPU-therm": 45.5, "GPU-therm": 47.0}
    assert snap["cpu_freq_mhz"] == {"cpu0": 2201.6, "cpu1": 2201.6}
    assert snap["gpu_freq_mhz"] == 1377.0
    assert snap["load_avg"] == [0.5, 0.4, 0.3]
    assert snap["nvml"] is None
    assert telemetry.max_temperature_c(jetson) == 47.0


def test_unpinned_clocks_and_orin_style_devfreq(tmp_path):
    root = tmp_path / "orin"
    d = "sys/devices/system/cpu/cpu0/cpufreq"
    _write(root, f"{d}/scaling_cur_freq", "729600")
    _write(root, f"{d}/scaling_min_freq", "115200")
    _write(root, f"{d}/scaling_max_freq", "2201600")
    gpu = "sys/class/devfreq/17000000.ga10b"
    _write(root, f"{gpu}/cur_freq", "306000000")
    _write(root, f"{gpu}/min_freq", "306000000")
    _write(root, f"{gpu}/max_freq", "1300500000")
    _write(root, "sys/class/devfreq/3d00000.host1x/cur_freq", "1")  # not a GPU
    assert telemetry.snapshot(root)["gpu_freq_mhz"] == 306.0
    clocks = telemetry.fingerprint(root)["jetson_clocks"]
    assert clocks == {"cpu_pinned": False, "gpu_pinned": False, "active": False}


def test_an_empty_tree_gives_nothing_and_does_not_raise(tmp_path):
    fp = telemetry.fingerprint(tmp_path)
    snap = telemetry.snapshot(tmp_path)
    assert fp["device_model"] is None and fp["l4t_release"] is None
    assert fp["jetson_clocks"] is None and fp["memory_total_bytes"] is None
    assert snap["temperatures_c"] == {} and snap["cpu_freq_mhz"] == {}
    assert snap["gpu_freq_mhz"] is None and snap["load_avg"] is None
    assert telemetry.max_temperature_c(tmp_path) is None


def test_nvpmodel_output_is_parsed(monkeypatch):
    out = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n"
    monkeypatch.setattr(telemetry, "_run", lambda args, timeout_s=5.0: out)
    assert telemetry._nvpmodel(telemetry.ROOT) == {"name": "MAXN", "id": 0}
    monkeypatch.setattr(telemetry, "_run", lambda args, timeout_s=5.0: None)
    assert telemetry._nvpmodel(telemetry.ROOT) is None


def test_missing_commands_are_none():
    assert telemetry._run(["hpc2edge-no-such-command", "-q"]) is None


# --- throttled --------------------------------------------------------------------------------


def snap(cpu=2200.0, gpu=1300.0, sm=None, reasons=(), temp=50.0):
    nvml = (
        None
        if sm is None
        else {"sm_clock_mhz": sm, "throttle_reasons": list(reasons), "temperature_c": temp}
    )
    return {
        "temperatures_c": {"CPU-therm": temp},
        "cpu_freq_mhz": {"cpu0": cpu, "cpu1": cpu / 2},
        "gpu_freq_mhz": gpu,
        "nvml": nvml,
    }


def test_steady_clocks_are_not_throttling():
    result = telemetry.throttled(snap(), snap(cpu=2100.0, gpu=1250.0))  # within 10 %
    assert result == {"throttled": False, "reasons": []}


def test_cpu_clock_drop_is_throttling():
    result = telemetry.throttled(snap(), snap(cpu=1500.0))
    assert result["throttled"]
    assert result["reasons"] == ["cpu clock fell from 2200 to 1500 MHz"]


def test_gpu_clock_drop_is_throttling():
    result = telemetry.throttled(snap(), snap(gpu=900.0))
    assert result["reasons"] == ["gpu clock fell from 1300 to 900 MHz"]


def test_nvml_clock_drop_and_reasons():
    result = telemetry.throttled(snap(sm=1980.0), snap(sm=1500.0, reasons=["sw_thermal_slowdown"]))
    assert result["throttled"]
    assert "nvml sm clock fell from 1980 to 1500 MHz" in result["reasons"]
    assert "nvml: sw_thermal_slowdown" in result["reasons"]


def test_hot_device_is_reported():
    result = telemetry.throttled(snap(), snap(temp=90.5))
    assert result["reasons"] == ["90.5 °C after (limit 85 °C)"]
    assert not telemetry.throttled(snap(), snap(temp=90.5), hot_c=95.0)["throttled"]


def test_missing_or_foreign_fields_are_tolerated():
    assert telemetry.throttled({}, {}) == {"throttled": False, "reasons": []}
    partial = {"cpu_freq_mhz": {}, "gpu_freq_mhz": None, "nvml": None, "temperatures_c": None}
    assert not telemetry.throttled(partial, snap())["throttled"]
    assert not telemetry.throttled(snap(), {"gpu_freq_mhz": "fast"})["throttled"]
