"""The training table's row filter: Arrow-string deploy ids filtered without pandas' per-value path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.training.dataset import is_in


@pytest.mark.parametrize("values_dtype", ["string[pyarrow]", "string[python]", object])
@pytest.mark.parametrize("allowed_dtype", ["string[pyarrow]", object])
def test_is_in_agrees_with_pandas_isin_for_every_string_dtype(values_dtype: object, allowed_dtype: object) -> None:
    values = pd.Series(["d-1", "d-2", None, "d-4", "d-2"], dtype=values_dtype)
    allowed = pd.Series(["d-2", "d-4", "d-9"], dtype=allowed_dtype)
    expected = values.astype(object).isin(set(allowed.astype(object))).to_numpy(dtype=bool)
    np.testing.assert_array_equal(is_in(values, allowed), expected)
    assert is_in(values, allowed).dtype == bool


def test_is_in_keeps_non_string_ids_on_pandas_isin() -> None:
    np.testing.assert_array_equal(is_in(pd.Series([1, 2, 3]), pd.Series([3, 1])), [True, False, True])
