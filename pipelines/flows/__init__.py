"""Prefect flows, one per job (ingest, train, batch scoring, DORA, demo), and the scheduled deployments.

Flows wire plain functions of features/ and models/; tasks only add retries and caching.
"""
