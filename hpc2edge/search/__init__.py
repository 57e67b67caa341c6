"""The search: an asynchronous Optuna ask/tell orchestrator over Celery (see ``orchestrator``).

Modules: ``objectives`` (what is minimised), ``dispatch`` (Celery or in-process), ``candidate``
(ONNX, reference outputs, task payloads), ``study`` (storage and samplers), ``orchestrator``,
``cli`` (``hpc2edge search`` and ``hpc2edge demo``). Importing this package imports nothing heavy;
the modules import optuna and torch.
"""
