"""``celery -A hpc2edge`` finds ``app`` here; everything about it is :mod:`hpc2edge.transport.app`.

A worker on a Jetson runs ``celery -A hpc2edge worker -Q edge``; Celery imports this module,
which imports the wire (:mod:`hpc2edge.transport`) and nothing heavier: no torch, no DeepSpeed.
"""

from hpc2edge.transport.app import app

__all__ = ["app"]
