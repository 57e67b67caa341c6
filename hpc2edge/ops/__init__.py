"""Local operations and deployment tools: the local stack, a local broker, Flower, the study
dashboard, Kubernetes secrets. Runs on an operator's or the admin's machine; code that runs on
a worker or the orchestrator never imports it.
"""
