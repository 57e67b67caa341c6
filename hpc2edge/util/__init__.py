"""The bottom layer: atomic files, file modes, processes, small network helpers, versions.

Imports nothing from hpc2edge but :mod:`hpc2edge.errors`; every other package may use it.
"""
