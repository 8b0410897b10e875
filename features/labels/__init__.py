"""Labels from history: attribution of incidents to the changes that caused them, DORA metrics, teams.

May import features.history only.
"""
