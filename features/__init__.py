"""The history side of incident-risk: canonical data, connectors, labels and point-in-time features.

Imports nothing from models/ or pipelines/; its rooms import history/ and each other downwards only.
"""
