"""The built-in target pictures of the image domain (ELM §3; OpenELM's image environment).

A target is drawn in code at any ``size`` (no file ships with jelm): a function of the
size returning a ``(size, size, 3)`` float array with channels in ``[0, 1]``, rounded to
:data:`jelm.domains.image.codec.DIGITS` decimals like every canonical image, so a program
that reproduces a target exactly scores the maximum fitness 0. The pictures use only
``+ - * /``, ``sqrt`` and comparisons, which IEEE arithmetic rounds the same everywhere:
a target is bit-identical on every machine (a test pins a checksum).

* ``sunset``: a sun sinking into the sea under a sky that runs from deep blue to orange.
* ``night``: a pale crescent moon over a sky that runs from black to dark blue.

Register another with ``TARGETS.register("name", function)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from jelm.domains.image.codec import DIGITS
from jelm.registry import Registry

__all__ = ["TARGETS", "make_target"]

#: Target functions ``size -> (size, size, 3) array`` by name.
TARGETS: Registry[Callable[[int], np.ndarray]] = Registry("image target")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres ``(u, v)`` in ``(0, 1)``: ``u`` runs right, ``v`` down, shape (size, size)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Colour ``a`` where ``t`` is 0, ``b`` where it is 1 (``t`` broadcast over channels)."""
    return a + (b - a) * t[..., None]


def _disc(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float, size: int) -> np.ndarray:
    """Coverage of a disc (centre ``(cu, cv)``, radius ``r``): 1 inside, 0 outside, a one-pixel
    linear ramp across its edge."""
    d = np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
    return np.clip((r - d) * size + 0.5, 0.0, 1.0)


@TARGETS.register("sunset")
def sunset(size: int) -> np.ndarray:
    """A sun sinking into the sea under a blue-to-orange sky."""
    u, v = _grid(size)
    horizon = 0.7
    sky = _blend(np.array([0.1, 0.2, 0.55]), np.array([1.0, 0.6, 0.25]), np.clip(v / horizon, 0, 1))
    sun = _disc(u, v, 0.5, 0.62, 0.2, size)
    picture = _blend(sky, np.array([1.0, 0.9, 0.35]), sun)
    sea = _blend(
        np.array([0.15, 0.2, 0.35]),
        np.array([0.02, 0.05, 0.15]),
        np.clip((v - horizon) / (1 - horizon), 0, 1),
    )
    return np.where((v >= horizon)[..., None], sea, picture)


@TARGETS.register("night")
def night(size: int) -> np.ndarray:
    """A pale crescent moon over a black-to-dark-blue sky."""
    u, v = _grid(size)
    sky = _blend(np.array([0.0, 0.0, 0.02]), np.array([0.05, 0.1, 0.3]), v)
    moon = _disc(u, v, 0.4, 0.4, 0.25, size) * (1 - _disc(u, v, 0.52, 0.32, 0.22, size))
    return _blend(sky, np.array([0.95, 0.93, 0.8]), moon)


@functools.lru_cache(maxsize=16)
def make_target(name: str, size: int) -> np.ndarray:
    """Target ``name`` at ``size`` x ``size``: float32, channels in [0, 1] rounded to
    :data:`DIGITS` decimals, read-only (the array is cached and shared)."""
    picture = np.asarray(TARGETS.get(name)(size), dtype=np.float64)
    if picture.shape != (size, size, 3):
        raise ValueError(f"target {name!r} drew shape {picture.shape}, not {(size, size, 3)}")
    picture = np.round(np.clip(picture, 0.0, 1.0), DIGITS).astype(np.float32)
    picture.setflags(write=False)
    return picture
