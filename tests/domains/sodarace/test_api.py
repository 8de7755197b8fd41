"""Tests for jelm.domains.sodarace.api: the paper's walker API, the dict layout, validation."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import time

import pytest
from hypothesis import find, given, settings

from jelm.domains.sodarace import api
from jelm.domains.sodarace.api import (
    DEFAULT_LIMITS,
    Joint,
    Walker,
    WalkerAPIError,
    WalkerLimits,
    WalkerValidationError,
    walker_creator,
)
from tests.strategies import valid_walker_dicts

# ----------------------------------------------------------------------------- helpers


def triangle() -> tuple[walker_creator, Joint, Joint, Joint]:
    wc = walker_creator()
    a = wc.add_joint(0, 0)
    b = wc.add_joint(4, 0)
    c = wc.add_joint(2, 3)
    return wc, a, b, c


def only_link(wc: walker_creator) -> dict:
    """The props of the single link of a creator's walker."""
    muscles = wc.get_walker().to_dict()["muscles"]
    assert len(muscles) == 1
    return muscles[0][2]


def link(i: int, j: int, kind: str = "distance", amplitude: float = 0.0, phase: float = 0.0):
    return [i, j, {"type": kind, "amplitude": amplitude, "phase": phase}]


def walker_dict(joints, muscles) -> dict:
    return {"joints": [list(p) for p in joints], "muscles": muscles}


TWO = [(0.0, 0.0), (1.0, 0.0)]


# ----------------------------------------------------------------------------- add_muscle


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        # (j0, j1): a passive bone
        ((), {}, ("distance", 0.0, 0.0)),
        # OpenELM's (j0, j1, amplitude, phase): a muscle iff either is non-zero
        ((3.0, 0.25), {}, ("muscle", 3.0, 0.25)),
        ((0.0, 0.5), {}, ("muscle", 0.0, 0.5)),
        ((-4, 0), {}, ("muscle", -4.0, 0.0)),
        ((0, 0.0), {}, ("distance", 0.0, 0.0)),
        # the paper's (j0, j1, passive, amplitude, phase)
        ((False, 5.0, 0.75), {}, ("muscle", 5.0, 0.75)),
        ((True, 5.0, 0.75), {}, ("distance", 5.0, 0.75)),  # stored, unused
        ((False, 0.0, 0.0), {}, ("muscle", 0.0, 0.0)),
        ((0, 2.0, 0.1), {}, ("muscle", 2.0, 0.1)),  # int flag in the 5-argument form
        ((1, 2.0, 0.1), {}, ("distance", 2.0, 0.1)),
        # (j0, j1, passive) alone
        ((True,), {}, ("distance", 0.0, 0.0)),
        ((False,), {}, ("muscle", 0.0, 0.0)),
        # keywords
        ((), {"amplitude": 2.5, "phase": 0.5}, ("muscle", 2.5, 0.5)),
        ((), {"amplitude": 2.5}, ("muscle", 2.5, 0.0)),
        ((), {"phase": 0.3}, ("muscle", 0.0, 0.3)),
        ((), {"passive": True}, ("distance", 0.0, 0.0)),
        ((), {"passive": False, "amplitude": 6.0, "phase": 0.2}, ("muscle", 6.0, 0.2)),
        ((), {"passive": True, "amplitude": 6.0}, ("distance", 6.0, 0.0)),
        ((False,), {"amplitude": 7.0, "phase": 0.9}, ("muscle", 7.0, 0.9)),
    ],
)
def test_add_muscle_call_forms(args, kwargs, expected):
    wc, a, b, _ = triangle()
    wc.add_muscle(a, b, *args, **kwargs)
    props = only_link(wc)
    assert (props["type"], props["amplitude"], props["phase"]) == expected
    assert isinstance(props["amplitude"], float) and isinstance(props["phase"], float)


