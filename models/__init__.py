"""Risk models: training, evaluation, registry, scoring and the HTTP service."""
