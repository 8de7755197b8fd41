"""WalkerBatch: Sodarace walkers as one padded, masked pytree, and packing into size buckets.

A Sodaracer (ELM paper, Lehman et al. 2022, §4 and appendix "Sodarace") is a set of joints
(point masses) joined by links; a link is either a passive bone (the paper's "distance"
type) or a muscle whose length oscillates with an amplitude and a phase. ``jelm.sim``
takes walkers in the paper's dict layout::

    {"joints": [[x, y], ...],
     "muscles": [[i, j, {"type": "distance" | "muscle", "amplitude": a, "phase": p}], ...]}

and packs many of them into fixed-shape arrays so one XLA call simulates thousands.
Shapes come from a small ladder of buckets (joints x max links per joint) so a batch of
small walkers is not padded to the largest shape, and so a run compiles each shape once.

This module is NumPy on the host (packing) plus a pytree the device code consumes; it
imports nothing else of jelm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class WalkerDoesNotFit(ValueError):
    """A walker cannot be packed into the requested shape (or is malformed)."""

    def __init__(self, index: int | None, reason: str):
        self.index = index
        self.reason = reason
        where = "" if index is None else f"walker {index}: "
        super().__init__(f"{where}{reason}")


@dataclasses.dataclass(frozen=True, order=True)
class BucketShape:
    """Padded sizes of one bucket: joints, links and link slots per joint."""

    joints: int
    links: int
    degree: int

    def fits(self, n_joints: int, n_links: int, max_degree: int) -> bool:
        """Whether a walker of these sizes fits this bucket."""
        return n_joints <= self.joints and n_links <= self.links and max_degree <= self.degree


#: Joint-count rungs and per-joint link-slot rungs of the default bucket ladder.
JOINT_RUNGS: tuple[int, ...] = (8, 16, 32, 64)
DEGREE_RUNGS: tuple[int, ...] = (4, 6, 8, 10)
#: The hard caps (the paper's 10 links per joint; jelm's joint and link caps).
MAX_JOINTS = 64
MAX_LINKS = 256
MAX_DEGREE = 10


def default_ladder(
    max_joints: int = MAX_JOINTS, max_links: int = MAX_LINKS, max_degree: int = MAX_DEGREE
) -> tuple[BucketShape, ...]:
    """Bucket shapes from the smallest to the cap: every (joints, degree) rung pair, with
    links = joints * degree / 2 (the most links such a walker can have), capped."""
    joints = sorted({j for j in JOINT_RUNGS if j < max_joints} | {max_joints})
    degrees = sorted({d for d in DEGREE_RUNGS if d < max_degree} | {max_degree})
    shapes = {
        BucketShape(j, min(max_links, max(1, j * d // 2)), d) for j in joints for d in degrees
    }
    return tuple(sorted(shapes, key=lambda s: (s.joints * s.degree, s.links, s.joints)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WalkerBatch:
    """A batch of walkers padded to one shape ``(B, J joints, L links, D slots)``.

    Coordinates are the program's (y up), unplaced; the simulator places each walker on its
    terrain. ``amplitude`` and ``phase`` are the paper's raw values (amplitude in
    [-10, 10], phase in cycles); bones carry ``muscle == False``. Rest lengths are the
    initial joint distances (a property, so they never go stale after a joint edit).
    ``max_degree`` (static) is the number of link slots per joint the simulator allocates.
    """

    joints: jax.Array  # (B, J, 2) float32
    joint_mask: jax.Array  # (B, J) bool
    link_i: jax.Array  # (B, L) int32
    link_j: jax.Array  # (B, L) int32
    muscle: jax.Array  # (B, L) bool
    amplitude: jax.Array  # (B, L) float32
    phase: jax.Array  # (B, L) float32
    link_mask: jax.Array  # (B, L) bool
    max_degree: int = dataclasses.field(metadata={"static": True}, default=MAX_DEGREE)

    @property
    def shape(self) -> BucketShape:
        """The padded shape of this batch (without the batch axis)."""
        return BucketShape(self.joints.shape[-2], self.link_i.shape[-1], self.max_degree)

    @property
    def batch_size(self) -> int:
        """Number of rows (walkers, including padding rows)."""
        return self.joints.shape[0]

    @property
    def active_links(self) -> jax.Array:
        """(B, L) the links the simulator uses: set in ``link_mask`` and with both ends
        joints of the row. :func:`pack` makes no other kind; a link of a hand-edited batch
        that points past the joints counts as padding."""
        n = self.joints.shape[-2]
        i, j = self.link_i, self.link_j
        return self.link_mask & (i >= 0) & (i < n) & (j >= 0) & (j < n)

    @property
    def rest_lengths(self) -> jax.Array:
        """(B, L) initial distance of every link (0 for padding)."""
        pi = jnp.take_along_axis(self.joints, self.link_i[..., None], axis=-2)
        pj = jnp.take_along_axis(self.joints, self.link_j[..., None], axis=-2)
        length = jnp.sqrt(jnp.sum((pj - pi) ** 2, axis=-1))
        return jnp.where(self.active_links, length, 0.0)

    @property
    def walker_mask(self) -> jax.Array:
        """(B,) True for rows holding a walker, False for batch padding."""
        return jnp.any(self.joint_mask, axis=-1)


def _as_dict(walker: Any) -> Mapping[str, Any]:
    """Accept a dict in the paper's layout or any object with ``to_dict()``."""
    if isinstance(walker, Mapping):
        return walker
    to_dict = getattr(walker, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"expected a walker dict or an object with to_dict(), got {type(walker)}")


