"""hpc2edge: hardware-aware neural architecture search with the edge device in the loop.

Importing this package has no side effects and pulls in no heavy dependency (no torch, no
DeepSpeed, no TensorRT): a Jetson with only the core and ``edge`` extras imports it. The Celery
application lives in :mod:`hpc2edge.transport.app`, which ``celery -A hpc2edge`` finds on its own.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
