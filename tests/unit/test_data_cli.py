"""``hpc2edge data synth|inspect|bench``, the torch Dataset, and the torch-free import."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from hpc2edge.cli import main as hpc2edge_main
from hpc2edge.cli.data import data_group
from hpc2edge.errors import DataError
from tests.data.fixtures import make

pytestmark = pytest.mark.unit


@pytest.fixture
def run():
    root = click.Group("hpc2edge")
    root.add_command(data_group)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(root, ["data", *map(str, args)])

    return invoke


def test_synth_then_inspect(tmp_path, run):
    out = tmp_path / "syn"
    result = run(
        "synth",
        "--out",
        out,
        "--layout",
        "v1.0",
        "--objects",
        3,
        "--layers",
        2,
        "--lines",
        4,
        "--seed",
        1,
        "--frame-size",
        32,
        "--line-length-mm",
        1,
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1 file(s)" in result.output and "24 lines" in result.output
    info = run("inspect", out, "--json")
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    assert data["layouts"] == ["v1.0"] and data["objects"] == ["C027", "C028", "C029"]
    assert data["layers"] == 6 and data["lines"] == 24 and data["frame_sizes"] == [[32, 32]]
    assert 300 <= data["speed_mm_s_range"][0] <= data["speed_mm_s_range"][1] <= 900
    assert data["bytes"] == (out / "RAISE_LPBF_train.hdf5").stat().st_size
    text = run("inspect", out)
    assert text.exit_code == 0 and "layout v1.0" in text.output and "mm/s" in text.output


def test_synth_refuses_to_overwrite(tmp_path, run):
    args = (
        "synth",
        "--out",
        tmp_path,
        "--objects",
        1,
        "--layers",
        1,
        "--lines",
        1,
        "--frame-size",
        16,
        "--line-length-mm",
        0.5,
    )
    assert run(*args).exit_code == 0
    again = run(*args)
    assert again.exit_code == 2 and "--force" in again.output
    assert run(*args, "--force").exit_code == 0


def test_inspect_without_labels(tmp_path, run):
    folder = make(tmp_path, "v1.1", objects=1, labels=False)
    result = run("inspect", folder)
    assert result.exit_code == 0 and "none (no labels)" in result.output


def test_bench(tmp_path, run):
    folder = make(tmp_path, "v1.1", objects=2)
    result = run("bench", folder, "--samples", 10, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["samples"] == 10 and data["samples_per_s_first_pass"] > 0
    bad = run("bench", folder, "--objects", "C099")
    assert bad.exit_code == 2 and "C099" in bad.output


def test_bad_file_is_one_line_through_the_main_cli(tmp_path, run, capsys):
    bogus = tmp_path / "C027.hdf5"
    bogus.write_text("hello")
    result = run("inspect", bogus)
    assert isinstance(result.exception, DataError)
    from hpc2edge.cli import root as main_cli

    if "data" not in main_cli.cli.commands:  # until the lead registers the group
        main_cli.cli.add_command(data_group)
    assert hpc2edge_main(["data", "inspect", str(bogus)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an HDF5 file" in err and str(bogus) in err


def test_importing_the_package_does_not_import_torch():
    code = (
        "import sys, hpc2edge.data, hpc2edge.cli.data; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "from hpc2edge.data import LPBFReader, generate; "
        "assert 'torch' not in sys.modules, 'torch imported by the reader'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_cli_group_registers_without_h5py():
    # An edge device has numpy but maybe no h5py: `hpc2edge --help` must still work there.
    code = (
        "import sys; sys.modules['h5py'] = None; "
        "from hpc2edge.cli.data import data_group; "
        "assert 'h5py' not in sys.modules or sys.modules['h5py'] is None; "
        "print(sorted(data_group.commands))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['bench', 'inspect', 'synth']"


def test_cli_layouts_match_the_reader():
    from hpc2edge.cli.data import LAYOUTS
    from hpc2edge.data import layout

    assert sorted(LAYOUTS) == sorted(layout.LAYOUTS)


def test_torch_dataset_and_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    from hpc2edge.data import LPBFDataset

    folder = make(tmp_path, "v1.1")
    ds = LPBFDataset.from_paths(folder, split="test", frames=8, size=64)
    assert not ds.train and len(ds) == 2 * 2 * 6
    x, y = ds[0]
    assert x.shape == (1, 8, 64, 64) and x.dtype == torch.float32 and y.shape == (2,)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, multiprocessing_context="fork"
    )
    batches = list(loader)
    xs = torch.cat([b[0] for b in batches])
    assert xs.shape == (len(ds), 1, 8, 64, 64)
    np.testing.assert_array_equal(xs[0].numpy(), x.numpy())  # workers read what the parent reads

    train = LPBFDataset.from_paths(folder, split="train", frames=4, seed=3)
    assert train.train
    torch.manual_seed(0)
    first = [train[i][0] for i in range(len(train))]
    torch.manual_seed(1)  # another seed (a DataLoader worker's) draws from another generator
    train[0]
    torch.manual_seed(0)  # and the first seed starts the first generator over
    again = [train[i][0] for i in range(len(train))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
