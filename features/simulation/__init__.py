"""A simulated organisation with known ground truth, and its exports in the tools' formats.

May import features.history only; nothing in the pipeline imports it except the simulate command, benchmarks and tests.
"""