def test_amplitude_and_phase_are_not_swapped():
    """OpenELM's defect: its Muscle swaps amplitude and phase. Ours keeps them apart."""
    wc, a, b, c = triangle()
    wc.add_muscle(a, b, False, 9.0, 0.125)
    wc.add_muscle(b, c, 8.0, 0.375)
    muscles = wc.get_walker().to_dict()["muscles"]
    assert [m[2]["amplitude"] for m in muscles] == [9.0, 8.0]
    assert [m[2]["phase"] for m in muscles] == [0.125, 0.375]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((5.0,), {}, "passive flag"),  # a lone number is ambiguous
        (("x",), {}, "passive must be True or False"),
        ((1, 2, 3, 4), {}, "got 6 arguments"),
        (("big", 0.1), {}, "amplitude must be a number"),
        ((1.0, None), {}, "phase must be a number"),
        ((False, 3.0), {}, "ambiguous"),
        ((2, 1.0, 0.0), {}, "passive must be True or False"),
        ((False, "5", 0.0), {}, "amplitude must be a number"),
        ((), {"amp": 3.0}, "unknown keyword 'amp'"),
        ((3.0, 0.5), {"amplitude": 3.0}, "amplitude given both"),
        ((), {"passive": "no"}, "passive must be True or False"),
        ((), {"amplitude": True}, "amplitude must be a number"),
    ],
)
def test_bad_call_forms_raise_api_error(args, kwargs, match):
    wc, a, b, _ = triangle()
    with pytest.raises(WalkerAPIError, match=match):
        wc.add_muscle(a, b, *args, **kwargs)
    assert wc.get_walker().n_links == 0  # nothing half-added


def test_api_error_is_a_value_error_with_a_code():
    assert issubclass(WalkerAPIError, ValueError)
    assert WalkerAPIError.code == "walker_api_error"


# ----------------------------------------------------------------------------- joints


def test_add_joint_returns_tuple_with_index():
    wc = walker_creator()
    a = wc.add_joint(1, 2)
    b = wc.add_joint(3.5, -4)
    assert isinstance(a, tuple) and isinstance(a, Joint)
    assert a == (1.0, 2.0) and b == (3.5, -4.0)
    assert (a[0], a[1], a.index) == (1.0, 2.0, 0)
    assert (b.x, b.y, b.index) == (3.5, -4.0, 1)
    x, y = b
    assert (x, y) == (3.5, -4.0)
    assert pickle.loads(pickle.dumps(b)).index == 1
    assert wc.get_walker().joints == [(1.0, 2.0), (3.5, -4.0)]  # stored as given, y up


@pytest.mark.parametrize("bad", ["1", None, True, [1], 1j])
def test_add_joint_rejects_non_numbers(bad):
    wc = walker_creator()
    with pytest.raises(WalkerAPIError, match="x must be a number"):
        wc.add_joint(bad, 0)
    with pytest.raises(WalkerAPIError, match="y must be a number"):
        wc.add_joint(0, bad)


def test_joint_handles_by_joint_tuple_list_and_index():
    wc, a, b, c = triangle()
    wc.add_muscle(a, b)  # Joint handles
    wc.add_muscle((4, 0), (2.0, 3.0))  # plain tuples equal to joint coordinates
    wc.add_muscle([2, 3], [0.0, 0.0])  # lists
    wc.add_muscle(0, 2)  # indices
    wc.add_muscle(c, 1)  # mixed
    pairs = [(m[0], m[1]) for m in wc.get_walker().muscles]
    assert pairs == [(0, 1), (1, 2), (2, 0), (0, 2), (2, 1)]


def test_joint_from_another_creator_resolves_by_coordinates():
    _, a1, _, c1 = triangle()
    wc2 = walker_creator()
    wc2.add_joint(2, 3)  # same coordinates as c1, but index 0 here
    wc2.add_joint(9, 9)
    wc2.add_muscle(c1, 1)
    assert wc2.get_walker().muscles[0][:2] == [0, 1]
    with pytest.raises(WalkerAPIError, match="not a joint of this walker"):
        wc2.add_muscle(a1, 1)  # (0, 0) does not exist in wc2


@pytest.mark.parametrize(
    ("joint", "match"),
    [
        (3, r"j1 is index 3, but joints are 0\.\.2"),
        (-1, "j1 is index -1"),
        ((7, 7), r"no joint at j1 \(7, 7\)"),
        ((1, 2, 3), "not an \\(x, y\\) pair"),
        (("a", "b"), "not an \\(x, y\\) pair"),
        ("j0", "must be a joint from add_joint"),
        (None, "must be a joint from add_joint"),
        (True, "got a bool"),
        (2.0, "must be a joint from add_joint"),
    ],
)
def test_unknown_joint_raises_api_error(joint, match):
    wc, a, _, _ = triangle()
    with pytest.raises(WalkerAPIError, match=match):
        wc.add_muscle(a, joint)


def test_index_before_any_joint():
    wc = walker_creator()
    with pytest.raises(WalkerAPIError, match="no joint was added yet"):
        wc.add_muscle(0, 1)


# ----------------------------------------------------------------------------- Walker / dict


