"""Canonical history, labels and point-in-time features for incident-risk."""
