"""The demo problem (``hpc2edge.search.problem``): one definition the demo, its printed command
and the benchmark recorder share; its data written once and again only when it changed."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from hpc2edge.data.synth import GENERATOR_VERSION, SynthSpec
from hpc2edge.search import problem
from hpc2edge.space import get_space
from hpc2edge.training.request import TrainRequest

pytestmark = pytest.mark.unit

TINY = SynthSpec(objects=2, layers=1, lines=3, frame_size=16, line_length_mm=0.3, seed=1)


def test_the_pin_is_a_point_of_the_space_and_the_recipe_a_valid_request():
    space = get_space("cnn3d")
    spec = space.validate(space.baseline().with_input(**problem.DEMO_PIN))
    r = problem.DEMO_RECIPE
    req = TrainRequest.from_json(
        {
            "trial_key": "t", "space": "cnn3d", "spec": spec.to_dict(),
            "hparams": {"lr": r.lr, "batch_size_per_gpu": r.train_batch_size, "epochs": r.epochs,
                        "lr_step_epochs": r.lr_step_epochs, "lr_gamma": r.lr_gamma},
            "seed": 0, "data": {"paths": ["/x.hdf5"], "test_fraction": r.test_fraction},
            "resources": {"engine": r.engine},
        }
    )  # fmt: skip
    assert req.epochs == r.epochs and req.data.test_fraction == r.test_fraction
    assert (req.hparams.lr_step_epochs, req.hparams.lr_gamma) == (1, 0.6)  # decays per epoch
    assert 1 <= r.epochs <= problem.DEMO_MAX_EPOCHS
    assert dataclasses.asdict(r) == r.search_options()  # what run_search gets, by option name


def test_the_cli_old_name_still_answers():
    from hpc2edge.cli import search

    assert search.DEMO_PIN is problem.DEMO_PIN
    with pytest.raises(AttributeError):
        _ = search.NO_SUCH_NAME  # type: ignore[attr-defined]


def test_the_extend_command_parses_as_the_demo_problem(tmp_path: Path):
    from hpc2edge.cli.search import DEMO_PROTOCOL, extend_command, search_cmd

    line = extend_command("demo-1", tmp_path, 24)
    argv = shlex.split(line)
    assert argv[:2] == ["hpc2edge", "search"]
    ctx = search_cmd.make_context("search", argv[2:])
    p = ctx.params
    r = problem.DEMO_RECIPE
    assert (p["study_name"], p["trials"], p["data"]) == ("demo-1", 24, tmp_path)
    assert (p["frames"], p["size"]) == (problem.DEMO_PIN["frames"], problem.DEMO_PIN["size"])
    assert p["protocol"] == DEMO_PROTOCOL
    assert (p["epochs"], p["lr"], p["train_batch_size"], p["engine"], p["test_fraction"]) == (
        r.epochs, r.lr, r.train_batch_size, r.engine, r.test_fraction
    )  # fmt: skip
    assert (p["lr_step_epochs"], p["lr_gamma"]) == (r.lr_step_epochs, r.lr_gamma)


def test_demo_data_is_written_once_and_again_when_the_spec_changes(tmp_path: Path):
    files, written = problem.write_demo_data(tmp_path, TINY)
    assert written and [p.name for p in files] == ["C027.hdf5", "C028.hdf5"]
    marker = json.loads((tmp_path / problem.MARKER).read_text())
    assert marker == {"generator": GENERATOR_VERSION,
                      "spec": json.loads(json.dumps(dataclasses.asdict(TINY)))}  # fmt: skip
    stamp = files[0].stat().st_mtime_ns
    again, written = problem.write_demo_data(tmp_path, TINY)
    assert not written and again == files and files[0].stat().st_mtime_ns == stamp
    # One object fewer: rewritten, and the object that is no longer in the spec is gone.
    other = dataclasses.replace(TINY, objects=1)
    files, written = problem.write_demo_data(tmp_path, other)
    assert written and sorted(p.name for p in tmp_path.glob("*.hdf5")) == ["C027.hdf5"]


def test_data_of_another_generator_version_or_without_a_marker_is_rewritten(tmp_path: Path):
    problem.write_demo_data(tmp_path, TINY)
    marker = tmp_path / problem.MARKER
    old = json.loads(marker.read_text())
    marker.write_text(json.dumps({**old, "generator": GENERATOR_VERSION - 1}))
    assert problem.write_demo_data(tmp_path, TINY)[1]
    marker.unlink()  # data from before the marker existed
    assert problem.write_demo_data(tmp_path, TINY)[1]
    (tmp_path / "mine.hdf5").write_bytes(b"")  # not a name the generator writes: kept
    marker.unlink()
    problem.write_demo_data(tmp_path, TINY)
    assert (tmp_path / "mine.hdf5").exists()
