"""Source connectors: each maps one tool's export format to a canonical table."""
