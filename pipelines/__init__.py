"""Prefect flows and the incident-risk command line."""
