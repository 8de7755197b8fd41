"""Tests for jelm.domains.sodarace.validation: the rules a walker must follow (§4), checked
by ``Walker.from_dict``, ``Walker.validate`` and the sandbox's ``validate_walker``."""

from __future__ import annotations

import math
import pickle
import time

import pytest
from hypothesis import find, given, settings

from jelm.domains.sodarace import api, errors
from jelm.domains.sodarace.api import DEFAULT_LIMITS, Walker, WalkerLimits, WalkerValidationError
from jelm.domains.sodarace.validation import check_walker
from tests.strategies import valid_walker_dicts

# ---------------------------------------------------------------------- helpers


def link(i: int, j: int, kind: str = "distance", amplitude: float = 0.0, phase: float = 0.0):
    return [i, j, {"type": kind, "amplitude": amplitude, "phase": phase}]


def walker_dict(joints, muscles) -> dict:
    return {"joints": [list(p) for p in joints], "muscles": muscles}


TWO = [(0.0, 0.0), (1.0, 0.0)]


# -------------------------------------------------------------------- structure


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ([], "must be a dict"),
        ({"joints": []}, "needs both 'joints' and 'muscles'"),
        ({"joints": [], "muscles": [], "extra": 1}, r"unknown keys \['extra'\]"),
        ({"joints": "ab", "muscles": []}, "'joints' must be a list"),
        (walker_dict([(0, 0), (1,)], [link(0, 1)]), r"joint 1 must be an \[x, y\] pair"),
        (walker_dict([(0, 0), ("1", 0)], [link(0, 1)]), "joint 1 must be an"),
        (walker_dict(TWO, [link(0, 1), [0, 1]]), "link 1 must be"),
        (walker_dict(TWO, [[0, 1.0, {"type": "distance"}]]), "link 0 must join two int"),
        (walker_dict(TWO, [[True, 1, {"type": "distance"}]]), "link 0 must join two int"),
        (walker_dict(TWO, [link(0, 1, "spring")]), "link 0 has type 'spring'"),
        (walker_dict(TWO, [[0, 1, {"amplitude": 1.0}]]), "link 0 has type None"),
        (walker_dict(TWO, [link(0, 1, "muscle", "3")]), "link 0 has a non-numeric amplitude"),
        (walker_dict(TWO, [[0, 1, {"type": "muscle", "period": 2}]]), "link 0 has unknown keys"),
    ],
)
def test_from_dict_malformed_names_the_entry(d, match):
    with pytest.raises(errors.MalformedWalker, match=match) as info:
        Walker.from_dict(d)
    assert info.value.code == "malformed"
    assert isinstance(info.value, WalkerValidationError)


def test_validate_rejects_garbage_in_a_constructed_walker():
    w = Walker(TWO, [link(0, 1)])
    w.muscles.append("not a link")
    with pytest.raises(errors.MalformedWalker, match="link 1 must be"):
        w.validate()


# ------------------------------------------------------------------------ rules

_TOO_MANY_PER_JOINT = walker_dict(
    [(0, 0)] + [(2 * math.cos(k / 2), 2 * math.sin(k / 2)) for k in range(11)],
    [link(0, k) for k in range(1, 12)],
)

VALIDATION_CASES = [
    # (error class, code, walker dict, regex the message must match)
    (errors.EmptyWalker, "empty_walker", walker_dict([], []), "no joints"),
    (errors.NoLinks, "no_links", walker_dict(TWO, []), "2 joints but no links"),
    (
        errors.TooManyJoints,
        "too_many_joints",
        walker_dict([(k, 0) for k in range(65)], [link(0, 1)]),
        r"65 joints \(limit 64\)",
    ),
    (
        errors.TooManyLinks,
        "too_many_links",
        walker_dict(TWO, [link(0, 1)] * 257),
        r"257 links \(limit 256\)",
    ),
    (
        errors.TooManyLinksPerJoint,
        "too_many_links_per_joint",
        _TOO_MANY_PER_JOINT,
        r"^joint 0 has 11 links \(limit 10\)$",
    ),
    (
        errors.AmplitudeTooLarge,
        "amplitude_too_large",
        walker_dict([*TWO, (0, 1)], [link(0, 1), link(1, 2, "muscle", -10.5, 0.2)]),
        r"link 1 is a muscle with amplitude -10\.5",
    ),
    (
        errors.JointsTooClose,
        "joints_too_close",
        walker_dict([(0, 0), (5, 5), (5.05, 5)], [link(0, 1)]),
        r"joints 1 and 2 are 0\.05 apart \(minimum 0\.1\)",
    ),
    (
        errors.SelfLink,
        "self_link",
        walker_dict(TWO, [link(0, 1), link(1, 1)]),
        "link 1 joins joint 1 to itself",
    ),
    (
        errors.MissingJoint,
        "missing_joint",
        walker_dict(TWO, [link(0, 1), link(0, 2)]),
        r"link 1 refers to joint 2, but joints are 0\.\.1",
    ),
    (
        errors.MissingJoint,
        "missing_joint",
        walker_dict(TWO, [link(-1, 1)]),
        "link 0 refers to joint -1",
    ),
    (
        errors.NonFiniteValue,
        "non_finite_value",
        walker_dict([(0, 0), (1, math.nan)], [link(0, 1)]),
        r"joint 1 is at \(1\.0, nan\)",
    ),
    (
        errors.NonFiniteValue,
        "non_finite_value",
        walker_dict(TWO, [link(0, 1, "distance", 0.0, math.inf)]),
        "link 0 has phase inf",
    ),
    (
        errors.CoordinateOutOfRange,
        "coordinate_out_of_range",
        walker_dict([(0, 0), (0, -100.5)], [link(0, 1)]),
        r"joint 1 is at \(0\.0, -100\.5\); coordinates must lie within \+-100",
    ),
]


