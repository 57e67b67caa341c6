"""The tensorrt backend module imports without TensorRT/pycuda and fails clearly when used."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from hpc2edge.errors import MeasurementError
from hpc2edge.latency import get_backend

pytestmark = pytest.mark.unit

HINT = "pip install 'hpc2edge[tensorrt]'"


@pytest.fixture
def trt_module(monkeypatch):
    """``hpc2edge.latency.backends.tensorrt`` imported afresh while ``tensorrt`` cannot be
    imported."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` -> ImportError
    monkeypatch.delitem(sys.modules, "hpc2edge.latency.backends.tensorrt", raising=False)
    return importlib.import_module("hpc2edge.latency.backends.tensorrt")


def test_module_imports_without_tensorrt(trt_module):
    assert trt_module.TensorRTBackend.name == "tensorrt"
    assert trt_module.TensorRTBackend.precisions == ("fp32", "fp16", "int8")


def test_constructing_names_what_to_install(trt_module, tmp_path):
    with pytest.raises(MeasurementError) as info:
        trt_module.TensorRTBackend(cache_dir=tmp_path)
    message = str(info.value)
    assert "TensorRT" in message and "JetPack" in message and "--system-site-packages" in message
    assert HINT in message


def test_the_registry_gives_the_same_error(trt_module, tmp_path):
    with pytest.raises(MeasurementError, match="JetPack"):
        get_backend("tensorrt", cache_dir=tmp_path)


def test_missing_pycuda_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    from hpc2edge.latency.backends.tensorrt import TensorRTBackend

    with pytest.raises(MeasurementError, match="needs pycuda") as info:
        TensorRTBackend(cache_dir=tmp_path)
    assert HINT in str(info.value)


def test_cache_files_are_replaced_whole(tmp_path):
    from hpc2edge.latency.backends.tensorrt import _write_cache_file

    target = tmp_path / "engines" / "k.plan"  # the folder does not exist yet
    _write_cache_file(target, b"one")
    _write_cache_file(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["k.plan"]  # no temporary left behind
