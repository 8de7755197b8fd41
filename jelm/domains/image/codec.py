"""What an image program may return, checked on both sides of the sandbox (ELM §3).

A program's ``draw()`` returns an image of ``height`` rows of ``width`` pixels, each pixel
``[r, g, b]`` with channels in ``[0, 1]`` (lists or tuples of ints or floats)::

    def draw():
        return [[[x / 31, 0.5, y / 31] for x in range(32)] for y in range(32)]

:func:`encode_image` runs inside the sandbox on the returned value (the image domain's
``ProgramSpec.encode``): anything but a list or tuple is a ``TypeError``; a wrong shape, a
channel that is not a number or a non-finite channel is an :class:`ImageError`. Lengths
are checked level by level before the entries are walked, so a list of a million rows is
refused at once. :func:`validate_image` runs in the parent on the untrusted plain data the
sandbox sends back: the same checks, then every channel clipped to ``[0, 1]`` and rounded
to :data:`DIGITS` decimals: the canonical image the ledger stores and ``pack`` reads.

Standard library only: sandbox workers import this module and must start fast.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DEFAULT_SHAPE", "DIGITS", "ImageError", "encode_image", "validate_image"]

#: ``(height, width)`` of the images of the default domain.
DEFAULT_SHAPE: tuple[int, int] = (32, 32)
#: Decimals kept of each channel of a canonical image (1e-4 is far below one 8-bit level).
DIGITS = 4

Image = list[list[list[float]]]


class ImageError(ValueError):
    """A program's image is malformed; ``code`` says how (a stable, short tag).

    Codes: ``wrong_type`` (parent side: not a list), ``wrong_shape``, ``not_a_number``,
    ``non_finite``.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _type_name(obj: Any) -> str:
    return type(obj).__name__


def _channel(value: Any, y: int, x: int, k: int) -> float:
    """Channel ``k`` of pixel ``(y, x)`` as a finite float, or the :class:`ImageError` of
    why it is not one."""
    if not isinstance(value, int | float):
        raise ImageError(
            f"pixel ({y}, {x}) channel {k} is {_type_name(value)}, not a number", "not_a_number"
        )
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ImageError(
            f"pixel ({y}, {x}) channel {k} is {number}, not a finite number", "non_finite"
        )
    return number


def _plain(value: list | tuple, shape: tuple[int, int]) -> Image:
    """The image ``value`` as nested lists of finite floats, checking its shape first."""
    height, width = shape
    if len(value) != height:
        raise ImageError(f"image has {len(value)} rows, expected {height}", "wrong_shape")
    out: Image = []
    for y, row in enumerate(value):
        if not isinstance(row, list | tuple) or len(row) != width:
            got = f"{len(row)} pixels" if isinstance(row, list | tuple) else _type_name(row)
            raise ImageError(f"row {y} is {got}, expected {width} pixels", "wrong_shape")
        plain_row = []
        for x, pixel in enumerate(row):
            if not isinstance(pixel, list | tuple) or len(pixel) != 3:
                got = (
                    f"{len(pixel)} channels"
                    if isinstance(pixel, list | tuple)
                    else _type_name(pixel)
                )
                raise ImageError(f"pixel ({y}, {x}) is {got}, expected [r, g, b]", "wrong_shape")
            plain_row.append([_channel(c, y, x, k) for k, c in enumerate(pixel)])
        out.append(plain_row)
    return out


def encode_image(value: Any, shape: tuple[int, int] = DEFAULT_SHAPE) -> Image:
    """What ``draw()`` returned, as the plain nested lists the sandbox sends back.

    Runs in the sandbox: a value that is not a list or tuple of rows is a ``TypeError``;
    a wrong shape, a channel that is not a number or a non-finite one raises
    :class:`ImageError`. Channels are passed on unclipped (the parent clips them).
    """
    if not isinstance(value, list | tuple):
        raise TypeError(f"draw() returned {_type_name(value)}, not a list of rows of pixels")
    return _plain(value, shape)


def validate_image(raw: Any, shape: tuple[int, int] = DEFAULT_SHAPE) -> Image:
    """The canonical image of untrusted plain data: exact ``shape`` x 3, finite, each
    channel clipped to ``[0, 1]`` and rounded to :data:`DIGITS` decimals.

    Raises :class:`ImageError` (a ``ValueError``) for anything else.
    """
    if not isinstance(raw, list | tuple):
        raise ImageError(f"image is {_type_name(raw)}, not a list of rows", "wrong_type")
    # ``+ 0.0`` turns a -0.0 into 0.0, so equal images have equal texts.
    return [
        [[round(min(max(c, 0.0), 1.0), DIGITS) + 0.0 for c in pixel] for pixel in row]
        for row in _plain(raw, shape)
    ]
