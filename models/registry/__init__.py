"""The model registry: model artifacts (skops with a trust list), the promotion gate and the champion alias.

May import features/ and models.training's config, estimators and evaluation.
"""
