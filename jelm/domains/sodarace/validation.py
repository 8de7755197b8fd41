"""The rules a Sodarace walker must follow (ELM, arXiv 2206.08896v1, §4), as checks on its
joints and links in the paper's dict layout.

The paper's rules: at most 10 links per joint, muscle amplitude at most 10, a minimum
distance between joints, a non-empty walker, no self-links, links only between existing
joints. jelm adds hard caps on the numbers of joints and links (the padded size of a
simulator batch), finite numbers, coordinates within a box, and at least one link. Counts
are checked before anything that walks the entries, so a walker of a million joints is
refused at once. Each failure raises its own :class:`WalkerValidationError` subclass.
Standard library only (sandbox workers import it).
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
    short_repr,
    type_name,
)
from jelm.domains.sodarace.limits import WalkerLimits

__all__ = [
    "BONE",
    "LINK_TYPES",
    "MUSCLE",
    "check_counts",
    "check_spacing",
    "check_walker",
    "is_link_like",
    "is_number",
    "parse_joint",
    "parse_link",
    "parse_walker_dict",
]

BONE = "distance"
MUSCLE = "muscle"
LINK_TYPES = (BONE, MUSCLE)


def is_number(value: Any) -> bool:
    """A real number as programs write them: int or float, but not bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_link_like(m: Any) -> bool:
    """Whether ``m`` has a link's shape, ``[i, j, {...}]`` (its entries unchecked)."""
    return isinstance(m, (list, tuple)) and len(m) == 3 and isinstance(m[2], dict)


def check_counts(n_joints: int, n_links: int, limits: WalkerLimits) -> None:
    """At least one joint and one link, at most ``max_joints`` and ``max_links``."""
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


def parse_joint(k: int, p: Any) -> tuple[float, float]:
    """Joint ``k`` as a pair of floats, or ``MalformedWalker`` naming it."""
    if not isinstance(p, (list, tuple)) or len(p) != 2 or not (is_number(p[0]) and is_number(p[1])):
        raise MalformedWalker(f"joint {k} must be an [x, y] pair of numbers, got {short_repr(p)}")
    try:
        return (float(p[0]), float(p[1]))
    except OverflowError:
        raise CoordinateOutOfRange(f"joint {k} is at {short_repr(p)}", joint=k) from None


def parse_link(k: int, m: Any) -> list:
    """Link ``k`` in canonical form (int ends, float amplitude and phase, which default to
    0), or ``MalformedWalker`` naming it."""
    shape = '[i, j, {"type": ..., "amplitude": ..., "phase": ...}]'
    if not is_link_like(m):
        raise MalformedWalker(f"link {k} must be {shape}, got {short_repr(m)}")
    i, j, props = m
    for end in (i, j):
        if not isinstance(end, int) or isinstance(end, bool):
            raise MalformedWalker(f"link {k} must join two int joint indices, got {short_repr(m)}")
    unknown = sorted(str(key) for key in props if key not in ("type", "amplitude", "phase"))
    if unknown:
        raise MalformedWalker(f"link {k} has unknown keys {unknown}")
    kind = props.get("type")
    if kind not in LINK_TYPES:
        raise MalformedWalker(
            f"link {k} has type {short_repr(kind)}; expected 'distance' or 'muscle'"
        )
    out: dict[str, Any] = {"type": kind}
    for key in ("amplitude", "phase"):
        value = props.get(key, 0.0)
        if not is_number(value):
            raise MalformedWalker(f"link {k} has a non-numeric {key}: {short_repr(value)}")
        try:
            out[key] = float(value)
        except OverflowError:
            raise NonFiniteValue(f"link {k} has {key} {value}", link=k) from None
    return [int(i), int(j), out]


def parse_walker_dict(d: Any, limits: WalkerLimits) -> tuple[list, list]:
    """The joints and links of a dict in the paper's layout, parsed (``parse_joint``,
    ``parse_link``) after its structure and counts are checked; the rules are not."""
    if not isinstance(d, dict):
        raise MalformedWalker(f"a walker dict must be a dict, got {type_name(d)}")
    extra = sorted(str(k) for k in d if k not in ("joints", "muscles"))
    if extra:
        raise MalformedWalker(f"walker dict has unknown keys {extra}")
    if "joints" not in d or "muscles" not in d:
        raise MalformedWalker("walker dict needs both 'joints' and 'muscles'")
    joints_in, links_in = d["joints"], d["muscles"]
    for key, value in (("joints", joints_in), ("muscles", links_in)):
        if not isinstance(value, (list, tuple)):
            raise MalformedWalker(f"'{key}' must be a list, got {type_name(value)}")
    check_counts(len(joints_in), len(links_in), limits)  # before touching entries
    joints = [parse_joint(k, p) for k, p in enumerate(joints_in)]
    muscles = [parse_link(k, m) for k, m in enumerate(links_in)]
    return joints, muscles


def check_walker(joints: Any, links: Any, limits: WalkerLimits) -> None:
    """Raise the ``WalkerValidationError`` of the first rule ``joints`` and ``links`` break.

    Order: structure, counts (joints, links, at least one of each), finite values,
    coordinate range, link endpoints (missing joint, self-link), links per joint,
    muscle amplitude, joint spacing.
    """
    if not isinstance(joints, list) or not isinstance(links, list):
        raise MalformedWalker("Walker.joints and Walker.muscles must be lists")
    check_counts(len(joints), len(links), limits)
    # Work on normalised copies (plain floats and ints) so every check below sees
    # exactly what ``Walker.to_dict`` would emit.
    joints = [parse_joint(k, p) for k, p in enumerate(joints)]
    links = [parse_link(k, m) for k, m in enumerate(links)]
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
    check_spacing(joints, limits.min_joint_distance)


def check_spacing(joints: list[tuple[float, float]], min_distance: float) -> None:
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
