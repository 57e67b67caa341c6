"""The wire: what every role needs to speak through the broker, the Jetson included.

- :mod:`~hpc2edge.transport.broker`: the verified redis-py client of a role, and one error
  translation; :mod:`~hpc2edge.transport.tls`: the client's TLS options.
- :mod:`~hpc2edge.transport.app`: the one Celery app (``celery -A hpc2edge`` finds it through
  :mod:`hpc2edge.celery`); :mod:`~hpc2edge.transport.signing`: optional message signing.
- :mod:`~hpc2edge.transport.taskids`: unguessable task ids bound to a queue.
- :mod:`~hpc2edge.transport.envelope`: the check of a raw task message (pure).
- :mod:`~hpc2edge.transport.intake`: the worker's kombu channel and Celery consumer that run it
  and dead-letter what fails, so that no message stops a worker.
- :mod:`~hpc2edge.transport.deadletters`: the bounded ``hpc2edge:dead:<queue>`` lists.
- :mod:`~hpc2edge.transport.results`: reading a stored result without trusting it.
- :mod:`~hpc2edge.transport.liveness`: which workers serve which queue, without remote control.
- :mod:`~hpc2edge.transport.probes`: ``ping`` a queue's workers, the broker as a role sees it.
- :mod:`~hpc2edge.transport.flowerguard`: basic auth and loopback for ``celery -A hpc2edge
  flower``.

Nothing here imports local tooling (the stack, Flower) or presentation.
"""
