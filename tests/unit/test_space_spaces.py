"""Search spaces: what they suggest, validate and describe; Optuna and seeded sampling."""

from __future__ import annotations

import json
import random

import pytest

from hpc2edge.errors import SpecError
from hpc2edge.space import ArchSpec, RandomTrial, get_space, list_spaces

pytestmark = pytest.mark.unit

N_SAMPLES = 200


@pytest.mark.parametrize("name", list_spaces())
def test_200_samples_cover_every_choice_and_validate(name):
    space = get_space(name)
    seen: dict[str, set] = {}
    rng = random.Random(0)
    for _ in range(N_SAMPLES):
        trial = RandomTrial(rng)
        spec = space.suggest(trial)
        assert space.validate(spec) is spec
        for pname, value in trial.params.items():
            seen.setdefault(pname, set()).add(value)
    described = space.describe()["parameters"]
    assert set(seen) == set(described)
    for pname, info in described.items():
        assert seen[pname] == set(info["choices"]), pname


@pytest.mark.parametrize("name", list_spaces())
def test_sampling_is_deterministic_per_seed(name):
    space = get_space(name)
    assert [space.sample(s) for s in range(10)] == [space.sample(s) for s in range(10)]
    assert len({space.sample(s).arch_id for s in range(50)}) > 40


@pytest.mark.parametrize("name", list_spaces())
def test_optuna_trials_give_the_same_specs_as_fixed_params(name):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        spec = space.suggest(trial)
        space.validate(spec)
        assert space.suggest(optuna.trial.FixedTrial(trial.params)) == spec
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", list_spaces())
def test_baseline_validates_and_describe_is_json(name):
    space = get_space(name)
    space.validate(space.baseline())
    info = json.loads(json.dumps(space.describe()))
    assert info["name"] == name and info["family"] == space.family
    assert ArchSpec.from_dict(info["baseline"]) == space.baseline()


def test_swin3d_is_the_papers_space():
    space = get_space("swin3d")
    info = space.describe()
    assert info["n_architectures"] == 124_416  # docs/paper.md: ~124k
    assert info["fixed"]["window_size"] == [8, 7, 7]
    assert info["input"] == {"frames": 16, "size": 224}
    assert [info["parameters"][f"heads_{i}"]["choices"] for i in (1, 2, 3, 4)] == [
        [3],
        [3, 6],
        [3, 6, 12],
        [3, 6, 12, 24],
    ]
    for spec in (space.smallest(), space.largest()):
        space.validate(spec)
    base = space.baseline()
    assert dict(base.params) == {
        "embed_dim": 96,
        "depths": (2, 2, 6, 2),
        "num_heads": (3, 6, 12, 24),
        "patch_size": (2, 4, 4),
        "window_size": (8, 7, 7),
        "mlp_ratio": 4,
        "in_chans": 1,
        "head_hidden": (400, 200),
    }
    assert (base.frames, base.size) == (16, 224)


def test_swin3d_input_extension_searches_input_and_shares_ids():
    plain, extended = get_space("swin3d"), get_space("swin3d-input")
    assert extended.describe()["n_architectures"] == 124_416 * 9
    assert {extended.sample(s).size for s in range(60)} == {41, 112, 224}
    assert {extended.sample(s).frames for s in range(60)} == {8, 16, 32}
    # the same network at the same input is the same spec in both spaces
    assert extended.validate(plain.baseline()).arch_id == plain.baseline().arch_id
    with pytest.raises(SpecError, match=r"input\.size"):
        plain.validate(plain.sample(0).with_input(size=112))


def test_cnn3d_baseline_is_the_published_shape():
    base = get_space("cnn3d").baseline()
    assert (base.frames, base.size) == (32, 41)
    assert base.params["channels"] == (64, 128)
    assert base.params["kernel_t"] == base.params["kernel_s"] == (5, 5)
    assert base.params["head_hidden"] == (256, 128)


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("swin3d", {"embed_dim": 32}, "params.embed_dim"),
        ("swin3d", {"num_heads": (3, 6, 24, 24)}, r"params.num_heads\[2\]"),
        ("swin3d", {"depths": (1, 2, 3, 4)}, r"params.depths\[2\]"),
        ("swin3d", {"depths": (1, 2, 4)}, "params.depths"),
        ("swin3d", {"window_size": (8, 8, 8)}, "params.window_size"),
        ("swin3d", {"mlp_ratio": True}, "params.mlp_ratio"),
        ("swin3d", {"dropout": 0.1}, "params.dropout"),
        ("cnn3d", {"activation": "tanh"}, "params.activation"),
        ("cnn3d", {"channels": (8, 16, 32)}, "params.kernel_t"),
        ("cnn3d", {"kernel_s": (4, 5)}, r"params.kernel_s\[0\]"),
        ("cnn3d", {"head_hidden": (256, 256)}, "params.head_hidden"),
        ("cnn3d", {"batch_norm": 1}, "params.batch_norm"),
    ],
)
def test_validate_names_the_bad_field(name, change, field):
    space = get_space(name)
    base = space.sample(0) if name == "swin3d" else space.baseline()  # 2 blocks
    spec = ArchSpec(base.space, base.frames, base.size, {**base.params, **change})
    with pytest.raises(SpecError, match=field):
        space.validate(spec)


def test_validate_rejects_another_family_and_get_space_unknown():
    with pytest.raises(SpecError, match="space"):
        get_space("swin3d").validate(get_space("cnn3d").baseline())
    with pytest.raises(SpecError, match="unknown search space 'resnet'"):
        get_space("resnet")
