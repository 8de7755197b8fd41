"""jelm.programs.plain: JSON data passes, anything else is refused with a reason."""

from __future__ import annotations

import math

import pytest

from jelm.programs.plain import encode_plain


def test_plain_data_passes_and_tuples_become_lists():
    value = {"a": [1, 2.5, (True, None, "x")], "b": {"c": -0.0}}
    assert encode_plain(value) == {"a": [1, 2.5, [True, None, "x"]], "b": {"c": -0.0}}


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ({1: 2}, TypeError, "key of type int"),
        ([1, object()], TypeError, r"the result\[1\] is a object"),
        ({1.5, 2.5}, TypeError, "is a set"),
        ([1.0, math.nan], ValueError, r"the result\[1\] is nan"),
        ({"x": [math.inf]}, ValueError, r"\['x'\]\[0\] is inf"),
    ],
)
def test_other_values_are_refused(value, error, match):
    with pytest.raises(error, match=match):
        encode_plain(value)


def test_too_many_values_are_refused_early():
    with pytest.raises(ValueError, match="more than 10 values") as info:
        encode_plain(list(range(1000)), max_items=10)
    assert info.value.code == "too_large"
