"""Speed and quality benchmarks; run by hand as `python -m benchmarks.<name>` (see docs/benchmarks.md)."""
