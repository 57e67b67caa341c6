"""ONNX export: deterministic bytes, opset 17, dynamic batch, no custom ops, ORT == PyTorch."""

from __future__ import annotations

import functools
import hashlib
import random
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hpc2edge.errors import ExportError, SpecError  # noqa: E402
from hpc2edge.models.export import build_eval_model, check_onnx, export_onnx  # noqa: E402
from hpc2edge.space import ArchSpec, get_space  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Small inputs gain nothing from threads, and on a shared 2-core CI box two test processes
    # with 2 OpenMP threads each oversubscribe the cores and run ~5x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL_INPUT = {"swin3d": (20, 36), "cnn3d": (8, 25)}
N_SAMPLES = 200  # exported and checked against ONNX Runtime in test_export_slow.py


def small(spec: ArchSpec) -> ArchSpec:
    return spec.with_input(*SMALL_INPUT[spec.space])


@functools.cache
def samples(name: str, n: int) -> list[ArchSpec]:
    space = get_space(name)
    rng = random.Random(0)  # the same specs test_models_build runs forward
    return [small(space.sample(rng)) for _ in range(n)]


def test_model_is_opset_17_with_a_dynamic_batch_and_standard_ops():
    spec = small(get_space("swin3d").largest())
    model = onnx.load_from_string(export_onnx(spec, seed=0))
    assert {o.domain for o in model.opset_import} == {""}
    assert model.opset_import[0].version == 17
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("frames", "speed_power")
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "batch",
        1,
        20,
        36,
        36,
    ]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 2]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.parametrize("name", ["swin3d", "cnn3d"])
def test_bytes_are_identical_for_the_same_spec_and_seed(name):
    spec = small(get_space(name).baseline())
    first = export_onnx(spec, seed=3)
    assert export_onnx(spec, seed=3, check=False) == first
    assert export_onnx(spec, seed=4, check=False) != first


def test_bytes_are_identical_in_a_fresh_process():
    spec = small(get_space("swin3d").smallest())
    code = (
        "import hashlib, sys; from hpc2edge.space import ArchSpec;"
        "from hpc2edge.models.export import export_onnx;"
        "spec = ArchSpec.from_json(sys.stdin.read());"
        "print(hashlib.sha256(export_onnx(spec, seed=1, check=False)).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=spec.to_json(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == hashlib.sha256(export_onnx(spec, seed=1)).hexdigest()


def test_export_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    export_onnx(small(get_space("cnn3d").baseline()), seed=0, check=False)
    assert torch.equal(torch.rand(3), expected)


def test_a_disagreeing_model_raises_export_error_with_the_error():
    spec = small(get_space("cnn3d").baseline())
    data = export_onnx(spec, seed=0)
    assert check_onnx(data, spec, build_eval_model(spec, 0)).max_abs_error <= 1e-4
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* > 0.0001"):
        check_onnx(data, spec, build_eval_model(spec, 1))
    with pytest.raises(ExportError, match="checker"):
        check_onnx(b"not a model", spec, build_eval_model(spec, 0))


def test_an_unbuildable_spec_raises_spec_error():
    with pytest.raises(SpecError):
        export_onnx(ArchSpec("swin3d", 8, 32, {"embed_dim": 24}))


def test_odd_crop_size_exports_with_padding_and_shifts():
    # 41 x 41 with patch 2: grids 21 -> 11 -> 6 -> 3; windows padded, merges padded, shifted.
    spec = get_space("swin3d").largest().with_input(frames=8, size=41)
    export_onnx(spec, seed=0)
