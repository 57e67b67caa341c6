"""The search's report: :mod:`~hpc2edge.report.collect` reads the study and the measurement
store, :mod:`~hpc2edge.report.render` turns that into HTML and plots. The orchestrator's host
or any machine with read access to both.
"""
