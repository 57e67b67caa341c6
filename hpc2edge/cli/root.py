"""The ``hpc2edge`` command: the root group, which loads its subcommands lazily.

Entry point only: it reads the environment, loads settings, calls library functions and turns
hpc2edge errors into one line on stderr with a non-zero exit (2 for configuration errors) rather
than a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from hpc2edge import __version__
from hpc2edge.errors import Hpc2EdgeError
from hpc2edge.util import filemodes


@dataclass(frozen=True)
class _Entry:
    """Where a command lives, and its one-line help (shown without importing it)."""

    module: str
    attr: str
    help: str


# Every command, in one table. `hpc2edge --help` lists them from here and imports none; running
# (or asking `--help` of) one imports its own module only. tests/unit/test_cli_layout.py checks
# that each entry's help is its command's own first line.
COMMANDS: dict[str, _Entry] = {
    "config": _Entry("config", "config_group", "Show or check the effective configuration."),
    "tls": _Entry("pki", "tls_group", "Create the private CA and the role certificates."),
    "broker": _Entry(
        "broker", "broker_group", "Run a local TLS-only Redis broker (single-machine deployments)."
    ),
    "up": _Entry(
        "stack",
        "up_cmd",
        "Start broker, one train worker and the edge workers in the background (one of the "
        "default kind, or the units --edge asks for).",
    ),
    "down": _Entry("stack", "down_cmd", "Stop exactly the processes `hpc2edge up` started."),
    "status": _Entry(
        "stack",
        "status_cmd",
        "Broker reachability and TLS version, workers per queue, queue depths.",
    ),
    "ping": _Entry(
        "stack",
        "ping_cmd",
        "Send hpc2edge.ping through the broker to a worker of QUEUE and print who answered.",
    ),
    "devices": _Entry(
        "devices",
        "devices_cmd",
        "Device kinds and their units: state, last seen, measurements, software, reference check.",
    ),
    "dead-letters": _Entry(
        "deadletters",
        "dead_letters_cmd",
        "Messages the workers refused (malformed, forged, oversized, or that stopped a worker).",
    ),
    "data": _Entry(
        "data", "data_group", "RAISE-LPBF-Laser data: synthetic files, inspection, reader speed."
    ),
    "space": _Entry(
        "space", "space_group", "Inspect search spaces: their parameters, baselines and samples."
    ),
    "export": _Entry(
        "space",
        "export_cmd",
        "Export one architecture to ONNX (opset 17, dynamic batch), checked with ONNX Runtime.",
    ),
    "measure": _Entry(
        "latency",
        "measure_cmd",
        "Measure MODEL (ONNX) here with the edge protocol; print the statistics per batch size.",
    ),
    "train": _Entry("train", "train_cmd", "Train one candidate locally and print its TrainResult."),
    "search": _Entry(
        "search",
        "search_cmd",
        "Search architectures with the edge in the loop; resumable by --study.",
    ),
    "demo": _Entry(
        "search",
        "demo_cmd",
        "The whole mission on this machine in minutes: synthetic data, the local stack, a "
        "search of the cnn3d space (8 x 41 x 41 inputs, quick protocol), the front, the report, "
        "the stack down.",
    ),
    "simulate": _Entry(
        "simulate",
        "simulate_cmd",
        "Try a search strategy on a recorded benchmark: the real orchestrator against simulated "
        "workers and devices on a virtual clock.",
    ),
    "report": _Entry(
        "report",
        "report_cmd",
        "Write report.html (Pareto front, hypervolume, tables against the baseline, devices), "
        "its PNGs and report.json for a study.",
    ),
    "dashboard": _Entry(
        "dashboard",
        "dashboard_cmd",
        "Run optuna-dashboard on the study storage in the foreground (Ctrl-C stops it).",
    ),
    "monitor": _Entry(
        "monitor",
        "monitor_cmd",
        "Run Flower in the foreground as the monitor role, with HTTP basic auth.",
    ),
    "k8s": _Entry("k8s", "k8s_group", "Kubernetes deployment of the broker and Flower (k8s/)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use, from :data:`COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"hpc2edge.cli.{entry.module}")
        command: click.Command = getattr(module, entry.attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # As click's own listing: each help cut to the width left beside the longest name.
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        helps = {name: entry.help for name, entry in COMMANDS.items()}
        helps.update({n: c.get_short_help_str(300) for n, c in self.commands.items()})
        rows = [(n, _shortened(helps[n], limit)) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` the way click cuts a command's short help."""
    return click.Command(None, help=text).get_short_help_str(limit)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $HPC2EDGE_CONFIG, else built-in "
    "defaults for the local stack under .hpc2edge/).",
)
@click.version_option(__version__, prog_name="hpc2edge")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """hpc2edge: neural architecture search on HPC with the edge device in the loop.

    Quick start on one machine: `hpc2edge up`, `hpc2edge ping --queue edge`, `hpc2edge down`.
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    It runs with umask 0o077 (restored on return, for callers in the same process): whatever
    it writes under the state folder, and whatever the processes it starts write, is private
    to its owner (:mod:`hpc2edge.util.filemodes`).
    """
    old_umask = filemodes.private_umask()
    try:
        return _main(argv)
    finally:
        os.umask(old_umask)


def _main(argv: Sequence[str] | None) -> int:
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="hpc2edge",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except Hpc2EdgeError as exc:
        click.echo(f"hpc2edge: error: {exc}", err=True)
        return exc.exit_code
    # Without standalone mode click returns a raised Exit's code instead of raising it.
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
