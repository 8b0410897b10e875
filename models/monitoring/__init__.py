"""Monitoring and feedback: the prediction log, outcomes joined once matured, drift, decay alarms, plots.

May import features/, models.training, models.scoring and models.registry; nothing runs at import.
"""
