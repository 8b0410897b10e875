"""The canonical history: schema and boundary checks, timestamps, the atomic Parquet store, pure ingest logic.

The base of everything: imports nothing else of incident-risk.
"""
