"""The incident-risk command line: one module per command group; main.py builds the Typer app.

Commands validate their arguments, prepare the runtime, then import the flows they run.
"""
