"""Claims a notebook makes about its own run, checked where they are made.

A sentence such as "the gap shrinks" or "accuracy holds" is backed by a call
that computes the figures and either prints them::

    claim holds: the gap to the captions shrinks by at least 25%: 0.781 -> 0.552 (-29.3%)

or raises :class:`ClaimFailed` (an ``AssertionError``) with the same
figures, so that a notebook run under nbmake fails when its lesson no longer
shows. Each helper returns the line it printed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ClaimFailed", "check", "exceeds", "falls", "holds_within", "rises", "rises_overall"]


class ClaimFailed(AssertionError):
    """A notebook's claim about its own run does not hold on this run."""


def _finite(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(value):
        raise ClaimFailed(f"{name} is {value}: the run produced no finite figure")
    return value


def check(statement: str, holds: bool, figures: str) -> str:
    """Print ``"claim holds: <statement>: <figures>"`` when ``holds``, else
    raise :class:`ClaimFailed` naming the statement and the figures."""
    if not isinstance(statement, str) or not statement:
        raise TypeError("statement must be a non-empty string that says what is claimed")
    if not holds:
        raise ClaimFailed(f"claim does not hold: {statement}: {figures}")
    line = f"claim holds: {statement}: {figures}"
    print(line)
    return line


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def falls(statement: str, before, after, by: float = 0.0, digits: int = 3) -> str:
    """``after`` is below ``before`` by at least the fraction ``by`` of
    ``before`` (``by=0.25``: a cut of a quarter or more)."""
    before, after = _finite(before, "before"), _finite(after, "after")
    change = (after - before) / abs(before) if before else float("-inf") if after < 0 else 0.0
    return check(statement, after < before and change <= -by,
                 f"{_fmt(before, digits)} -> {_fmt(after, digits)} ({100 * change:+.1f}%"
                 + (f"; at least -{100 * by:.0f}% claimed)" if by else ")"))


def rises(statement: str, before, after, by: float = 0.0, digits: int = 3, scale: float = 1.0,
          unit: str = "") -> str:
    """``after`` exceeds ``before`` by more than ``by`` (in the figures' own
    units; ``scale=100, unit=" points"`` shows shares as points)."""
    before, after = _finite(before, "before"), _finite(after, "after")
    diff = after - before
    return check(statement, diff > by,
                 f"{_fmt(scale * before, digits)} -> {_fmt(scale * after, digits)} "
                 f"({scale * diff:+.{digits}f}{unit}" + (f"; more than +{scale * by:g}{unit} claimed)" if by else ")"))


def holds_within(statement: str, before, after, tolerance: float, digits: int = 3, scale: float = 1.0,
                 unit: str = "") -> str:
    """``after`` is at most ``tolerance`` below ``before`` (a figure that
    should not get worse, such as accuracy; rising is fine)."""
    before, after = _finite(before, "before"), _finite(after, "after")
    tolerance = _finite(tolerance, "tolerance")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    diff = after - before
    return check(statement, diff >= -tolerance,
                 f"{_fmt(scale * before, digits)} -> {_fmt(scale * after, digits)} "
                 f"({scale * diff:+.{digits}f}{unit}; at most -{scale * tolerance:g}{unit} allowed)")


def rises_overall(statement: str, values: Sequence[float], digits: int = 3, scale: float = 1.0,
                  unit: str = "") -> str:
    """A sequence (say one figure per epoch) ends above where it starts and
    its second half averages above its first: a rise that is more than the
    last step's noise."""
    values = [_finite(v, f"values[{i}]") for i, v in enumerate(values)]
    if len(values) < 2:
        raise ValueError(f"values needs at least two entries to rise, got {len(values)}")
    half = len(values) // 2
    first, second = sum(values[:half]) / half, sum(values[half:]) / (len(values) - half)
    shown = ", ".join(_fmt(scale * v, digits) for v in values)
    return check(statement, values[-1] > values[0] and second > first,
                 f"{shown} ({scale * (values[-1] - values[0]):+.{digits}f}{unit} from first to last)")


def exceeds(statement: str, larger, smaller, by: float = 0.0, names: tuple[str, str] = ("", ""),
            digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """``larger`` exceeds ``smaller`` by more than ``by``: two figures side
    by side rather than before and after (``names`` labels them)."""
    larger, smaller = _finite(larger, "larger"), _finite(smaller, "smaller")
    if len(names) != 2:
        raise ValueError(f"names must be two labels, got {names!r}")
    a, b = (f"{n} " if n else "" for n in names)
    diff = larger - smaller
    return check(statement, diff > by,
                 f"{a}{_fmt(scale * larger, digits)} vs {b}{_fmt(scale * smaller, digits)} "
                 f"({scale * diff:+.{digits}f}{unit}" + (f"; more than +{scale * by:g}{unit} claimed)" if by else ")"))
