"""Small ONNX models built with ``onnx.helper`` (no torch); shipped as hpc2edge.testing.models."""

from hpc2edge.testing.models import TinyModel, tiny_model

__all__ = ["TinyModel", "tiny_model"]
