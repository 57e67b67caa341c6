"""The device's identity and state, recorded with every measurement (docs/measurement.md, "Jetson:
power mode, clocks and temperature").

A Jetson's latency depends on its power mode (``nvpmodel``), on whether ``jetson_clocks`` pinned
the clocks, and on its temperature: a hot device throttles and ranks architectures differently
than a cold one. So each measurement carries :func:`fingerprint` (what the device is and how it is
configured) and a :func:`snapshot` before and after (temperatures, clocks, load), and
:func:`throttled` says whether the clocks fell or the device ran hot in between.

Everything here is best effort and plain: files under ``/sys``, ``/proc`` and ``/etc``, two
optional commands with a timeout (``nvpmodel -q``, ``dpkg-query``), and NVML through ``pynvml``
on desktop/server GPUs when it is importable. A reader that finds no file, no permission or an
odd value returns ``None`` (or leaves the entry out); nothing here raises or needs root. Every
function takes ``root`` so tests point it at a fake tree; with a ``root`` other than ``/`` the
sources that ignore it (commands, NVML, psutil) are skipped.

`jtop` (jetson-stats) reads the same sources with more detail (power rails, EMC clock); it is
not required, and could be added as one more optional reader.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hpc2edge.util.versions import package_version

ROOT = Path("/")
#: A device at or above this temperature is reported as (about to be) throttling.
HOT_C = 85.0
#: A clock that fell by more than this fraction between snapshots counts as throttling.
CLOCK_DROP = 0.10
#: Zones whose value is not a real temperature (Jetson's PMIC-Die reads a constant 100 °C).
_IGNORED_ZONES = re.compile(r"pmic", re.IGNORECASE)
_GPU_DEVFREQ = re.compile(r"gpu|gv11b|gp10b|ga10b|gm20b", re.IGNORECASE)
#: NVML clocks-event reasons; GPU idle, application clocks and sync boost are not throttling.
_NVML_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _run(args: list[str], timeout_s: float = 5.0) -> str | None:
    """A command's stdout, or None (not on PATH, failed, timed out)."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


# --- identity ---------------------------------------------------------------------------------


