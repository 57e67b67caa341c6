"""`hpc2edge space show|sample` and `hpc2edge export`, through click's test runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hpc2edge.cli.space import export_cmd, space_group
from hpc2edge.errors import SpecError
from hpc2edge.space import ArchSpec, get_space

pytestmark = pytest.mark.unit


def invoke(command, args):
    return CliRunner().invoke(command, args, catch_exceptions=True)


def test_show_lists_parameters_and_fixed_values():
    result = invoke(space_group, ["show", "swin3d"])
    assert result.exit_code == 0, result.output
    assert "124,416 architectures" in result.output
    assert "heads_4" in result.output and "[3, 6, 12, 24]" in result.output
    assert "window_size" in result.output
    as_json = json.loads(invoke(space_group, ["show", "cnn3d", "--json"]).output)
    assert as_json["name"] == "cnn3d"


def test_sample_prints_seeded_specs_ids_params_and_flops():
    pytest.importorskip("torch")
    args = ["sample", "cnn3d", "--n", "3", "--seed", "0", "--json"]
    rows = json.loads(invoke(space_group, args).output)
    assert rows == json.loads(invoke(space_group, args).output)  # deterministic per seed
    assert len(rows) == 3
    for row in rows:
        spec = ArchSpec.from_dict(row["spec"])
        assert row["arch_id"] == spec.arch_id
        assert row["params"] > 0 and row["flops"] > 0
    text = invoke(space_group, ["sample", "swin3d", "--n", "2"]).output.splitlines()
    assert len(text) == 2 and "params" in text[0] and "FLOPs" in text[0]


def test_unknown_space_is_a_spec_error():
    for command, args in [
        (space_group, ["show", "resnet"]),
        (space_group, ["sample", "resnet"]),
        (export_cmd, ["--space", "resnet", "--baseline", "--out", "m.onnx"]),
    ]:
        result = invoke(command, args)
        assert isinstance(result.exception, SpecError), result.output
        assert result.exception.exit_code == 2
        assert "unknown search space 'resnet'" in str(result.exception)


def test_export_baseline_writes_a_checked_model(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = invoke(export_cmd, ["--space", "cnn3d", "--baseline", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1_000_000 and "checked against PyTorch" in result.output


def test_export_spec_file(tmp_path):
    pytest.importorskip("onnxruntime")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(get_space("cnn3d").sample(0).to_json())
    out = tmp_path / "m.onnx"
    result = invoke(export_cmd, ["--space", "cnn3d", "--spec", str(spec_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"space": "cnn3d", "input": {"frames": 8, "size": 41}, "params": {}}', "params."),
        (get_space("swin3d").baseline().to_json(), "not one of space 'cnn3d'"),
    ],
)
def test_malformed_spec_file_is_a_spec_error(tmp_path, content, message):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(content)
    args = ["--space", "cnn3d", "--spec", str(spec_file), "--out", str(tmp_path / "m.onnx")]
    result = invoke(export_cmd, args)
    assert isinstance(result.exception, SpecError)
    assert message in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()


def test_export_needs_exactly_one_source(tmp_path):
    result = invoke(export_cmd, ["--space", "cnn3d", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "exactly one of --spec" in result.output
