"""Tests for jelm.domains.sodarace.errors: the API error and one validation error per rule
(§4), each with a stable code."""

from __future__ import annotations

import pickle

import pytest

from jelm.domains.sodarace import errors
from jelm.domains.sodarace.errors import WalkerAPIError, WalkerValidationError

RULES = [
    getattr(errors, name)
    for name in errors.__all__
    if name[0].isupper()
    and issubclass(getattr(errors, name), WalkerValidationError)
    and name != "WalkerValidationError"
]


def test_api_error_is_a_value_error_with_a_code():
    assert issubclass(WalkerAPIError, ValueError)
    assert WalkerAPIError.code == "walker_api_error"


def test_every_rule_has_its_own_stable_code():
    codes = {cls.__name__: cls.code for cls in RULES}
    assert codes == {
        "AmplitudeTooLarge": "amplitude_too_large",
        "CoordinateOutOfRange": "coordinate_out_of_range",
        "EmptyWalker": "empty_walker",
        "JointsTooClose": "joints_too_close",
        "MalformedWalker": "malformed",
        "MissingJoint": "missing_joint",
        "NoLinks": "no_links",
        "NonFiniteValue": "non_finite_value",
        "SelfLink": "self_link",
        "TooManyJoints": "too_many_joints",
        "TooManyLinks": "too_many_links",
        "TooManyLinksPerJoint": "too_many_links_per_joint",
    }
    assert WalkerValidationError.code == "invalid_walker"
    assert all(issubclass(cls, ValueError) for cls in RULES)


@pytest.mark.parametrize("cls", RULES, ids=lambda cls: cls.__name__)
def test_errors_pickle_with_their_message_and_details(cls):
    exc = cls("link 3 joins joint 1 to itself", link=3, joint=1)
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is cls
    assert str(again) == "link 3 joins joint 1 to itself"
    assert again.info == {"link": 3, "joint": 1}


def test_short_repr_cuts_long_and_survives_hostile_reprs():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no")

    assert errors.short_repr("x" * 100) == repr("x" * 100)[:57] + "..."
    assert errors.short_repr((1, 2)) == "(1, 2)"
    assert errors.short_repr(Hostile()) == "<Hostile>"
    assert errors.type_name(1.5) == "float"
