"""ArchSpec: canonical JSON, stable ids, round trips, and a torch-free import."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from hpc2edge.errors import SpecError
from hpc2edge.space import ArchSpec, RandomTrial, TrainingHParams, get_space

pytestmark = pytest.mark.unit

# Computed once from the canonical form; a change here changes every id in every store.
SWIN3D_BASELINE_ID = "5fe60dd26b4fbc7c95d43f104d5d98e0a1a88626c47ac308ed2150daadfd7232"
SWIN3D_BASELINE_CANONICAL = (
    '{"input":{"frames":16,"size":224},"params":{"depths":[2,2,6,2],"embed_dim":96,'
    '"head_hidden":[400,200],"in_chans":1,"mlp_ratio":4,"num_heads":[3,6,12,24],'
    '"patch_size":[2,4,4],"window_size":[8,7,7]},"space":"swin3d"}'
)


def test_recorded_baseline_id_and_canonical_form():
    spec = get_space("swin3d").baseline()
    assert spec.canonical_json() == SWIN3D_BASELINE_CANONICAL
    assert spec.arch_id == SWIN3D_BASELINE_ID


def test_id_is_the_same_in_a_fresh_process():
    code = (
        "from hpc2edge.space import get_space; s = get_space('cnn3d');"
        "print(get_space('swin3d').baseline().arch_id, s.sample(7).arch_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    space = get_space("cnn3d")
    assert out == [SWIN3D_BASELINE_ID, space.sample(7).arch_id]


def test_import_needs_neither_torch_nor_optuna():
    code = (
        "import sys, hpc2edge.space as s; sp = s.get_space('swin3d');"
        "sp.sample(0); sp.baseline().arch_id; sp.describe(); s.get_space('cnn3d').sample(1);"
        "print(sorted(m for m in ('torch', 'optuna', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["swin3d", "swin3d-input", "cnn3d"])
def test_json_round_trip(name):
    space = get_space(name)
    for spec in [space.baseline(), *(space.sample(seed) for seed in range(20))]:
        again = ArchSpec.from_json(spec.to_json(indent=2))
        assert again == spec and hash(again) == hash(spec)
        assert again.arch_id == spec.arch_id
        assert ArchSpec.from_dict(json.loads(spec.canonical_json())) == spec


def test_canonical_form_normalises_values():
    a = ArchSpec("x", 8, 32, {"ratio": 0.1 + 0.2, "k": [3, 5], "bn": True, "n": 4})
    b = ArchSpec("x", 8, 32, {"n": 4, "bn": True, "k": (3, 5), "ratio": 0.3})
    assert a == b and a.arch_id == b.arch_id
    assert a.canonical_json() == (
        '{"input":{"frames":8,"size":32},"params":{"bn":true,"k":[3,5],"n":4,"ratio":0.3},'
        '"space":"x"}'
    )
    # ints stay ints, booleans stay booleans: 4 and 4.0, True and 1 are different specs
    assert ArchSpec("x", 8, 32, {"n": 4.0}).arch_id != a.arch_id
    assert ArchSpec("x", 8, 32, {"n": 1}) != ArchSpec("x", 8, 32, {"n": True})


def test_spec_is_frozen_and_params_read_only():
    spec = get_space("cnn3d").baseline()
    with pytest.raises(AttributeError):
        spec.frames = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.params["channels"] = (8,)  # type: ignore[index]


def test_with_input_changes_only_the_input():
    spec = get_space("swin3d").baseline()
    small = spec.with_input(frames=8, size=32)
    assert (small.frames, small.size, small.params) == (8, 32, spec.params)
    assert small.arch_id != spec.arch_id
    assert small.with_input(16, 224) == spec


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"space": "swin3d", "input": {"frames": 16, "size": 224}}', "'params'"),
        ('{"space": "swin3d", "input": {"frames": 0, "size": 224}, "params": {}}', "frames"),
        ('{"space": "swin3d", "input": {"frames": 16}, "params": {}}', "input"),
        ('{"space": "", "input": {"frames": 16, "size": 224}, "params": {}}', "space"),
        ('{"space": "a", "input": {"frames": 1, "size": 2}, "params": {"x": {}}}', "params.x"),
        ('{"space": "a", "input": {"frames": 1, "size": 2}, "params": {"x": NaN}}', "params.x"),
        ('{"space": "a", "input": {"frames": 1, "size": 2}, "params": {}, "y": 1}', "'y'"),
    ],
)
def test_malformed_specs_raise_spec_error_naming_the_field(text, field):
    with pytest.raises(SpecError, match=field):
        ArchSpec.from_json(text)


def test_training_hparams_sit_beside_the_spec():
    space = get_space("swin3d")
    trial = RandomTrial(random.Random(3))
    spec = space.suggest(trial)
    hparams = space.suggest_training(trial)
    assert 1e-4 <= hparams.lr <= 1.0 and 0.1 <= hparams.lr_gamma <= 0.9
    assert hparams.lr_step_epochs in (10, 20, 40)
    assert "lr" not in spec.canonical_json()
    assert TrainingHParams.from_dict(hparams.to_dict()) == hparams
