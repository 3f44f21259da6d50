"""Progress reporting and cancellation shared by every long-running core function.

A long function takes ``progress=None``: a callable ``progress(fraction, message)``
with ``fraction`` in [0, 1]. To cancel, the callable raises :class:`Cancelled`; the
function lets it propagate and leaves no half-written result behind.
"""

from __future__ import annotations

from typing import Callable, Optional

ProgressCallback = Optional[Callable[[float, str], None]]


class Cancelled(Exception):
    """Raised through a core function when the user cancels."""


def report(progress: ProgressCallback, fraction: float, message: str = "") -> None:
    """Call ``progress`` if given, clipping ``fraction`` to [0, 1]."""
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def sub_progress(progress: ProgressCallback, start: float, stop: float, prefix: str = "") -> ProgressCallback:
    """A callback that maps [0, 1] onto [start, stop] of ``progress`` (for stages of a chain),
    ``prefix`` before every message (naming the part of the stage, e.g. "precision, half set 1 of 2: ")."""
    if progress is None:
        return None
    return lambda fraction, message="": progress(start + (stop - start) * fraction, prefix + message)
