"""Shipped contract suites and fakes, the way ``optuna.testing`` ships its own.

A new implementation of a contract (a latency backend, an artifact store, a dispatcher, a
measurement store) imports its suite here and runs it; the project's tests run every suite on
every real implementation and on the fakes.
"""
