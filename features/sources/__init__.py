"""Source connectors: each maps one tool's export format to a canonical table.

May import features.history only.
"""