@dataclasses.dataclass(frozen=True)
class _Parsed:
    joints: np.ndarray  # (n, 2) float64
    links: np.ndarray  # (m, 2) int64
    muscle: np.ndarray  # (m,) bool
    amplitude: np.ndarray  # (m,) float64
    phase: np.ndarray  # (m,) float64

    @property
    def max_degree(self) -> int:
        if len(self.links) == 0:
            return 0
        return int(np.bincount(self.links.ravel(), minlength=len(self.joints)).max())


def _parse(walker: Any, index: int | None, max_joints: int, max_links: int) -> _Parsed:
    """Turn one walker dict into arrays, with a clear error for anything unusable."""
    d = _as_dict(walker)
    try:
        joints_in = d["joints"]
        links_in = d["muscles"]
    except (KeyError, TypeError):
        raise WalkerDoesNotFit(index, "walker dict needs 'joints' and 'muscles'") from None
    if len(joints_in) == 0:
        raise WalkerDoesNotFit(index, "walker has no joints")
    if len(joints_in) > max_joints:
        raise WalkerDoesNotFit(index, f"{len(joints_in)} joints exceed the cap of {max_joints}")
    if len(links_in) > max_links:
        raise WalkerDoesNotFit(index, f"{len(links_in)} links exceed the cap of {max_links}")
    try:
        joints = np.asarray([[float(p[0]), float(p[1])] for p in joints_in], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise WalkerDoesNotFit(index, "joints must be [x, y] number pairs") from None
    n = len(joints)
    m = len(links_in)
    links = np.zeros((m, 2), dtype=np.int64)
    muscle = np.zeros(m, dtype=bool)
    amplitude = np.zeros(m, dtype=np.float64)
    phase = np.zeros(m, dtype=np.float64)
    for k, link in enumerate(links_in):
        try:
            i, j, props = int(link[0]), int(link[1]), link[2]
            kind = props.get("type", "distance")
            amplitude[k] = float(props.get("amplitude", 0.0))
            phase[k] = float(props.get("phase", 0.0))
        except (TypeError, ValueError, IndexError, AttributeError):
            raise WalkerDoesNotFit(
                index, f"link {k} is not [i, j, {{type, amplitude, phase}}]"
            ) from None
        if not (0 <= i < n and 0 <= j < n):
            raise WalkerDoesNotFit(
                index, f"link {k} joins joint {i} and {j}; joints are 0..{n - 1}"
            )
        if i == j:
            raise WalkerDoesNotFit(index, f"link {k} joins joint {i} to itself")
        if kind not in ("distance", "muscle"):
            raise WalkerDoesNotFit(index, f"link {k} has unknown type {kind!r}")
        links[k] = (i, j)
        muscle[k] = kind == "muscle"
    values = np.concatenate([joints.ravel(), amplitude, phase])
    if not np.all(np.isfinite(values)):
        raise WalkerDoesNotFit(index, "walker has a non-finite coordinate, amplitude or phase")
    # Validation accepts any finite phase and ignores a bone's amplitude; reduce both here,
    # in float64, so the float32 arrays the simulator sees stay small and exact enough
    # (a phase of 1e9 cycles would otherwise lose all its fractional part in float32).
    phase = np.mod(phase, 1.0)
    amplitude = np.where(muscle, amplitude, 0.0)
    return _Parsed(joints, links, muscle, amplitude, phase)


def _next_rung(value: int, rungs: Iterable[int]) -> int | None:
    return next((r for r in sorted(rungs) if r >= value), None)


def _empty_batch(batch: int, shape: BucketShape) -> dict[str, np.ndarray]:
    j, ell = shape.joints, shape.links
    return {
        "joints": np.zeros((batch, j, 2), np.float32),
        "joint_mask": np.zeros((batch, j), bool),
        "link_i": np.zeros((batch, ell), np.int32),
        "link_j": np.zeros((batch, ell), np.int32),
        "muscle": np.zeros((batch, ell), bool),
        "amplitude": np.zeros((batch, ell), np.float32),
        "phase": np.zeros((batch, ell), np.float32),
        "link_mask": np.zeros((batch, ell), bool),
    }


def _fill(arrays: dict[str, np.ndarray], row: int, w: _Parsed) -> None:
    n, m = len(w.joints), len(w.links)
    arrays["joints"][row, :n] = w.joints
    arrays["joint_mask"][row, :n] = True
    arrays["link_i"][row, :m] = w.links[:, 0]
    arrays["link_j"][row, :m] = w.links[:, 1]
    arrays["muscle"][row, :m] = w.muscle
    arrays["amplitude"][row, :m] = w.amplitude
    arrays["phase"][row, :m] = w.phase
    arrays["link_mask"][row, :m] = True


def _to_batch(arrays: dict[str, np.ndarray], shape: BucketShape) -> WalkerBatch:
    return WalkerBatch(**{k: jnp.asarray(v) for k, v in arrays.items()}, max_degree=shape.degree)


def pack(
    walkers: Sequence[Any],
    shape: BucketShape | None = None,
    batch_size: int | None = None,
) -> WalkerBatch:
    """Pack walkers into one padded batch.

    Row ``r`` holds ``walkers[r]``; a ``None`` entry is an empty row. ``shape`` defaults
    to the smallest shape of the default ladder that fits every walker; ``batch_size``
    (default ``len(walkers)``) pads with empty rows so a run keeps one batch shape.
    Raises :class:`WalkerDoesNotFit` naming the first walker that does not fit.
    """
    if batch_size is None:
        batch_size = len(walkers)
    if batch_size < len(walkers):
        raise ValueError(f"batch_size {batch_size} < {len(walkers)} walkers")
    cap_j = shape.joints if shape else MAX_JOINTS
    cap_l = shape.links if shape else MAX_LINKS
    parsed = [None if w is None else _parse(w, k, cap_j, cap_l) for k, w in enumerate(walkers)]
    present = [w for w in parsed if w is not None]
    if shape is None:
        shape = _smallest_fit(present)
    for k, w in enumerate(parsed):
        if w is not None and w.max_degree > shape.degree:
            raise WalkerDoesNotFit(
                k, f"a joint has {w.max_degree} links; this shape allows {shape.degree} per joint"
            )
    arrays = _empty_batch(batch_size, shape)
    for row, w in enumerate(parsed):
        if w is not None:
            _fill(arrays, row, w)
    return _to_batch(arrays, shape)


def _smallest_fit(parsed: Sequence[_Parsed]) -> BucketShape:
    n = max((len(w.joints) for w in parsed), default=1)
    m = max((len(w.links) for w in parsed), default=1)
    deg = max((w.max_degree for w in parsed), default=1)
    for s in default_ladder():
        if s.fits(n, m, deg):
            return s
    raise WalkerDoesNotFit(None, f"no bucket holds {n} joints, {m} links, degree {deg}")


def bucket_of(walker: Any, ladder: Sequence[BucketShape] | None = None) -> BucketShape:
    """The smallest shape of ``ladder`` (default ladder if None) that fits ``walker``."""
    w = _parse(walker, None, MAX_JOINTS, MAX_LINKS)
    for s in ladder or default_ladder():
        if s.fits(len(w.joints), len(w.links), w.max_degree):
            return s
    raise WalkerDoesNotFit(
        None, f"no bucket holds {len(w.joints)} joints, {len(w.links)} links, degree {w.max_degree}"
    )


def pack_buckets(
    walkers: Sequence[Any],
    ladder: Sequence[BucketShape] | None = None,
    batch_multiple: int = 1,
) -> list[tuple[np.ndarray, WalkerBatch]]:
    """Group walkers by their smallest bucket and pack each group.

    Returns ``[(indices, batch), ...]`` where ``indices`` are positions in ``walkers`` and
    row ``r`` of ``batch`` holds ``walkers[indices[r]]``. Each batch is padded up to a
    multiple of ``batch_multiple`` rows (pass a fixed batch size to keep shapes constant).
    Walkers that fit no bucket raise :class:`WalkerDoesNotFit` with their index.
    """
    ladder = tuple(ladder or default_ladder())
    cap_j = max(s.joints for s in ladder)
    cap_l = max(s.links for s in ladder)
    groups: dict[BucketShape, list[tuple[int, _Parsed]]] = {}
    for k, walker in enumerate(walkers):
        w = _parse(walker, k, cap_j, cap_l)
        shape = next((s for s in ladder if s.fits(len(w.joints), len(w.links), w.max_degree)), None)
        if shape is None:
            raise WalkerDoesNotFit(
                k,
                f"fits no bucket ({len(w.joints)} joints, {len(w.links)} links, "
                f"degree {w.max_degree})",
            )
        groups.setdefault(shape, []).append((k, w))
    out = []
    for shape in sorted(groups):
        members = groups[shape]
        rows = math.ceil(len(members) / batch_multiple) * batch_multiple
        arrays = _empty_batch(rows, shape)
        for row, (_, w) in enumerate(members):
            _fill(arrays, row, w)
        out.append((np.asarray([k for k, _ in members], dtype=np.int64), _to_batch(arrays, shape)))
    return out


def unpack(batch: WalkerBatch, row: int) -> dict[str, Any]:
    """Row ``row`` of a batch back in the paper's dict layout (for renders and ledgers)."""
    jm = np.asarray(batch.joint_mask[row])
    lm = np.asarray(batch.link_mask[row])
    joints = np.asarray(batch.joints[row])[jm]
    li, lj = np.asarray(batch.link_i[row])[lm], np.asarray(batch.link_j[row])[lm]
    mus = np.asarray(batch.muscle[row])[lm]
    amp = np.asarray(batch.amplitude[row])[lm]
    ph = np.asarray(batch.phase[row])[lm]
    return {
        "joints": [[float(x), float(y)] for x, y in joints],
        "muscles": [
            [
                int(i),
                int(j),
                {"type": "muscle" if m else "distance", "amplitude": float(a), "phase": float(p)},
            ]
            for i, j, m, a, p in zip(li, lj, mus, amp, ph, strict=True)
        ],
    }
