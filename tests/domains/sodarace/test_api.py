"""Tests for jelm.domains.sodarace.api: the paper's walker API (§4), its call forms and
the ``Walker`` it returns, and what the sandbox calls (``encode_walker``)."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from jelm.domains.sodarace import LEGACY_API, api, errors, limits
from jelm.domains.sodarace.api import (
    Joint,
    Walker,
    WalkerAPIError,
    WalkerLimits,
    walker_creator,
)

PACKAGE = "jelm.domains.sodarace"

# ---------------------------------------------------------------------- helpers


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


# ------------------------------------------------------------------- add_muscle


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


# ----------------------------------------------------------------------- joints


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


# ---------------------------------------------------------------- Walker / dict


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


def test_encode_walker_is_the_plain_dict():
    wc, a, b, c = triangle()
    wc.add_muscle(a, b)
    wc.add_muscle(b, c, 3, 0.5)
    walker = wc.get_walker()
    assert api.encode_walker(walker) == walker.to_dict()
    with pytest.raises(TypeError, match="make_walker\\(\\) returned dict, not a Walker"):
        api.encode_walker(walker.to_dict())
    # the rule a walker breaks is named when it is over the caps or holds a non-finite number
    with pytest.raises(errors.TooManyJoints):
        api.encode_walker(walker, WalkerLimits(max_joints=2))
    wc.add_muscle(c, a, 1.0, math.inf)
    with pytest.raises(errors.NonFiniteValue, match="link 2 has phase inf"):
        api.encode_walker(wc.get_walker())


# ------------------------------------------------------------------- the module


def test_api_exposes_its_names_and_the_limits_and_errors():
    """Everything of ``__all__`` is importable from the API module; the limits and errors
    are the very objects of their home modules (so ``except`` and ``isinstance`` agree)."""
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    for home in (limits, errors):
        for name in set(api.__all__) & set(home.__all__):
            assert getattr(api, name) is getattr(home, name), name
    assert {"walker_creator", "Walker", "WalkerLimits", "WalkerValidationError"} <= set(api.__all__)
    # programs importing the API under its older name get the same module
    assert sys.modules[LEGACY_API] is api


def test_module_is_pure_stdlib():
    """Sandbox workers import the walker API: it and its sibling modules must not pull in
    numpy, jax or the rest of jelm."""
    # Stand-in packages, so that importing the API loads only the API and what it imports.
    here = Path(api.__file__).parent
    packages = {"jelm": here.parent.parent, "jelm.domains": here.parent, PACKAGE: here}
    code = (
        "import sys, types\n"
        f"for name, path in {[(name, str(path)) for name, path in packages.items()]!r}:\n"
        "    m = sys.modules[name] = types.ModuleType(name); m.__path__ = [path]\n"
        f"import {PACKAGE}.api\n"
        "stdlib = {*sys.stdlib_module_names, '__main__'}\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] not in stdlib]\n"
        "print(','.join(sorted(loaded)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().split(",") == [
        "jelm",
        "jelm.domains",
        PACKAGE,
        f"{PACKAGE}.api",
        f"{PACKAGE}.errors",
        f"{PACKAGE}.limits",
        f"{PACKAGE}.validation",
    ]
