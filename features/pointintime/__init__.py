"""Point-in-time features of deploys: definitions, window kernels and the partitioned (scale-out) build.

May import features.history and features.labels.
"""
