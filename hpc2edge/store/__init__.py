"""Persistence: :mod:`~hpc2edge.store.artifacts` (model blobs by content address, read by
every role) and :mod:`~hpc2edge.store.measurements` (the orchestrator's database of
measurements).
"""
