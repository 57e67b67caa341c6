"""Shipped contract suites and fakes, the way ``optuna.testing`` ships its own.

A new implementation of a contract imports its suite, subclasses it as a ``Test...`` class and
provides the fixture the suite names; the project's tests run every suite on every real
implementation and on the fakes (``pytest`` is needed, from the ``dev`` extra):

- :mod:`.latency`: ``LatencyBackendContract`` (fixture ``backend``) for
  :class:`~hpc2edge.latency.base.LatencyBackend`; the contract model and its recordings.
- :mod:`.artifacts`: ``ArtifactStoreContract`` (``make_store``, ``raw``) for
  :class:`~hpc2edge.store.artifacts.ArtifactStore`.
- :mod:`.dispatch`: ``DispatcherContract`` (``dispatcher``, ``answered``) for
  :class:`~hpc2edge.search.dispatch.Dispatcher`; ``Planted`` (inline) and ``StoredAnswers``
  (Celery) provide ``answered``.
- :mod:`.measurements`: ``MeasurementStoreContract`` (``url``) for
  :class:`~hpc2edge.store.measurements.MeasurementStore` on a database.
- :mod:`.fakes`: ``FakeEdge``, ``FakeTrainer`` and ``FakeClock``, the orchestrator's doubles.
- :mod:`.models`: a tiny ONNX model with a numpy reference; :mod:`.training`: a tiny problem.

The library never imports this package: in the layers (``pyproject.toml``,
``[tool.importlinter]``) it sits beside ``report`` and ``ops``, under ``cli`` only.
"""
