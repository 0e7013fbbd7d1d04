"""Medians, spreads and ratios over rounds, and how the report prints them.

The figures of one case vary up to 1.7x between two timed runs, so no figure is shown alone:
each is the median over rounds with its min-max spread. Systems are measured in turn within a
round (seconds apart), so a ratio is taken per round, then summarised the same way; the ratio
of the medians is shown beside it. A round that failed is ``None`` and is left out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Values = Sequence[float | None]


@dataclass(frozen=True)
class Spread:
    """The median of some values, their min and max, and how many there were."""

    median: float
    low: float
    high: float
    n: int


def _kept(values: Values) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def spread(values: Values) -> Spread | None:
    """Median and min-max of the values that are numbers; None when there are none."""
    kept = _kept(values)
    if not kept:
        return None
    return Spread(statistics.median(kept), min(kept), max(kept), len(kept))


def paired_ratios(numerators: Values, denominators: Values) -> list[float]:
    """``a[i] / b[i]`` for every round ``i`` where both are numbers and ``b[i]`` is not 0."""
    ratios = []
    for a, b in zip(numerators, denominators, strict=False):
        if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
            continue
        ratios.append(a / b)
    return ratios


@dataclass(frozen=True)
class Ratio:
    """A ratio of two systems: over per-round ratios (``rounds``) and of their medians."""

    rounds: Spread | None
    of_medians: float | None


def ratio_summary(numerators: Values, denominators: Values) -> Ratio:
    top, bottom = spread(numerators), spread(denominators)
    of_medians = top.median / bottom.median if top and bottom and bottom.median else None
    return Ratio(spread(paired_ratios(numerators, denominators)), of_medians)


def cross_ratio(numerators: Values, denominators: Values) -> Ratio:
    """The ratio of two unpaired sets (e.g. two concurrency levels): the ratio of medians, and
    as spread the extremes (min over max .. max over min); ``n`` is the pairs possible."""
    top, bottom = spread(numerators), spread(denominators)
    if not top or not bottom or not bottom.low or not bottom.median:
        return Ratio(None, None)
    value = top.median / bottom.median
    return Ratio(Spread(value, top.low / bottom.high, top.high / bottom.low,
                        min(top.n, bottom.n)), value)


# ----- formatting -----

def tps(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.1f}"


def ms(v: float | None, digits: int = 0) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v * 1000:.{digits}f} ms"


def times(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.2f}x"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return times(a / b)


def show(s: Spread | None, fmt: Callable[[float | None], str] = tps) -> str:
    """``12.3 (11.9-12.8)``: the median, then the range; ``n/a`` when nothing was measured."""
    if s is None:
        return "n/a"
    if s.n == 1:
        return f"{fmt(s.median)} (1 run)"
    return f"{fmt(s.median)} ({fmt(s.low)}-{fmt(s.high)})"


def show_ms(s: Spread | None, digits: int = 0) -> str:
    """``90 (50-130) ms``: a spread of seconds, in milliseconds."""
    if s is None:
        return "n/a"
    if s.n == 1:
        return f"{s.median * 1000:.{digits}f} ms (1 run)"
    low, mid, high = (f"{v * 1000:.{digits}f}" for v in (s.low, s.median, s.high))
    return f"{mid} ({low}-{high}) ms"


def show_ratio(r: Ratio) -> str:
    """``0.95x (0.90x-1.02x); of medians 0.96x``."""
    if r.rounds is None:
        return "n/a" if r.of_medians is None else f"of medians {times(r.of_medians)}"
    return f"{show(r.rounds, times)}; of medians {times(r.of_medians)}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
