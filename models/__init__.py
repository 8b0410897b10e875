"""Risk models: training, registry, scoring and the HTTP service.

Imports features/ (never pipelines/); nothing runs at import.
"""
