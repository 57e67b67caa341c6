"""The fleet simulator: the real orchestrator against simulated workers on a virtual clock.

- :mod:`~hpc2edge.sim.benchmark`, :mod:`~hpc2edge.sim.surrogate`: a recorded benchmark (real
  latencies and training curves of architectures of a space) and the surrogate that answers for
  architectures it does not hold;
- :mod:`~hpc2edge.sim.results`: results in the shape the real workers send;
- :mod:`~hpc2edge.sim.clock`: the virtual clock (sleeps jump to the next event; optionally
  charged with the orchestrator's CPU);
- :mod:`~hpc2edge.sim.fleet`: a dispatcher whose train workers and edge units take tasks from
  their queues and answer after the benchmark's durations, with faults injected on the clock;
- :mod:`~hpc2edge.sim.run`: one simulated study, driven through the orchestrator's dispatcher,
  clock and preparer seams, and what it cost.

Runs on the orchestrator's host (it needs Optuna and the search; not torch).
"""
