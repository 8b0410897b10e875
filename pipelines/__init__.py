"""Prefect flows and the incident-risk command line: the only room that wires stages together and does I/O for a job.

Imports models/ and features/; nothing imports pipelines.
"""
