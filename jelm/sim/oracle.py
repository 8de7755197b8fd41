"""A plain NumPy reference implementation of one Sodarace physics step (a test oracle).

The simulator's backends are written for speed (fixed-order sums in float32 over slot or
link tables). This module implements the *same algorithm* the obvious way, one walker at
a time, looping over its links, in float64, so that tests can check every backend
against it step by step. It shares no code with them; it follows the docstring of
:mod:`jelm.sim.xla.step`, which is the specification (the ELM paper's Sodarace, Lehman
et al. 2022, §4 and appendix). In float64 the oracle's own rounding is invisible next to
float32's, so a disagreement beyond float32 rounding is a difference in the algorithm.

The oracle needs no JAX: ``params`` is any object with the attribute names of
``jelm.sim.base.PhysicsParams`` and ``terrain`` any object with the fields of
``jelm.sim.terrain.Terrain`` (unbatched; JAX or NumPy arrays; float32 tables are widened
exactly). It is slow (Python loops) and meant for a few walkers over tens of steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "OracleTerrain",
    "OracleWalker",
    "oracle_place",
    "oracle_step",
    "oracle_terrain",
    "oracle_walker",
]


@dataclasses.dataclass(frozen=True)
class OracleWalker:
    """One walker as float64 arrays (no padding).

    ``links[k] = (i, j)``; ``muscle[k]`` tells a muscle from a bone; ``rest[k]`` is the
    link's rest length (its initial length); ``phase`` is in cycles.
    """

    joints: np.ndarray  # (n, 2)
    links: np.ndarray  # (m, 2) int
    muscle: np.ndarray  # (m,) bool
    amplitude: np.ndarray  # (m,)
    phase: np.ndarray  # (m,)
    rest: np.ndarray  # (m,)

    @property
    def n_joints(self) -> int:
        return len(self.joints)


def oracle_walker(walker: Any) -> OracleWalker:
    """An :class:`OracleWalker` from a walker dict in the paper's layout, an object with
    ``to_dict()``, or an :class:`OracleWalker` (returned as is)."""
    if isinstance(walker, OracleWalker):
        return walker
    d = walker if isinstance(walker, Mapping) else walker.to_dict()
    joints = np.array([[float(x), float(y)] for x, y in d["joints"]], dtype=np.float64)
    joints = joints.reshape(-1, 2)
    m = len(d["muscles"])
    links = np.zeros((m, 2), dtype=np.int64)
    muscle = np.zeros(m, dtype=bool)
    amplitude = np.zeros(m)
    phase = np.zeros(m)
    rest = np.zeros(m)
    for k, (i, j, props) in enumerate(d["muscles"]):
        links[k] = (int(i), int(j))
        muscle[k] = props.get("type", "distance") == "muscle"
        amplitude[k] = float(props.get("amplitude", 0.0)) if muscle[k] else 0.0
        phase[k] = math.fmod(float(props.get("phase", 0.0)), 1.0)  # whole cycles drop out
        rest[k] = math.dist(joints[i], joints[j])
    return OracleWalker(joints, links, muscle, amplitude, phase, rest)


# --- terrain --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OracleTerrain:
    """An unbatched terrain as float64 NumPy values (see ``jelm.sim.terrain.Terrain``)."""

    x0: float
    dx: float
    ground: np.ndarray
    ceiling: np.ndarray
    left_wall: float
    right_wall: float
    spawn_x: float
    spawn_align: float


def oracle_terrain(terrain: Any) -> OracleTerrain:
    """An :class:`OracleTerrain` from a ``Terrain`` (JAX or NumPy fields) or itself."""
    if isinstance(terrain, OracleTerrain):
        return terrain
    if np.ndim(terrain.ground) != 1:
        raise ValueError("the oracle takes one unbatched terrain")
    return OracleTerrain(
        x0=float(terrain.x0),
        dx=float(terrain.dx),
        ground=np.asarray(terrain.ground, dtype=np.float64),
        ceiling=np.asarray(terrain.ceiling, dtype=np.float64),
        left_wall=float(terrain.left_wall),
        right_wall=float(terrain.right_wall),
        spawn_x=float(terrain.spawn_x),
        spawn_align=float(terrain.spawn_align),
    )


def _surface(terrain: OracleTerrain, heights: np.ndarray, x: float) -> tuple[float, float]:
    """Height and slope of a piecewise-linear surface at ``x``. Beyond the grid the edge
    height continues flat (slope 0); exactly on a grid point the slope is that of the
    segment to its right."""
    x0, dx = terrain.x0, terrain.dx
    last = len(heights) - 1
    s = (x - x0) / dx
    if s < 0.0:
        return float(heights[0]), 0.0
    if s > last:
        return float(heights[last]), 0.0
    i = min(math.floor(s), last - 1)
    frac = s - i
    slope = (heights[i + 1] - heights[i]) / dx
    return float(heights[i] + frac * (heights[i + 1] - heights[i])), float(slope)


def ground_at(terrain: OracleTerrain, x: float) -> tuple[float, float]:
    """Ground height and slope at ``x``."""
    return _surface(terrain, terrain.ground, x)


def ceiling_at(terrain: OracleTerrain, x: float) -> tuple[float, float]:
    """Ceiling height and slope at ``x``."""
    return _surface(terrain, terrain.ceiling, x)


def _contact_push(terrain: OracleTerrain, p: np.ndarray) -> np.ndarray:
    """The correction moving point ``p`` out of the ground and the ceiling (along the
    surface normal, onto the surface's tangent line) and then out of the walls."""
    x, y = float(p[0]), float(p[1])
    push = np.zeros(2)
    h, slope = ground_at(terrain, x)
    if y < h:  # below the ground: move along the upward normal (-slope, 1) / |.|
        normal = np.array([-slope, 1.0]) / math.hypot(slope, 1.0)
        depth = (h - y) / math.hypot(slope, 1.0)  # distance to the tangent line
        push += depth * normal
    c, slope = ceiling_at(terrain, x)
    if y > c:  # above the ceiling: move along the downward normal (slope, -1) / |.|
        normal = np.array([slope, -1.0]) / math.hypot(slope, 1.0)
        depth = (y - c) / math.hypot(slope, 1.0)
        push += depth * normal
    left, right = terrain.left_wall, terrain.right_wall
    if x + push[0] < left:
        push[0] = left - x
    if x + push[0] > right:
        push[0] = right - x
    return push


def _coulomb(q: np.ndarray, start: np.ndarray, push: np.ndarray, mu: float) -> np.ndarray:
    """Coulomb friction on point ``q`` (already pushed out by ``push``): its displacement
    since the substep began at ``start``, tangent to the contact, shrinks by
    ``mu * |push|``, and stops if it is smaller (static friction)."""
    n_len = math.hypot(push[0], push[1])
    if n_len == 0.0:
        return q
    normal = push / n_len
    move = q - start
    along = float(move @ normal)
    tangent = move - along * normal
    slide = math.hypot(tangent[0], tangent[1])
    keep = 0.0 if slide <= mu * n_len else 1.0 - mu * n_len / slide
    return start + along * normal + keep * tangent


def _side_entry(
    terrain: OracleTerrain, p: np.ndarray, start: np.ndarray, max_depth: float
) -> np.ndarray:
    """Point ``p`` with its x put back to the substep's start x when it lies more than
    ``max_depth`` deep in the ground or the ceiling and would lie less deep at that start
    x: it came in sideways through a steep face (a cliff, a tunnel mouth), which should
    stop it like a wall rather than shove it vertically by the whole overlap."""

    def depth(x: float) -> float:
        y = float(p[1])
        return max(ground_at(terrain, x)[0] - y, y - ceiling_at(terrain, x)[0])

    here, before = depth(float(p[0])), depth(float(start[0]))
    if here > max_depth and before < here:
        return np.array([start[0], p[1]])
    return p


def _clamp(terrain: OracleTerrain, p: np.ndarray) -> np.ndarray:
    """Put point ``p`` inside the free space: between the walls, below the ceiling and
    above the ground (the ground wins if they cross)."""
    x = min(max(float(p[0]), terrain.left_wall), terrain.right_wall)
    y = min(float(p[1]), ceiling_at(terrain, x)[0])
    y = max(y, ground_at(terrain, x)[0])
    return np.array([x, y])


# --- the step -------------------------------------------------------------------------


def _muscle_forces(w: OracleWalker, pos: np.ndarray, vel: np.ndarray, t: float, params: Any):
    """Force on every joint from the muscles, damped springs pulling each muscle towards
    its target length ``L0 * (1 + amplitude_scale * amplitude * sin(speed t + 2 pi phase))``
    (positive tension pulls the two ends together)."""
    force = np.zeros_like(pos)
    for k, (i, j) in enumerate(w.links):
        if not w.muscle[k]:
            continue
        d = pos[j] - pos[i]
        length = math.hypot(d[0], d[1])
        u = d / max(length, 1e-6)
        wave = math.sin(params.phase_speed * t + 2.0 * math.pi * w.phase[k])
        target = w.rest[k] * (1.0 + params.amplitude_scale * w.amplitude[k] * wave)
        stretch_speed = float((vel[j] - vel[i]) @ u)
        tension = params.muscle_stiffness * (length - target)
        tension += params.muscle_damping * stretch_speed
        force[i] += tension * u
        force[j] -= tension * u
    return force


def _bone_sweep(w: OracleWalker, pos: np.ndarray, bone_weight: np.ndarray) -> np.ndarray:
    """One Jacobi sweep over the bones: every bone moves each end by half its length error
    towards the rest length, scaled by ``bone_weight[k]`` (relaxation / the larger bone
    count of its two ends): equal and opposite moves, all from the same ``pos``."""
    correction = np.zeros_like(pos)
    for k, (i, j) in enumerate(w.links):
        if w.muscle[k]:
            continue
        d = pos[j] - pos[i]
        length = math.hypot(d[0], d[1])
        half_error = 0.5 * bone_weight[k] * (length - w.rest[k]) / max(length, 1e-6)
        correction[i] += half_error * d  # towards j if the bone is too long
        correction[j] -= half_error * d
    return pos + correction


def _substep(w, pos, vel, t, terrain, params, h, bone_weight):
    # 1. muscles.
    force = _muscle_forces(w, pos, vel, t, params)
    # 2. velocities: gravity and muscles (unit masses), then Box2D's damping.
    accel = force + np.array([0.0, -params.gravity])
    vel = (vel + h * accel) / (1.0 + h * params.damping)
    start = pos
    pos = start + h * vel
    # 3. Jacobi sweeps: bones, then contacts and friction per joint.
    touched = np.zeros(w.n_joints, dtype=bool)  # pushed by the terrain in this substep
    pushed = np.zeros_like(pos)  # sum of the terrain's pushes in this substep
    for _ in range(params.iterations):
        projected = _bone_sweep(w, pos, bone_weight)
        swept = np.empty_like(pos)
        for n in range(w.n_joints):
            q = _side_entry(terrain, projected[n], start[n], params.max_depth)
            push = _contact_push(terrain, q)
            touched[n] |= bool(np.any(push != 0.0))
            pushed[n] += push
            swept[n] = _coulomb(q + push, start[n], push, params.friction)
        pos = swept
    # 4. velocities from the positions, before the clamp; along the contact normal a
    #    touched joint keeps at most the outward speed it had before the projections.
    predicted = vel
    vel = (pos - start) / h
    for n in range(w.n_joints):
        length = math.hypot(pushed[n, 0], pushed[n, 1])
        if touched[n] and length > 0.0:
            normal = pushed[n] / length
            v_n = float(vel[n] @ normal)
            limit = max(float(predicted[n] @ normal), 0.0)
            if v_n > limit:
                vel[n] -= (v_n - limit) * normal
    # 5. final clamp out of the terrain (it moves positions only, adding no speed).
    clamped = [
        _clamp(terrain, _side_entry(terrain, p, s, params.max_depth))
        for p, s in zip(pos, start, strict=True)
    ]
    return np.array(clamped).reshape(-1, 2), vel


def oracle_step(
    walker: Any,
    pos: np.ndarray,
    vel: np.ndarray,
    step_index: int,
    terrain: Any,
    params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Advance one walker by one step of ``params.dt``.

    ``walker``: a dict in the paper's layout, an object with ``to_dict()`` or an
    :class:`OracleWalker` (pass one to avoid re-parsing every step). ``pos``, ``vel``:
    ``(n, 2)`` for its ``n`` joints. ``step_index``: the step counter at the start of the
    step (time is ``step_index * dt``). Returns the new ``(pos, vel)`` in float64.
    """
    w = oracle_walker(walker)
    terrain = oracle_terrain(terrain)
    pos = np.asarray(pos, dtype=np.float64).reshape(w.n_joints, 2)
    vel = np.asarray(vel, dtype=np.float64).reshape(w.n_joints, 2)
    h = params.dt / params.substeps
    bones = np.zeros(w.n_joints)
    for k, (i, j) in enumerate(w.links):
        if not w.muscle[k]:
            bones[i] += 1
            bones[j] += 1
    bone_weight = np.array([params.relaxation / max(bones[i], bones[j], 1.0) for i, j in w.links])
    for sub in range(params.substeps):
        t = (step_index + sub / params.substeps) * params.dt
        pos, vel = _substep(w, pos, vel, t, terrain, params, h, bone_weight)
    return pos, vel


def oracle_place(walker: Any, terrain: Any, params: Any) -> np.ndarray:
    """The start positions ``(n, 2)`` of ``walker`` on ``terrain`` (mirrors
    ``jelm.sim.physics.init_state``; start velocities are zero): shifted in x so that the
    point ``spawn_align`` of the way from its leftmost to its rightmost joint sits at
    ``spawn_x``, and in y so that its lowest joint (relative to the ground under it) is
    ``params.clearance`` above the ground."""
    w = oracle_walker(walker)
    terrain = oracle_terrain(terrain)
    xs, ys = w.joints[:, 0], w.joints[:, 1]
    x_min, x_max = xs.min(), xs.max()
    shift_x = terrain.spawn_x - (x_min + terrain.spawn_align * (x_max - x_min))
    gap = min(y - ground_at(terrain, x + shift_x)[0] for x, y in zip(xs, ys, strict=True))
    shift_y = params.clearance - gap
    return w.joints + np.array([shift_x, shift_y])