def cpu_model(root: Path = ROOT) -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (x86 and Arm spellings), or None."""
    text = _read(root / "proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return None


def _memory_total_bytes(root: Path) -> int | None:
    if root == ROOT:
        with contextlib.suppress(Exception):
            import psutil

            return int(psutil.virtual_memory().total)
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read(root / "proc/meminfo") or "", re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _nvml(fn: Any) -> Any:
    """Call ``fn(pynvml, handle of GPU 0)`` between init and shutdown; None on any failure."""
    try:
        import pynvml
    except Exception:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        return fn(pynvml, pynvml.nvmlDeviceGetHandleByIndex(0))
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _device_model(root: Path) -> str | None:
    model = _read(root / "proc/device-tree/model")
    if model:
        return model.rstrip("\x00").strip() or None
    if root != ROOT:
        return None
    name = _nvml(lambda nv, h: nv.nvmlDeviceGetName(h))
    return name.decode() if isinstance(name, bytes) else name


def _l4t_release(root: Path) -> str | None:
    """``/etc/nv_tegra_release``: '# R35 (release), REVISION: 4.1, ...' -> '35.4.1'."""
    text = _read(root / "etc/nv_tegra_release")
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _nvpmodel(root: Path) -> dict[str, Any] | None:
    """``nvpmodel -q``: 'NV Power Mode: MAXN' then the mode id on a line of its own."""
    out = _run(["nvpmodel", "-q"]) if root == ROOT else None
    if not out:
        return None
    name = re.search(r"NV Power Mode:\s*(.+)", out)
    mode = re.search(r"^\s*(\d+)\s*$", out, re.MULTILINE)
    return {
        "name": name.group(1).strip() if name else None,
        "id": int(mode.group(1)) if mode else None,
    }


def _gpu_devfreq_dirs(root: Path) -> list[Path]:
    dirs = {p.parent for p in root.glob("sys/devices/gpu.0/devfreq/*/cur_freq")}
    dirs |= {p.parent for p in root.glob("sys/devices/platform/*gpu*/devfreq/*/cur_freq")}
    dirs |= {
        p.parent
        for p in root.glob("sys/class/devfreq/*/cur_freq")
        if _GPU_DEVFREQ.search(p.parent.name)
    }
    # /sys/class/devfreq holds links to the same devices: keep one path per real directory.
    unique: dict[str, Path] = {}
    for d in sorted(dirs):
        with contextlib.suppress(OSError):
            unique.setdefault(str(d.resolve()), d)
    return list(unique.values())


def _jetson_clocks(root: Path) -> dict[str, Any] | None:
    """Whether clocks look pinned (``jetson_clocks`` sets every min frequency to its max).

    ``jetson_clocks --show`` needs root; the sysfs min/max files do not.
    """
    cpu_pinned = []
    for d in sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq")):
        low, high = _read_int(d / "scaling_min_freq"), _read_int(d / "scaling_max_freq")
        if low is not None and high is not None:
            cpu_pinned.append(low == high)
    gpu_pinned = []
    for d in _gpu_devfreq_dirs(root):
        low, high = _read_int(d / "min_freq"), _read_int(d / "max_freq")
        if low is not None and high is not None:
            gpu_pinned.append(low == high)
    if not cpu_pinned and not gpu_pinned:
        return None
    return {
        "cpu_pinned": all(cpu_pinned) if cpu_pinned else None,
        "gpu_pinned": all(gpu_pinned) if gpu_pinned else None,
        "active": all(cpu_pinned + gpu_pinned),
    }


def fingerprint(root: Path = ROOT) -> dict[str, Any]:
    """What the device is and how it is configured; JSON-able, never raises."""
    l4t = _l4t_release(root)
    jetpack = None
    if l4t is not None and root == ROOT:
        jetpack = (_run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]) or "").strip()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(root),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": _memory_total_bytes(root),
        "device_model": _device_model(root),
        "l4t_release": l4t,
        "jetpack_version": jetpack or None,
        "nvpmodel": _nvpmodel(root),
        "jetson_clocks": _jetson_clocks(root),
        "versions": {
            "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
            "tensorrt": package_version("tensorrt"),
            "pycuda": package_version("pycuda"),
        },
    }


# --- state ------------------------------------------------------------------------------------


def _temperatures_c(root: Path) -> dict[str, float]:
    temps: dict[str, float] = {}
    for zone in sorted(root.glob("sys/class/thermal/thermal_zone*")):
        kind = _read(zone / "type") or zone.name
        milli = _read_int(zone / "temp")
        if milli is None or _IGNORED_ZONES.search(kind):
            continue
        celsius = milli / 1000.0
        if -40.0 < celsius < 150.0:  # outside: a disabled or fake sensor
            temps[kind if kind not in temps else f"{kind}/{zone.name}"] = celsius
    return temps


def _cpu_freqs_mhz(root: Path) -> dict[str, float]:
    freqs = {}
    for path in sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        khz = _read_int(path)
        if khz is not None:
            freqs[path.parent.parent.name] = khz / 1000.0
    return freqs


def _gpu_freq_mhz(root: Path) -> float | None:
    for d in _gpu_devfreq_dirs(root):
        hz = _read_int(d / "cur_freq")
        if hz is not None:
            return hz / 1e6
    return None


def _nvml_state() -> dict[str, Any] | None:
    def read(nv: Any, h: Any) -> dict[str, Any]:
        reasons = 0
        for getter in (
            "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetCurrentClocksThrottleReasons",
        ):
            if hasattr(nv, getter):
                with contextlib.suppress(Exception):
                    reasons = int(getattr(nv, getter)(h))
                    break
        return {
            "temperature_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            "sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            "mem_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
            "throttle_reasons": [name for bit, name in _NVML_REASONS.items() if reasons & bit],
        }

    result: dict[str, Any] | None = _nvml(read)
    return result


def snapshot(root: Path = ROOT) -> dict[str, Any]:
    """Temperatures (°C), clocks (MHz), NVML state and load now; JSON-able, never raises."""
    load = None
    with contextlib.suppress(OSError, AttributeError):
        load = list(os.getloadavg()) if root == ROOT else None
    if load is None:
        fields = (_read(root / "proc/loadavg") or "").split()[:3]
        with contextlib.suppress(ValueError):
            load = [float(f) for f in fields] or None
    return {
        "timestamp_unix_s": time.time(),
        "temperatures_c": _temperatures_c(root),
        "cpu_freq_mhz": _cpu_freqs_mhz(root),
        "gpu_freq_mhz": _gpu_freq_mhz(root),
        "nvml": _nvml_state() if root == ROOT else None,
        "load_avg": load,
    }


def _max_temp(snap: dict[str, Any]) -> float | None:
    values = [float(v) for v in (snap.get("temperatures_c") or {}).values()]
    nvml = snap.get("nvml") or {}
    if nvml.get("temperature_c") is not None:
        values.append(float(nvml["temperature_c"]))
    return max(values) if values else None


def max_temperature_c(root: Path = ROOT) -> float | None:
    """The hottest sensor now (thermal zones, NVML), or None where there is no telemetry."""
    snap: dict[str, Any] = {"temperatures_c": _temperatures_c(root)}
    if root == ROOT:
        snap["nvml"] = _nvml_state() or {}
    return _max_temp(snap)


def throttled(
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    hot_c: float = HOT_C,
    clock_drop: float = CLOCK_DROP,
) -> dict[str, Any]:
    """Did the device throttle (or run hot) between two :func:`snapshot` results?

    Reasons: the fastest CPU core's clock, the Jetson GPU clock or the NVML SM clock fell by more
    than ``clock_drop``; NVML reports a power or thermal slowdown; a sensor reached ``hot_c``.
    Clocks are comparable only when pinned (``jetson_clocks``); with a load-following governor a
    drop can also mean the device went idle, which the reason's numbers let a reader judge.
    """
    reasons: list[str] = []

    def drop(name: str, was: Any, now: Any) -> None:
        numbers = isinstance(was, (int, float)) and isinstance(now, (int, float))
        if numbers and was > 0 and now < (1.0 - clock_drop) * was:
            reasons.append(f"{name} clock fell from {was:g} to {now:g} MHz")

    cpu_before = (before.get("cpu_freq_mhz") or {}).values()
    cpu_after = (after.get("cpu_freq_mhz") or {}).values()
    drop("cpu", max(cpu_before, default=None), max(cpu_after, default=None))
    drop("gpu", before.get("gpu_freq_mhz"), after.get("gpu_freq_mhz"))
    nvml_before, nvml_after = before.get("nvml") or {}, after.get("nvml") or {}
    drop("nvml sm", nvml_before.get("sm_clock_mhz"), nvml_after.get("sm_clock_mhz"))
    for reason in nvml_after.get("throttle_reasons") or []:
        reasons.append(f"nvml: {reason}")
    for label, snap in (("before", before), ("after", after)):
        temp = _max_temp(snap)
        if temp is not None and temp >= hot_c:
            reasons.append(f"{temp:g} °C {label} (limit {hot_c:g} °C)")
    return {"throttled": bool(reasons), "reasons": reasons}
