"""The HTTP scoring service: FastAPI app, request/response schemas, auth, metrics, hot-swapped state.

May import features/ and models.scoring / models.registry / models.notify (alerts on high-risk scores).
"""
