"""Latency backends, one module each, loaded by name (:data:`hpc2edge.latency.BACKENDS`).

``onnxruntime`` runs everywhere; ``tensorrt`` needs TensorRT and cuda-python (a Jetson, a GPU
node); ``table`` replays recorded measurements (the simulator and tests).
"""
