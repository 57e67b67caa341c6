"""Every click command; ``main`` is the ``hpc2edge`` entry point."""

from hpc2edge.cli.root import main

__all__ = ["main"]
