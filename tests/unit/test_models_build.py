"""Swin3D and Cnn3D: parameter counts, window geometry, masks, forward on sampled specs."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from hpc2edge.errors import SpecError  # noqa: E402
from hpc2edge.models import (  # noqa: E402
    build_model,
    example_input,
    flops,
    input_shape,
    params,
)
from hpc2edge.models.swin3d import (  # noqa: E402
    Swin3DConfig,
    relative_position_index,
    shift_region_labels,
    stage_grids,
    window_partition,
    window_reverse,
)
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


# Small inputs keep 200 forwards fast and still exercise padding, clamping and shifting:
# swin3d T=20 -> 10 (patch 2, > window 8: padded to 16, shifted) or 5 (patch 4: clamped);
# S=36 -> 18 or 9 (> window 7: padded, shifted), then merged down to 2-3 (clamped).
SMALL_INPUT = {"swin3d": (20, 36), "cnn3d": (8, 25)}


def small(spec: ArchSpec) -> ArchSpec:
    return spec.with_input(*SMALL_INPUT[spec.space])


def within(value: float, target: float, rel: float = 0.10) -> bool:
    return abs(value - target) <= rel * target


def test_swin3d_parameter_counts_match_the_paper():
    space = get_space("swin3d")
    counts = {k: params(getattr(space, k)()) for k in ("smallest", "largest", "baseline")}
    assert within(counts["smallest"], 0.6e6), counts  # 0.569 M
    assert within(counts["largest"], 10.5e6), counts  # 10.52 M
    assert within(counts["baseline"], 28e6), counts  # 28.23 M (Video Swin-T)


def test_params_and_flops_are_counted_from_the_built_model():
    spec = small(get_space("cnn3d").baseline())
    model = build_model(spec)
    assert params(spec) == sum(p.numel() for p in model.parameters())
    # conv1: 1->64, 5^3, over 8*25*25 voxels; 2 FLOPs per multiply-accumulate
    assert flops(spec) > 2 * 64 * 125 * 8 * 25 * 25
    base = get_space("swin3d").baseline()
    assert 50e9 < flops(base) < 200e9  # Video Swin-T at 16x224x224, 1 channel: ~87 GFLOPs


def test_window_partition_round_trip():
    x = torch.randn(2, 4, 14, 21, 3)
    windows = window_partition(x, (4, 14, 21), (2, 7, 7))
    assert windows.shape == (2 * 2 * 2 * 3, 98, 3)
    assert torch.equal(window_reverse(windows, (4, 14, 21), (2, 7, 7)), x)


def test_relative_position_index_covers_the_table():
    window = (2, 3, 3)
    index = relative_position_index(window)
    assert index.shape == (18, 18)
    assert set(index.flatten().tolist()) == set(range(3 * 5 * 5))
    assert torch.all(index.diagonal() == index[0, 0])  # zero offset: one row


def test_shift_regions_separate_tokens_that_were_not_neighbours():
    labels = shift_region_labels((1, 14, 14), (1, 7, 7), (0, 3, 3))
    assert labels.shape == (4, 49)
    assert len(set(labels[0].tolist())) == 1  # the top-left window is one region
    assert len(set(labels[3].tolist())) == 4  # the wrapped corner window holds 4
    assert len(set(shift_region_labels((1, 7, 7), (1, 7, 7), (0, 0, 0))[0].tolist())) == 1


def test_windows_clamp_and_shift_only_where_the_map_is_larger():
    spec = small(get_space("swin3d").largest())  # patch 2: grids 10x18x18 .. 10x3x3
    model = build_model(spec)
    assert stage_grids(model.config) == [(10, 18, 18), (10, 9, 9), (10, 5, 5), (10, 3, 3)]
    assert [s.window for s in model.stages] == [(8, 7, 7), (8, 7, 7), (8, 5, 5), (8, 3, 3)]
    assert [s.shift for s in model.stages] == [(4, 3, 3), (4, 3, 3), (4, 0, 0), (4, 0, 0)]


def test_batch_items_do_not_mix():
    spec = small(get_space("swin3d").largest())
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = example_input(spec, batch_size=3)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_heads_must_divide_the_stage_width():
    with pytest.raises(SpecError, match="num_heads"):
        Swin3DConfig(embed_dim=24, num_heads=(3, 6, 12, 20))
    spec = get_space("swin3d").sample(0)
    with pytest.raises(SpecError, match="missing"):
        build_model(ArchSpec("swin3d", 16, 224, {"embed_dim": 24}))
    with pytest.raises(SpecError, match="family"):
        build_model(ArchSpec("resnet", 16, 224, dict(spec.params)))


def forward_200_samples(name: str) -> None:
    """Build the 200 seeded samples of space ``name`` and run each forward at SMALL_INPUT."""
    space = get_space(name)
    rng = random.Random(0)
    torch.manual_seed(0)
    for _ in range(200):
        spec = small(space.sample(rng))
        model = build_model(spec).eval()
        with torch.no_grad():
            y = model(example_input(spec))
        assert y.shape == (1, 2) and torch.isfinite(y).all(), spec


# swin3d-input samples differ from swin3d ones only in the input, which SMALL_INPUT overrides.
# swin3d's 200 are built and run forward by their exports in test_export_slow.py (slow tier).
def test_200_cnn3d_samples_build_and_run_forward():
    forward_200_samples("cnn3d")


def test_cnn3d_builds_at_every_input_of_its_space():
    space = get_space("cnn3d")
    base = space.baseline()
    deep = ArchSpec(
        "cnn3d",
        8,
        41,
        {**base.params, "channels": (8,) * 4, "kernel_t": (5,) * 4, "kernel_s": (3,) * 4},
    )
    for downsample in ("pool", "stride"):
        for frames in (8, 16, 32):
            for size in (41, 64, 112):
                spec = ArchSpec("cnn3d", frames, size, {**deep.params, "downsample": downsample})
                space.validate(spec)
                with torch.no_grad():
                    assert build_model(spec).eval()(example_input(spec)).shape == (1, 2)


def test_every_input_shape_runs_on_meta():
    # The forwards above run at a small input; these walk the real input shapes of the spaces
    # (41 x 41 crops included) through the geometry on the meta device: shapes, no arithmetic.
    swin = get_space("swin3d-input")
    frames, sizes = swin.describe()["input"].values()
    for spec in (swin.smallest(), swin.largest(), swin.baseline()):
        for t in frames:
            for s in sizes:
                meta_forward(spec.with_input(t, s))
    cnn = get_space("cnn3d")
    rng = random.Random(1)
    for _ in range(200):
        meta_forward(cnn.sample(rng))


def meta_forward(spec: ArchSpec) -> None:
    with torch.device("meta"):
        y = build_model(spec).eval()(torch.empty(input_shape(spec)))
    assert y.shape == (1, 2), spec
