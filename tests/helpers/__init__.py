"""Test-only helpers shared by test modules and benchmarks (synthetic tables)."""
