"""Batched scoring of images against a target, in JAX (ELM §3: the domain's evaluation).

For a batch of ``B`` images ``(B, H, W, 3)`` and a target ``(H, W, 3)``:

* fitness: the negative mean squared error to the target, in ``[-1, 0]`` (0 = the target);
* descriptor ``hue``: the circular mean of the pixels' HSV hues, each weighted by its
  chroma (``max - min`` of its channels), as a fraction of a turn in ``[0, 1)``. Grey
  pixels weigh nothing; an image with no net colour (all grey, or opposite hues that
  cancel: a mean hue vector shorter than :data:`NEUTRAL`) has hue 0;
* descriptor ``brightness``: the mean luma ``0.299 r + 0.587 g + 0.114 b`` (ITU-R BT.601,
  Pillow's ``"L"`` mode), in ``[0, 1]``;
* extras: ``mse`` and ``chroma`` (the mean chroma: how much colour the hue stands for).

Channels are clipped to ``[0, 1]`` first; a row is valid when its mask is set and its
pixels are finite. Everything is a pure function of arrays (jittable, no PRNG), and a
row's results are bit-identical whatever the batch it is scored in (:func:`image_mean`).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from jelm.domains.base import Evaluation

__all__ = [
    "INVALID_FITNESS",
    "LUMA",
    "NEUTRAL",
    "hue_and_chroma",
    "image_mean",
    "score_images",
]

#: The fitness reported for invalid rows (the lowest a valid image can score).
INVALID_FITNESS = -1.0
#: An image whose mean hue vector (the mean over its pixels of chroma times the unit
#: vector of the hue) is shorter than this has no net colour (far below one 8-bit level):
#: its hue is 0, not the direction of rounding noise.
NEUTRAL = 1e-4
#: ITU-R BT.601 luma weights of r, g, b.
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)


def image_mean(values: Any) -> Any:
    """The mean of each row of ``(B, ...)`` ``values``, summed in a fixed order.

    ``jnp.mean`` lets XLA choose the order of its float additions by the batch shape, so
    one image could score a last bit differently alone and in a larger batch. Here the
    values are added pairwise (halves of a zero-padded power-of-two row, elementwise),
    an order that depends on nothing but the image size.
    """
    flat = values.reshape(values.shape[0], -1)
    n = flat.shape[1]
    width = 1 << max(0, (n - 1).bit_length())
    flat = jnp.pad(flat, ((0, 0), (0, width - n)))
    while width > 1:
        width //= 2
        flat = flat[:, :width] + flat[:, width:]
    return flat[:, 0] / n


def hue_and_chroma(pixels: Any) -> tuple[Any, Any]:
    """Per-pixel HSV hue (a fraction of a turn, 0 for grey) and chroma of ``(..., 3)`` pixels,
    with :func:`colorsys.rgb_to_hsv`'s case order (red, then green, then blue maximal)."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    high = jnp.max(pixels, axis=-1)
    chroma = high - jnp.min(pixels, axis=-1)
    safe = jnp.where(chroma > 0, chroma, 1.0)
    sector = jnp.where(
        r == high, (g - b) / safe, jnp.where(g == high, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    hue = jnp.where(chroma > 0, jnp.mod(sector / 6.0, 1.0), 0.0)
    return hue, chroma


def score_images(pixels: Any, mask: Any, target: Any) -> Evaluation:
    """Fitness, descriptors ``(hue, brightness)``, validity and extras of ``(B, H, W, 3)``
    ``pixels`` whose rows ``mask`` marks as filled, against ``target`` (see the module)."""
    finite = jnp.all(jnp.isfinite(pixels), axis=(1, 2, 3))
    valid = mask & finite
    images = jnp.where(valid[:, None, None, None], jnp.clip(pixels, 0.0, 1.0), 0.0)
    mse = image_mean((images - target) ** 2)
    hue, chroma = hue_and_chroma(images)
    angle = 2.0 * math.pi * hue
    x = image_mean(chroma * jnp.cos(angle))
    y = image_mean(chroma * jnp.sin(angle))
    mean_hue = jnp.mod(jnp.arctan2(y, x) / (2.0 * math.pi), 1.0)
    # -tiny mod 1 rounds up to 1.0; a vector of rounding noise has no direction.
    mean_hue = jnp.where((mean_hue >= 1.0) | (jnp.hypot(x, y) < NEUTRAL), 0.0, mean_hue)
    luma = LUMA[0] * images[..., 0] + LUMA[1] * images[..., 1] + LUMA[2] * images[..., 2]
    brightness = image_mean(luma)
    descriptors = jnp.where(valid[:, None], jnp.stack([mean_hue, brightness], axis=-1), 0.0)
    fitness = jnp.where(valid, 0.0 - mse, INVALID_FITNESS)  # 0.0 - 0.0 is 0.0, not -0.0
    extras = {"mse": mse, "chroma": image_mean(chroma)}
    return Evaluation(fitness, descriptors, valid, extras)
