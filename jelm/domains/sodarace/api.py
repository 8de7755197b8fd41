"""The Sodarace walker API that ELM programs call, and the ``Walker`` they return (ELM,
arXiv 2206.08896v1, §4 and its Sodarace appendix).

A program builds a walker ("Sodaracer") out of joints (point masses) and links between them::

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

Coordinates are program units with y pointing up. A link's ``amplitude`` is the paper's
raw value (a muscle's is limited to ``|amplitude| <= 10``) and ``phase`` is in cycles (a
fraction of one period); both are stored exactly as given, a bone's too, so a walker
survives a round trip intact. How they move the walker is ``jelm.sim``'s business. The
dict layout (``Walker.to_dict``; what the sandbox returns, the ledger stores and
``jelm.sim`` packs) is the paper's::

    {"joints": [[x, y], ...],
     "muscles": [[i, j, {"type": "distance" | "muscle", "amplitude": a, "phase": p}], ...]}

The limits (:mod:`.limits`) and the errors (:mod:`.errors`) are importable from here too;
the rules ``Walker.validate`` checks are :mod:`.validation`'s. Standard library only:
sandbox workers import this module and must start fast.
"""

from __future__ import annotations

import math
from typing import Any

from jelm.domains.sodarace.errors import (
    AmplitudeTooLarge,
    CoordinateOutOfRange,
    EmptyWalker,
    JointsTooClose,
    MalformedWalker,
    MissingJoint,
    NoLinks,
    NonFiniteValue,
    SelfLink,
    TooManyJoints,
    TooManyLinks,
    TooManyLinksPerJoint,
    WalkerAPIError,
    WalkerValidationError,
    short_repr,
    type_name,
)
from jelm.domains.sodarace.limits import DEFAULT_LIMITS, WalkerLimits
from jelm.domains.sodarace.validation import (
    BONE,
    MUSCLE,
    check_walker,
    is_link_like,
    is_number,
    parse_walker_dict,
)

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
            if not is_number(value):
                raise WalkerAPIError(
                    f"add_joint: {name} must be a number, got {type_name(value)} "
                    f"{short_repr(value)}"
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
                f"add_muscle: {which} {short_repr(joint)} is not a joint of this walker "
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
            if len(joint) != 2 or not all(is_number(c) for c in joint):
                raise WalkerAPIError(
                    f"add_muscle: {which} {short_repr(joint)} is not an (x, y) pair of numbers"
                )
            try:
                key = (float(joint[0]), float(joint[1]))
            except OverflowError:
                key = None
            found = self._index_of.get(key) if key is not None else None
            if found is None:
                raise WalkerAPIError(f"add_muscle: no joint at {which} {short_repr(joint)}")
            return found
        raise WalkerAPIError(
            f"add_muscle: {which} must be a joint from add_joint, an (x, y) pair or an "
            f"index, got {type_name(joint)} {short_repr(joint)}"
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
                f"add_muscle: passive must be True or False, got {type_name(passive)} "
                f"{short_repr(passive)}{hint}"
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
        if not is_number(value):
            raise WalkerAPIError(
                f"add_muscle: {key} must be a number, got {type_name(value)} {short_repr(value)}"
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
            [m[0], m[1], dict(m[2])] if is_link_like(m) else m for m in muscles
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
        walker = cls.__new__(cls)
        walker.joints, walker.muscles = parse_walker_dict(d, limits)
        walker.validate(limits)
        return walker

    def validate(self, limits: WalkerLimits = DEFAULT_LIMITS) -> Walker:
        """Raise the ``WalkerValidationError`` of the first broken rule; return ``self``.

        Order: structure, counts (joints, links, at least one of each), finite values,
        coordinate range, link endpoints (missing joint, self-link), links per joint,
        muscle amplitude, joint spacing (:func:`.validation.check_walker`).
        """
        check_walker(self.joints, self.muscles, limits)
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Walker):
            return NotImplemented
        return self.joints == other.joints and self.muscles == other.muscles

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        n_muscles = sum(1 for m in self.muscles if is_link_like(m) and m[2].get("type") == MUSCLE)
        return f"Walker({self.n_joints} joints, {self.n_links} links, {n_muscles} muscles)"


def encode_walker(value: Any, limits: WalkerLimits = DEFAULT_LIMITS) -> dict[str, list]:
    """What ``make_walker()`` returned, as the plain dict the sandbox sends back.

    Runs in the sandbox (the Sodarace domain's ``ProgramSpec.encode``): a value that is
    not a :class:`Walker` is a ``TypeError``; a walker far over the count caps, or one
    holding a non-finite number, raises the ``WalkerValidationError`` of its broken rule
    (the parent validates every walker in full again, so nothing else is checked here).
    """
    if not isinstance(value, Walker):
        raise TypeError(f"make_walker() returned {type_name(value)}, not a Walker")
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
