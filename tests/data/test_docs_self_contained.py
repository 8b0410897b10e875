"""The data-model doc must be readable from a clone: no pointers to files outside the repository."""

from __future__ import annotations

import re

from tests.helpers.paths import REPO


def test_data_model_doc_points_only_into_the_repository() -> None:
    text = (REPO / "docs" / "data-model.md").read_text()
    outside = re.findall(r"(?:\.\./[\w./-]+|/work/[\w./-]+|\bshared/REFERENCE\.md)", text)
    assert outside == [], f"docs/data-model.md points outside the repository: {outside}"
