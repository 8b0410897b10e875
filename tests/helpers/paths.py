"""Where the repository's test inputs live, independent of where a test module sits."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SAMPLE = REPO / "data" / "sample"
