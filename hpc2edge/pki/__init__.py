"""The admin machine's certificate authority: role, device, host and signing certificates.

Nothing on a worker or the orchestrator imports it: they read the files it wrote.
"""
