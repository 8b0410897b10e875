"""Reaching the squads in Slack: high-risk deploy alerts and the weekly risk digest.

``blocks.py`` (Block Kit messages and their limits), ``config.py`` (Slack credentials, channel
routing per squad, alert rule), ``sender.py`` (the background sender with slack_sdk's retry
handlers), ``alerts.py`` (a scored deploy -> one alert, off the request path), ``digest.py`` (the
weekly digest per squad and tribe). May import features/ and models.scoring / models.training.
"""
