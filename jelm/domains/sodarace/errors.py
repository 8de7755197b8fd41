"""The errors of the walker API and of walker validation (ELM, arXiv 2206.08896v1, §4).

``WalkerAPIError``: a program called the API wrongly. ``WalkerValidationError``: a walker
breaks a rule; each rule is its own subclass with a stable ``code`` that the sandbox and
the ledger record. Standard library only.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AmplitudeTooLarge",
    "CoordinateOutOfRange",
    "EmptyWalker",
    "JointsTooClose",
    "MalformedWalker",
    "MissingJoint",
    "NoLinks",
    "NonFiniteValue",
    "SelfLink",
    "TooManyJoints",
    "TooManyLinks",
    "TooManyLinksPerJoint",
    "WalkerAPIError",
    "WalkerValidationError",
    "short_repr",
    "type_name",
]


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


def type_name(value: Any) -> str:
    """The name of a value's type, for error messages."""
    return type(value).__name__


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = f"<{type_name(value)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