def test_to_dict_layout_exactly():
    wc, a, b, c = triangle()
    wc.add_muscle(a, b)
    wc.add_muscle(b, c, 3, 0.5)
    wc.add_muscle(c, a, True, 2.0, 0.25)
    w = wc.get_walker()
    assert w.to_dict() == {
        "joints": [[0.0, 0.0], [4.0, 0.0], [2.0, 3.0]],
        "muscles": [
            [0, 1, {"type": "distance", "amplitude": 0.0, "phase": 0.0}],
            [1, 2, {"type": "muscle", "amplitude": 3.0, "phase": 0.5}],
            [2, 0, {"type": "distance", "amplitude": 2.0, "phase": 0.25}],
        ],
    }
    d = w.to_dict()
    assert list(d) == ["joints", "muscles"]
    for x, y in d["joints"]:
        assert type(x) is float and type(y) is float
    for i, j, props in d["muscles"]:
        assert type(i) is int and type(j) is int
        assert list(props) == ["type", "amplitude", "phase"]
        assert type(props["amplitude"]) is float and type(props["phase"]) is float
    assert (w.n_joints, w.n_links) == (3, 3)


def test_json_round_trip():
    wc, a, b, c = triangle()
    wc.add_muscle(a, b)
    wc.add_muscle(b, c, False, -7.5, 0.8)
    wc.add_muscle(c, a, 1.5, 0.0)
    w = wc.get_walker().validate()
    text = json.dumps(w.to_dict(), allow_nan=False)
    back = Walker.from_dict(json.loads(text))
    assert back == w
    assert back.to_dict() == w.to_dict()


def test_get_walker_is_a_snapshot():
    wc, a, b, c = triangle()
    wc.add_muscle(a, b)
    w = wc.get_walker()
    wc.add_muscle(b, c)
    wc.add_joint(9, 9)
    assert (w.n_joints, w.n_links) == (3, 1)
    w.to_dict()["muscles"][0][2]["type"] = "muscle"  # to_dict returns copies
    assert w.muscles[0][2]["type"] == "distance"


def test_from_dict_accepts_ints_and_missing_amplitude_phase():
    w = Walker.from_dict({"joints": [[0, 0], [1, 0]], "muscles": [[0, 1, {"type": "distance"}]]})
    assert w.to_dict()["muscles"] == [[0, 1, {"type": "distance", "amplitude": 0.0, "phase": 0.0}]]
    assert w.joints == [(0.0, 0.0), (1.0, 0.0)]


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
    with pytest.raises(api.MalformedWalker, match=match) as info:
        Walker.from_dict(d)
    assert info.value.code == "malformed"
    assert isinstance(info.value, WalkerValidationError)


# ----------------------------------------------------------------------------- validation

_TOO_MANY_PER_JOINT = walker_dict(
    [(0, 0)] + [(2 * math.cos(k / 2), 2 * math.sin(k / 2)) for k in range(11)],
    [link(0, k) for k in range(1, 12)],
)

VALIDATION_CASES = [
    # (error class, code, walker dict, regex the message must match)
    (api.EmptyWalker, "empty_walker", walker_dict([], []), "no joints"),
    (api.NoLinks, "no_links", walker_dict(TWO, []), "2 joints but no links"),
    (
        api.TooManyJoints,
        "too_many_joints",
        walker_dict([(k, 0) for k in range(65)], [link(0, 1)]),
        r"65 joints \(limit 64\)",
    ),
    (
        api.TooManyLinks,
        "too_many_links",
        walker_dict(TWO, [link(0, 1)] * 257),
        r"257 links \(limit 256\)",
    ),
    (
        api.TooManyLinksPerJoint,
        "too_many_links_per_joint",
        _TOO_MANY_PER_JOINT,
        r"^joint 0 has 11 links \(limit 10\)$",
    ),
    (
        api.AmplitudeTooLarge,
        "amplitude_too_large",
        walker_dict([*TWO, (0, 1)], [link(0, 1), link(1, 2, "muscle", -10.5, 0.2)]),
        r"link 1 is a muscle with amplitude -10\.5",
    ),
    (
        api.JointsTooClose,
        "joints_too_close",
        walker_dict([(0, 0), (5, 5), (5.05, 5)], [link(0, 1)]),
        r"joints 1 and 2 are 0\.05 apart \(minimum 0\.1\)",
    ),
    (
        api.SelfLink,
        "self_link",
        walker_dict(TWO, [link(0, 1), link(1, 1)]),
        "link 1 joins joint 1 to itself",
    ),
    (
        api.MissingJoint,
        "missing_joint",
        walker_dict(TWO, [link(0, 1), link(0, 2)]),
        r"link 1 refers to joint 2, but joints are 0\.\.1",
    ),
    (
        api.MissingJoint,
        "missing_joint",
        walker_dict(TWO, [link(-1, 1)]),
        "link 0 refers to joint -1",
    ),
    (
        api.NonFiniteValue,
        "non_finite_value",
        walker_dict([(0, 0), (1, math.nan)], [link(0, 1)]),
        r"joint 1 is at \(1\.0, nan\)",
    ),
    (
        api.NonFiniteValue,
        "non_finite_value",
        walker_dict(TWO, [link(0, 1, "distance", 0.0, math.inf)]),
        "link 0 has phase inf",
    ),
    (
        api.CoordinateOutOfRange,
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
    # and so does the sandbox's parent-side check, its one-pass shortcut included
    with pytest.raises(cls, match=match):
        api.validate_walker(d)


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


def test_error_classes_have_distinct_stable_codes():
    classes = {c[0] for c in VALIDATION_CASES} | {api.MalformedWalker}
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)) == 12