@pytest.mark.parametrize(
    ("cls", "code", "d", "match"), VALIDATION_CASES, ids=[c[1] for c in VALIDATION_CASES]
)
def test_each_validation_error(cls, code, d, match):
    with pytest.raises(cls, match=match) as info:
        Walker.from_dict(d)
    assert type(info.value) is cls
    assert info.value.code == code == cls.code
    assert isinstance(info.value, WalkerValidationError) and isinstance(info.value, ValueError)
    # validate() on a directly constructed Walker reports the same failure
    with pytest.raises(cls, match=match):
        Walker(d["joints"], d["muscles"]).validate()
    with pytest.raises(cls, match=match):
        check_walker(d["joints"], d["muscles"], DEFAULT_LIMITS)
    # and so does the sandbox's parent-side check, its one-pass shortcut included
    with pytest.raises(cls, match=match):
        api.validate_walker(d)


def test_every_rule_has_a_case():
    """The cases above break every rule once (``MalformedWalker`` has its own table)."""
    rules = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, WalkerValidationError)
    }
    cases = {c[0] for c in VALIDATION_CASES} | {errors.MalformedWalker, WalkerValidationError}
    assert cases == rules
    assert len(rules) == 13


def _outcome(check, d):
    try:
        return ("ok", check(d))
    except WalkerValidationError as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize(
    "d", [c[2] for c in VALIDATION_CASES] + [{"joints": [], "muscles": [], "x": 1}, [1, 2], None]
)
def test_validate_walker_agrees_with_from_dict(d):
    assert _outcome(api.validate_walker, d) == _outcome(lambda x: Walker.from_dict(x).to_dict(), d)


@given(valid_walker_dicts())
@settings(max_examples=60, deadline=None, derandomize=True)
def test_validate_walker_agrees_with_from_dict_on_generated_walkers(d):
    assert api.validate_walker(d) == Walker.from_dict(d).to_dict()


def test_errors_pickle_with_details():
    with pytest.raises(errors.TooManyLinksPerJoint) as info:
        Walker.from_dict(_TOO_MANY_PER_JOINT)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is errors.TooManyLinksPerJoint
    assert str(again) == str(info.value) and again.info == {"joint": 0, "links": 11}


def test_boundaries_are_inclusive():
    """Exactly 10 links on a joint, |amplitude| exactly 10, joints exactly the minimum
    distance apart and coordinates exactly at the limit are all valid."""
    joints = [(0.0, 0.0)] + [(3 * math.cos(k / 2), 3 * math.sin(k / 2)) for k in range(10)]
    joints += [(100.0, -100.0), (100.0, -99.875)]  # exactly 0.125 apart, on the limit
    muscles = [link(0, k, "muscle", 10.0 if k % 2 else -10.0, 0.5) for k in range(1, 11)]
    muscles.append(link(11, 12))
    Walker.from_dict(walker_dict(joints, muscles), WalkerLimits(min_joint_distance=0.125))
    # amplitude limit applies to muscles only: bones store any finite amplitude
    Walker.from_dict(walker_dict(TWO, [link(0, 1, "distance", 55.0, 3.0)]))


