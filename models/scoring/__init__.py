"""Scoring upcoming deploys: the deploy to score, the scoring context, the compiled fast scorer, explanations.

May import features/, models.training and models.registry; the serving path imports no MLflow at module load.
"""