def test_errors_pickle_with_details():
    with pytest.raises(api.TooManyLinksPerJoint) as info:
        Walker.from_dict(_TOO_MANY_PER_JOINT)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is api.TooManyLinksPerJoint
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
    with pytest.raises(api.TooManyJoints):
        Walker.from_dict(d, WalkerLimits(max_joints=2))
    with pytest.raises(api.TooManyLinks):
        Walker.from_dict(d, WalkerLimits(max_links=1))
    with pytest.raises(api.TooManyLinksPerJoint, match="joint 1 has 2 links"):
        Walker.from_dict(d, WalkerLimits(max_links_per_joint=1))
    with pytest.raises(api.AmplitudeTooLarge):
        Walker.from_dict(d, WalkerLimits(max_amplitude=2.0))
    with pytest.raises(api.JointsTooClose, match="joints 0 and 1"):
        Walker.from_dict(d, WalkerLimits(min_joint_distance=2.5))
    with pytest.raises(api.CoordinateOutOfRange, match="joint 2"):
        Walker.from_dict(d, WalkerLimits(max_abs_coordinate=3.0))
    Walker.from_dict(d, WalkerLimits(min_joint_distance=0.0))


def test_spacing_check_finds_close_pairs_anywhere():
    """The grid-based spacing check agrees with the naive O(n^2) check."""
    limits = WalkerLimits(min_joint_distance=1.0)
    joints = [(float(x), float(y)) for x in range(-5, 5) for y in range(0, 6)]
    for bad in [(0.3, 0.7), (-4.99, 5.5), (4.6, 0.2), (-0.01, -0.01)]:
        d = walker_dict([*joints, bad], [link(0, 1)])
        with pytest.raises(api.JointsTooClose):
            Walker.from_dict(d, limits)
    Walker.from_dict(walker_dict(joints, [link(0, 1)]), limits)  # spacing exactly 1.0


def test_a_million_joints_fail_fast():
    d = {"joints": [[float(k), 0.0] for k in range(1_000_000)], "muscles": [link(0, 1)]}
    t0 = time.perf_counter()
    with pytest.raises(api.TooManyJoints, match="1000000 joints"):
        Walker.from_dict(d)
    with pytest.raises(api.TooManyJoints):
        Walker(d["joints"][:100_000], d["muscles"]).validate()
    assert time.perf_counter() - t0 < 1.0


def test_validate_rejects_garbage_in_a_constructed_walker():
    w = Walker(TWO, [link(0, 1)])
    w.muscles.append("not a link")
    with pytest.raises(api.MalformedWalker, match="link 1 must be"):
        w.validate()


def test_default_limits_values():
    expected = WalkerLimits(
        max_links_per_joint=10,
        max_amplitude=10.0,
        min_joint_distance=0.1,
        max_joints=64,
        max_links=256,
        max_abs_coordinate=100.0,
    )
    assert expected == DEFAULT_LIMITS
    with pytest.raises(AttributeError):
        DEFAULT_LIMITS.max_joints = 3  # frozen
    assert pickle.loads(pickle.dumps(DEFAULT_LIMITS)) == DEFAULT_LIMITS


def test_module_is_pure_stdlib():
    """Sandbox workers import walker_api: it must not pull in numpy or jax."""
    # Load the file itself (not through the package) so only this module is judged.
    code = (
        "import importlib.util as u, sys; "
        f"s = u.spec_from_file_location('walker_api', {api.__file__!r}); "
        "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); "
        "print(','.join(x for x in ('numpy', 'jax', 'jelm') if x in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------------------- strategy


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