def test_custom_limits_are_used():
    d = walker_dict([(0, 0), (2, 0), (4, 0)], [link(0, 1, "muscle", 3.0), link(1, 2)])
    Walker.from_dict(d)
    with pytest.raises(errors.TooManyJoints):
        Walker.from_dict(d, WalkerLimits(max_joints=2))
    with pytest.raises(errors.TooManyLinks):
        Walker.from_dict(d, WalkerLimits(max_links=1))
    with pytest.raises(errors.TooManyLinksPerJoint, match="joint 1 has 2 links"):
        Walker.from_dict(d, WalkerLimits(max_links_per_joint=1))
    with pytest.raises(errors.AmplitudeTooLarge):
        Walker.from_dict(d, WalkerLimits(max_amplitude=2.0))
    with pytest.raises(errors.JointsTooClose, match="joints 0 and 1"):
        Walker.from_dict(d, WalkerLimits(min_joint_distance=2.5))
    with pytest.raises(errors.CoordinateOutOfRange, match="joint 2"):
        Walker.from_dict(d, WalkerLimits(max_abs_coordinate=3.0))
    Walker.from_dict(d, WalkerLimits(min_joint_distance=0.0))


def test_spacing_check_finds_close_pairs_anywhere():
    """The grid-based spacing check agrees with the naive O(n^2) check."""
    limits = WalkerLimits(min_joint_distance=1.0)
    joints = [(float(x), float(y)) for x in range(-5, 5) for y in range(0, 6)]
    for bad in [(0.3, 0.7), (-4.99, 5.5), (4.6, 0.2), (-0.01, -0.01)]:
        d = walker_dict([*joints, bad], [link(0, 1)])
        with pytest.raises(errors.JointsTooClose):
            Walker.from_dict(d, limits)
    Walker.from_dict(walker_dict(joints, [link(0, 1)]), limits)  # spacing exactly 1.0


def test_a_million_joints_fail_fast():
    d = {"joints": [[float(k), 0.0] for k in range(1_000_000)], "muscles": [link(0, 1)]}
    t0 = time.perf_counter()
    with pytest.raises(errors.TooManyJoints, match="1000000 joints"):
        Walker.from_dict(d)
    with pytest.raises(errors.TooManyJoints):
        Walker(d["joints"][:100_000], d["muscles"]).validate()
    assert time.perf_counter() - t0 < 1.0


# --------------------------------------------------------------------- strategy


@settings(max_examples=100, deadline=None)
@given(valid_walker_dicts())
def test_generated_walker_dicts_validate(d):
    w = Walker.from_dict(d)
    assert w.to_dict() == d
    assert 2 <= w.n_joints <= DEFAULT_LIMITS.max_joints
    assert 1 <= w.n_links <= DEFAULT_LIMITS.max_links


@settings(max_examples=30, deadline=None)
@given(valid_walker_dicts(WalkerLimits(max_joints=12, min_joint_distance=1.0), max_joints=8))
def test_generated_walker_dicts_respect_custom_limits(d):
    limits = WalkerLimits(max_joints=12, min_joint_distance=1.0)
    assert len(d["joints"]) <= 8
    Walker.from_dict(d, limits)


def _degrees(d: dict) -> list[int]:
    degree = [0] * len(d["joints"])
    for i, j, _ in d["muscles"]:
        degree[i] += 1
        degree[j] += 1
    return degree


def _closest(d: dict) -> float:
    pts = d["joints"]
    return min(
        math.hypot(p[0] - q[0], p[1] - q[1]) for k, p in enumerate(pts) for q in pts[k + 1 :]
    )


def _muscle_amplitudes(d: dict) -> set[float]:
    return {p["amplitude"] for *_, p in d["muscles"] if p["type"] == "muscle"}


STRATEGY_EXTREMES = {
    "smallest walker": lambda d: len(d["joints"]) == 2 and len(d["muscles"]) == 1,
    "max joints": lambda d: len(d["joints"]) == 64,
    "max links": lambda d: len(d["muscles"]) == 256,
    "a joint with exactly 10 links": lambda d: max(_degrees(d)) == 10,
    "amplitudes of exactly +10 and -10": lambda d: {10.0, -10.0} <= _muscle_amplitudes(d),
    "a coordinate on the limit": lambda d: any(abs(c) == 100.0 for p in d["joints"] for c in p),
    "joints exactly the minimum distance apart": lambda d: _closest(d) == 0.1,
    "many joints spread to the limit": lambda d: (
        len(d["joints"]) > 40 and max(abs(c) for p in d["joints"] for c in p) == 100.0
    ),
    "many joints packed tight": lambda d: len(d["joints"]) > 40 and _closest(d) < 0.1001,
    "bones and muscles mixed": lambda d: len({p["type"] for *_, p in d["muscles"]}) == 2,
    "phases far outside [0, 1)": lambda d: any(abs(p["phase"]) > 10 for *_, p in d["muscles"]),
}


@pytest.mark.parametrize("name", list(STRATEGY_EXTREMES))
def test_strategy_reaches_extremes(name):
    """The strategy generates each extreme it promises, within a few hundred examples."""
    found = find(
        valid_walker_dicts(),
        STRATEGY_EXTREMES[name],
        settings=settings(max_examples=1000, database=None, deadline=None, derandomize=True),
    )
    Walker.from_dict(found)
