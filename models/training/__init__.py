"""Training: training tables, estimators, time-ordered search, calibration, evaluation, report, MLflow tracking.

May import features/ and models.registry.
"""
