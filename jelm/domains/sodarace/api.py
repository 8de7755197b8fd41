"""The Sodarace walker API that ELM programs call, the ``Walker`` they return, and validation.

The API and the validation rules are those of the ELM paper's Sodarace appendix
(Lehman et al., 2022, "Evolution through Large Models", arXiv 2206.08896). A program
builds a walker ("Sodaracer") out of joints (point masses) and links between them::

    from jelm.domains.sodarace.api import walker_creator

    def make_walker():
        wc = walker_creator()
        j0 = wc.add_joint(0, 0)
        j1 = wc.add_joint(5, 5)
        wc.add_muscle(j0, j1)                     # a passive bone
        wc.add_muscle(j0, j1, False, 5.0, 0.25)   # the paper's form: an active muscle
        return wc.get_walker()

``add_muscle`` accepts every published call form:

* ``add_muscle(j0, j1)``: a passive bone (the paper's ``"distance"`` link type).
* ``add_muscle(j0, j1, amplitude, phase)`` (OpenELM's form): a muscle iff
  ``amplitude != 0`` or ``phase != 0``, else a bone.
* ``add_muscle(j0, j1, passive, amplitude, phase)`` (the paper's form): ``passive`` is a
  bool (an int 0/1 is accepted in this position); ``True`` gives a bone that stores
  amplitude and phase without using them, ``False`` a muscle.
* ``add_muscle(j0, j1, passive)`` with a bool alone: a bone, or a muscle of amplitude 0.
* keywords ``amplitude=``, ``phase=``, ``passive=`` (alone or completing the positional
  forms above; naming a parameter twice is an error).

A joint argument is a ``Joint`` returned by ``add_joint`` (a ``tuple`` ``(x, y)`` that also
knows its ``.index``), a plain ``(x, y)`` tuple or list equal to an existing joint's
coordinates (the first such joint), or an int index. Anything else raises
``WalkerAPIError`` when the call is made, naming the argument.

Units and semantics. Coordinates are program units with y pointing up, stored as given
(as floats); the simulator places the walker on its terrain. A link's ``amplitude`` is the
paper's raw value (muscles are limited to ``|amplitude| <= 10``) and ``phase`` is in
cycles (a fraction of one period; the simulator multiplies it by 2*pi). Both are stored
exactly as the program gave them; how amplitude maps to a change of the link's length is
``jelm.sim``'s business, not this module's. Bones keep whatever amplitude and phase they
were given (only their finiteness is checked), so a walker survives a round trip intact.

The dict layout (``Walker.to_dict``; what the sandbox returns, the ledger stores and
``jelm.sim`` packs) is the paper's::

    {"joints": [[x, y], ...],
     "muscles": [[i, j, {"type": "distance" | "muscle", "amplitude": a, "phase": p}], ...]}

Validation (``Walker.validate``, ``Walker.from_dict``) follows the paper (at most 10 links
per joint, muscle amplitude at most 10, a minimum distance between joints, a non-empty
walker, no self-links, links only between existing joints) and adds hard caps on the
numbers of joints and links (the padded size of a simulator batch), finite numbers,
coordinates within a box, and at least one link. Counts are checked before anything that
walks the entries, so a walker of a million joints is refused at once. Every failure is its
own subclass of ``WalkerValidationError`` with a stable ``code`` that the sandbox and the
ledger record.

A defect jelm avoids: OpenELM's ``Muscle`` dataclass swaps amplitude and phase when it
builds muscles (so its square seed, whose phases are all 0, never moves). Here the
amplitude is always the amplitude and the phase the phase, in every call form.

This module is pure standard-library Python (no numpy, no jax): sandbox worker processes
import it and must start fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_LIMITS",
    "AmplitudeTooLarge",
    "CoordinateOutOfRange",
    "EmptyWalker",
    "Joint",
    "JointsTooClose",
    "MalformedWalker",
    "MissingJoint",
    "NoLinks",
    "NonFiniteValue",
    "SelfLink",
    "TooManyJoints",
    "TooManyLinks",
    "TooManyLinksPerJoint",
    "Walker",
    "WalkerAPIError",
    "WalkerLimits",
    "WalkerValidationError",
    "encode_walker",
    "validate_walker",
    "walker_creator",
]

BONE = "distance"
MUSCLE = "muscle"
LINK_TYPES = (BONE, MUSCLE)


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class WalkerLimits:
    """What a valid walker must respect.

    Attributes:
        max_links_per_joint: most links touching one joint (the paper's 10).
        max_amplitude: largest ``|amplitude|`` of a muscle (the paper's 10). Bones are
            exempt: they store an amplitude but never use it.
        min_joint_distance: smallest allowed distance between two joints; a distance equal
            to it is allowed. 0 or less turns the check off.
        max_joints: most joints (the simulator's padded joint count).
        max_links: most links (the simulator's padded link count).
        max_abs_coordinate: every coordinate must satisfy ``|x|, |y| <= max_abs_coordinate``.
    """

    max_links_per_joint: int = 10
    max_amplitude: float = 10.0
    min_joint_distance: float = 0.1
    max_joints: int = 64
    max_links: int = 256
    max_abs_coordinate: float = 100.0


DEFAULT_LIMITS = WalkerLimits()


# --------------------------------------------------------------------------- errors


class WalkerAPIError(ValueError):
    """A program called the walker API wrongly (bad arity, bad argument, unknown joint)."""

    code = "walker_api_error"


class WalkerValidationError(ValueError):
    """A walker breaks a validation rule. Subclasses name the rule; ``code`` is stable.

    ``str(exc)`` says what and where, e.g. ``joint 3 has 12 links (limit 10)``; extra
    keyword details (``joint=3``, ``link=7``...) are kept in ``exc.info``.
    """

    code = "invalid_walker"

    def __init__(self, message: str, **info: Any):
        super().__init__(message)
        self.info = info

    def __reduce__(self):  # keep ``info`` across pickling (process pools)
        return (_rebuild_error, (type(self), str(self), self.info))


def _rebuild_error(cls: type, message: str, info: dict) -> WalkerValidationError:
    return cls(message, **info)


class MalformedWalker(WalkerValidationError):
    """The walker (or its dict) does not have the paper's structure."""

    code = "malformed"


class EmptyWalker(WalkerValidationError):
    """The walker has no joints."""

    code = "empty_walker"


class NoLinks(WalkerValidationError):
    """The walker has joints but no links."""

    code = "no_links"


class TooManyJoints(WalkerValidationError):
    """More joints than ``max_joints``."""

    code = "too_many_joints"


class TooManyLinks(WalkerValidationError):
    """More links than ``max_links``."""

    code = "too_many_links"


class TooManyLinksPerJoint(WalkerValidationError):
    """A joint touches more than ``max_links_per_joint`` links."""

    code = "too_many_links_per_joint"


class AmplitudeTooLarge(WalkerValidationError):
    """A muscle's ``|amplitude|`` exceeds ``max_amplitude``."""

    code = "amplitude_too_large"


class JointsTooClose(WalkerValidationError):
    """Two joints are closer than ``min_joint_distance``."""

    code = "joints_too_close"


class SelfLink(WalkerValidationError):
    """A link joins a joint to itself."""

    code = "self_link"


class MissingJoint(WalkerValidationError):
    """A link refers to a joint that does not exist."""

    code = "missing_joint"


class NonFiniteValue(WalkerValidationError):
    """A coordinate, amplitude or phase is NaN or infinite."""

    code = "non_finite_value"


class CoordinateOutOfRange(WalkerValidationError):
    """A coordinate lies outside ``[-max_abs_coordinate, max_abs_coordinate]``."""

    code = "coordinate_out_of_range"


# --------------------------------------------------------------------------- helpers


def _is_number(value: Any) -> bool:
    """A real number as programs write them: int or float, but not bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = f"<{_type_name(value)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- Joint


class Joint(tuple):
    """A joint handle: the tuple ``(x, y)`` plus the joint's ``index`` in its walker.

    Program code may read ``j[0]``, ``j[1]``, unpack ``x, y = j`` and compare it with
    plain tuples. Note that ``index`` is the joint's number, an int; it shadows
    ``tuple.index`` (the method), which joints do not need.
    """

    def __new__(cls, x: float, y: float, index: int) -> Joint:
        self = super().__new__(cls, (x, y))
        self._index = index
        return self

    @property
    def index(self) -> int:  # type: ignore[override]
        """The joint's position in ``Walker.joints`` (0-based)."""
        return self._index

    @property
    def x(self) -> float:
        return self[0]

    @property
    def y(self) -> float:
        return self[1]

    def __getnewargs__(self) -> tuple[float, float, int]:
        return (self[0], self[1], self._index)

    def __repr__(self) -> str:
        return f"Joint({self[0]!r}, {self[1]!r}, index={self._index})"


# --------------------------------------------------------------------------- creator

_KEYWORDS = ("passive", "amplitude", "phase")


class walker_creator:  # the paper's lower-case name, which programs use
    """Builds a walker joint by joint and link by link (the paper's API).

    ``get_walker`` does not validate: the caller validates against the limits it runs
    under (the sandbox does, and ``Walker.validate`` / ``seed_walker`` can).
    """

    def __init__(self) -> None:
        self._joints: list[tuple[float, float]] = []
        self._muscles: list[list] = []
        self._index_of: dict[tuple[float, float], int] = {}

    def add_joint(self, x: float, y: float) -> Joint:
        """Add a joint at ``(x, y)`` (y up) and return its handle."""
        for name, value in (("x", x), ("y", y)):
            if not _is_number(value):
                raise WalkerAPIError(
                    f"add_joint: {name} must be a number, got {_type_name(value)} {_short(value)}"
                )
        try:
            fx, fy = float(x), float(y)
        except OverflowError:
            raise WalkerAPIError(f"add_joint: coordinate ({x}, {y}) is too large") from None
        index = len(self._joints)
        self._joints.append((fx, fy))
        self._index_of.setdefault((fx, fy), index)
        return Joint(fx, fy, index)

    def _resolve(self, joint: Any, which: str) -> int:
        """The index of a joint argument (Joint, (x, y) pair or int index)."""
        n = len(self._joints)
        if isinstance(joint, Joint):
            i = joint.index
            if 0 <= i < n and self._joints[i] == tuple(joint):
                return i
            found = self._index_of.get(tuple(joint))
            if found is not None:
                return found
            raise WalkerAPIError(
                f"add_muscle: {which} {_short(joint)} is not a joint of this walker "
                f"(it has {n} joints)"
            )
        if isinstance(joint, bool):
            raise WalkerAPIError(f"add_muscle: {which} must be a joint, got a bool")
        if isinstance(joint, int):
            if 0 <= joint < n:
                return joint
            raise WalkerAPIError(
                f"add_muscle: {which} is index {joint}, but joints are 0..{n - 1}"
                if n
                else f"add_muscle: {which} is index {joint}, but no joint was added yet"
            )
        if isinstance(joint, (tuple, list)):
            if len(joint) != 2 or not all(_is_number(c) for c in joint):
                raise WalkerAPIError(
                    f"add_muscle: {which} {_short(joint)} is not an (x, y) pair of numbers"
                )
            try:
                key = (float(joint[0]), float(joint[1]))
            except OverflowError:
                key = None
            found = self._index_of.get(key) if key is not None else None
            if found is None:
                raise WalkerAPIError(f"add_muscle: no joint at {which} {_short(joint)}")
            return found
        raise WalkerAPIError(
            f"add_muscle: {which} must be a joint from add_joint, an (x, y) pair or an "
            f"index, got {_type_name(joint)} {_short(joint)}"
        )

    def add_muscle(self, j0: Any, j1: Any, *args: Any, **kwargs: Any) -> None:
        """Link joints ``j0`` and ``j1`` with a bone or a muscle (see the module docstring
        for the call forms)."""
        i = self._resolve(j0, "j0")
        j = self._resolve(j1, "j1")
        params = _parse_link_params(args, kwargs)
        passive, amplitude, phase = params["passive"], params["amplitude"], params["phase"]
        # With no passive flag (OpenELM's form) a link with any motion is a muscle.
        muscle = (amplitude != 0 or phase != 0) if passive is None else not passive
        self._muscles.append(
            [i, j, {"type": MUSCLE if muscle else BONE, "amplitude": amplitude, "phase": phase}]
        )

    def get_walker(self) -> Walker:
        """The walker built so far (a snapshot; later calls do not change it)."""
        return Walker(self._joints, self._muscles)


def _parse_link_params(args: tuple, kwargs: dict) -> dict[str, Any]:
    """``add_muscle``'s extra arguments -> ``{passive, amplitude, phase}``."""
    if len(args) == 0:
        names: tuple[str, ...] = ()
    elif len(args) == 1:
        names = ("passive",)
    elif len(args) == 2:
        names = ("amplitude", "phase")
    elif len(args) == 3:
        names = ("passive", "amplitude", "phase")
    else:
        raise WalkerAPIError(
            f"add_muscle takes (j0, j1), (j0, j1, amplitude, phase) or "
            f"(j0, j1, passive, amplitude, phase); got {2 + len(args)} arguments"
        )
    given: dict[str, Any] = dict(zip(names, args, strict=True))
    for key, value in kwargs.items():
        if key not in _KEYWORDS:
            raise WalkerAPIError(
                f"add_muscle: unknown keyword {key!r} (expected passive, amplitude, phase)"
            )
        if key in given:
            raise WalkerAPIError(f"add_muscle: {key} given both by position and by keyword")
        given[key] = value

    passive = given.get("passive")
    if "passive" in given:
        ok = isinstance(passive, bool) or (
            len(args) == 3 and isinstance(passive, int) and passive in (0, 1)
        )
        if not ok:
            hint = (
                "; a single extra argument must be the passive flag (True/False) -- use "
                "(j0, j1, amplitude, phase) or amplitude=... for a muscle"
                if len(args) == 1
                else ""
            )
            raise WalkerAPIError(
                f"add_muscle: passive must be True or False, got {_type_name(passive)} "
                f"{_short(passive)}{hint}"
            )
        passive = bool(passive)
    if len(args) == 2 and isinstance(args[0], bool):
        raise WalkerAPIError(
            "add_muscle: (j0, j1, <bool>, x) is ambiguous; use (j0, j1, passive, amplitude, "
            "phase) or (j0, j1, amplitude, phase)"
        )
    out: dict[str, Any] = {"passive": passive}
    for key in ("amplitude", "phase"):
        value = given.get(key, 0.0)
        if not _is_number(value):
            raise WalkerAPIError(
                f"add_muscle: {key} must be a number, got {_type_name(value)} {_short(value)}"
            )
        try:
            out[key] = float(value)
        except OverflowError:
            raise WalkerAPIError(f"add_muscle: {key} {value} is too large") from None
    return out


# --------------------------------------------------------------------------- Walker


class Walker:
    """A Sodaracer: ``joints`` as ``(x, y)`` tuples and ``muscles`` in the paper's layout
    ``[i, j, {"type": "distance" | "muscle", "amplitude": a, "phase": p}]``.

    Construct it with ``walker_creator().get_walker()`` or ``Walker.from_dict``; the
    constructor copies its inputs but does not validate (call ``validate``).
    """

    __slots__ = ("joints", "muscles")

    def __init__(self, joints: Any = (), muscles: Any = ()):
        self.joints: list[tuple[float, float]] = [tuple(p) for p in joints]
        self.muscles: list[list] = [
            [m[0], m[1], dict(m[2])] if _is_link_like(m) else m for m in muscles
        ]

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    @property
    def n_links(self) -> int:
        return len(self.muscles)

    def to_dict(self) -> dict[str, list]:
        """The paper's JSON-serialisable layout, with plain floats and ints."""
        return {
            "joints": [[float(x), float(y)] for x, y in self.joints],
            "muscles": [
                [
                    int(i),
                    int(j),
                    {
                        "type": str(p["type"]),
                        "amplitude": float(p.get("amplitude", 0.0)),
                        "phase": float(p.get("phase", 0.0)),
                    },
                ]
                for i, j, p in self.muscles
            ],
        }

    @classmethod
    def from_dict(cls, d: Any, limits: WalkerLimits = DEFAULT_LIMITS) -> Walker:
        """Parse and validate a dict in the ``to_dict`` layout.

        ``amplitude`` and ``phase`` may be omitted from a link (they default to 0);
        ``type`` may not. Raises ``MalformedWalker`` (naming the entry) for a wrong
        structure, or the ``WalkerValidationError`` subclass of the first broken rule.
        """
        if not isinstance(d, dict):
            raise MalformedWalker(f"a walker dict must be a dict, got {_type_name(d)}")
        extra = sorted(str(k) for k in d if k not in ("joints", "muscles"))
        if extra:
            raise MalformedWalker(f"walker dict has unknown keys {extra}")
        if "joints" not in d or "muscles" not in d:
            raise MalformedWalker("walker dict needs both 'joints' and 'muscles'")
        joints_in, links_in = d["joints"], d["muscles"]
        for key, value in (("joints", joints_in), ("muscles", links_in)):
            if not isinstance(value, (list, tuple)):
                raise MalformedWalker(f"'{key}' must be a list, got {_type_name(value)}")
        _check_counts(len(joints_in), len(links_in), limits)  # before touching entries
        joints = [_parse_joint(k, p) for k, p in enumerate(joints_in)]
        muscles = [_parse_link(k, m) for k, m in enumerate(links_in)]
        walker = cls.__new__(cls)
        walker.joints, walker.muscles = joints, muscles
        walker.validate(limits)
        return walker

    def validate(self, limits: WalkerLimits = DEFAULT_LIMITS) -> Walker:
        """Raise the ``WalkerValidationError`` of the first broken rule; return ``self``.

        Order: structure, counts (joints, links, at least one of each), finite values,
        coordinate range, link endpoints (missing joint, self-link), links per joint,
        muscle amplitude, joint spacing.
        """
        joints, links = self.joints, self.muscles
        if not isinstance(joints, list) or not isinstance(links, list):
            raise MalformedWalker("Walker.joints and Walker.muscles must be lists")
        _check_counts(len(joints), len(links), limits)
        # Work on normalised copies (plain floats and ints) so every check below sees
        # exactly what ``to_dict`` would emit.
        joints = [_parse_joint(k, p) for k, p in enumerate(joints)]
        links = [_parse_link(k, m) for k, m in enumerate(links)]
        n = len(joints)
        for k, (x, y) in enumerate(joints):
            if not (math.isfinite(x) and math.isfinite(y)):
                raise NonFiniteValue(f"joint {k} is at ({x}, {y})", joint=k)
        for k, (_, _, p) in enumerate(links):
            for key in ("amplitude", "phase"):
                value = p[key]
                if not math.isfinite(value):
                    raise NonFiniteValue(f"link {k} has {key} {value}", link=k)
        bound = limits.max_abs_coordinate
        for k, (x, y) in enumerate(joints):
            if abs(x) > bound or abs(y) > bound:
                raise CoordinateOutOfRange(
                    f"joint {k} is at ({x}, {y}); coordinates must lie within +-{bound}",
                    joint=k,
                )
        degree = [0] * n
        for k, (i, j, _) in enumerate(links):
            for end in (i, j):
                if not 0 <= end < n:
                    raise MissingJoint(
                        f"link {k} refers to joint {end}, but joints are 0..{n - 1}",
                        link=k,
                        joint=end,
                    )
            if i == j:
                raise SelfLink(f"link {k} joins joint {i} to itself", link=k, joint=i)
            degree[i] += 1
            degree[j] += 1
        cap = limits.max_links_per_joint
        for k, deg in enumerate(degree):
            if deg > cap:
                raise TooManyLinksPerJoint(
                    f"joint {k} has {deg} links (limit {cap})", joint=k, links=deg
                )
        amp_cap = limits.max_amplitude
        for k, (_, _, p) in enumerate(links):
            a = p["amplitude"]
            if p["type"] == MUSCLE and abs(a) > amp_cap:
                raise AmplitudeTooLarge(
                    f"link {k} is a muscle with amplitude {a} (limit {amp_cap} in absolute value)",
                    link=k,
                )
        _check_spacing(joints, limits.min_joint_distance)
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Walker):
            return NotImplemented
        return self.joints == other.joints and self.muscles == other.muscles

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        n_muscles = sum(1 for m in self.muscles if _is_link_like(m) and m[2].get("type") == MUSCLE)
        return f"Walker({self.n_joints} joints, {self.n_links} links, {n_muscles} muscles)"


def _is_link_like(m: Any) -> bool:
    return isinstance(m, (list, tuple)) and len(m) == 3 and isinstance(m[2], dict)


def _check_counts(n_joints: int, n_links: int, limits: WalkerLimits) -> None:
    if n_joints == 0:
        raise EmptyWalker("walker has no joints")
    if n_joints > limits.max_joints:
        raise TooManyJoints(
            f"walker has {n_joints} joints (limit {limits.max_joints})", joints=n_joints
        )
    if n_links > limits.max_links:
        raise TooManyLinks(f"walker has {n_links} links (limit {limits.max_links})", links=n_links)
    if n_links == 0:
        raise NoLinks(f"walker has {n_joints} joints but no links")


def _parse_joint(k: int, p: Any) -> tuple[float, float]:
    if (
        not isinstance(p, (list, tuple))
        or len(p) != 2
        or not (_is_number(p[0]) and _is_number(p[1]))
    ):
        raise MalformedWalker(f"joint {k} must be an [x, y] pair of numbers, got {_short(p)}")
    try:
        return (float(p[0]), float(p[1]))
    except OverflowError:
        raise CoordinateOutOfRange(f"joint {k} is at {_short(p)}", joint=k) from None


def _parse_link(k: int, m: Any) -> list:
    shape = '[i, j, {"type": ..., "amplitude": ..., "phase": ...}]'
    if not _is_link_like(m):
        raise MalformedWalker(f"link {k} must be {shape}, got {_short(m)}")
    i, j, props = m
    for end in (i, j):
        if not isinstance(end, int) or isinstance(end, bool):
            raise MalformedWalker(f"link {k} must join two int joint indices, got {_short(m)}")
    unknown = sorted(str(key) for key in props if key not in ("type", "amplitude", "phase"))
    if unknown:
        raise MalformedWalker(f"link {k} has unknown keys {unknown}")
    kind = props.get("type")
    if kind not in LINK_TYPES:
        raise MalformedWalker(f"link {k} has type {_short(kind)}; expected 'distance' or 'muscle'")
    out: dict[str, Any] = {"type": kind}
    for key in ("amplitude", "phase"):
        value = props.get(key, 0.0)
        if not _is_number(value):
            raise MalformedWalker(f"link {k} has a non-numeric {key}: {_short(value)}")
        try:
            out[key] = float(value)
        except OverflowError:
            raise NonFiniteValue(f"link {k} has {key} {value}", link=k) from None
    return [int(i), int(j), out]


def _check_spacing(joints: list[tuple[float, float]], min_distance: float) -> None:
    """Raise ``JointsTooClose`` for the first pair closer than ``min_distance``.

    A grid of cells of side ``min_distance`` makes this linear in the number of joints:
    a too-close pair lies in the same or a neighbouring cell.
    """
    if min_distance <= 0:
        return
    cells: dict[tuple[int, int], list[int]] = {}
    for k, (x, y) in enumerate(joints):
        cx, cy = math.floor(x / min_distance), math.floor(y / min_distance)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for other in cells.get((cx + dx, cy + dy), ()):
                    ox, oy = joints[other]
                    dist = math.hypot(x - ox, y - oy)
                    if dist < min_distance:
                        raise JointsTooClose(
                            f"joints {other} and {k} are {dist:.6g} apart (minimum {min_distance})",
                            joints=(other, k),
                        )
        cells.setdefault((cx, cy), []).append(k)


def encode_walker(value: Any, limits: WalkerLimits = DEFAULT_LIMITS) -> dict[str, list]:
    """What ``make_walker()`` returned, as the plain dict the sandbox sends back.

    Runs in the sandbox (the Sodarace domain's ``ProgramSpec.encode``): a value that is
    not a :class:`Walker` is a ``TypeError``; a walker far over the count caps, or one
    holding a non-finite number, raises the ``WalkerValidationError`` of its broken rule
    (the parent validates every walker in full again, so nothing else is checked here).
    """
    if not isinstance(value, Walker):
        raise TypeError(f"make_walker() returned {_type_name(value)}, not a Walker")
    n_joints, n_links = len(value.joints), len(value.muscles)
    if not (0 < n_joints <= limits.max_joints and 0 < n_links <= limits.max_links):
        value.validate(limits)
    try:
        plain = value.to_dict()
    except Exception:
        value.validate(limits)  # names the broken rule
        raise
    numbers = [v for p in plain["joints"] for v in p]
    numbers += [v for m in plain["muscles"] for v in (m[2]["amplitude"], m[2]["phase"])]
    if not all(map(math.isfinite, numbers)):
        value.validate(limits)
    return plain


def validate_walker(raw: Any, limits: WalkerLimits = DEFAULT_LIMITS) -> dict[str, list]:
    """A walker dict from untrusted data, checked and in canonical form (the Sodarace
    domain's ``ProgramSpec.validate``).

    The same checks and errors as ``Walker.from_dict(raw, limits).to_dict()``. For the
    usual shape (a dict of exactly two lists) it skips ``from_dict``'s first pass over the
    entries: ``validate`` parses every entry (raising ``MalformedWalker`` for a bad one)
    before it checks the rules, so the result is the same at half the cost.
    """
    if (
        type(raw) is dict
        and len(raw) == 2
        and type(raw.get("joints")) is list
        and type(raw.get("muscles")) is list
    ):
        walker = Walker.__new__(Walker)
        walker.joints, walker.muscles = raw["joints"], raw["muscles"]
        return walker.validate(limits).to_dict()
    return Walker.from_dict(raw, limits).to_dict()
