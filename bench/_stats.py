"""Small statistics and formatting helpers shared by the benchmark scripts.

Benchmarks on a shared two-core machine are noisy, so every figure is a median
of repeated runs reported with its spread, and comparisons are ratios taken
within one run. These helpers keep that arithmetic (and how it is printed) in
one place, so every bench script reports numbers the same way as
``shared/BASELINES.md`` does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated.

    Same definition as ``numpy.percentile``'s default, so figures compare with
    tools that use it. Raises ``ValueError`` on an empty sequence.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    pos = (len(sorted_values) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    frac = pos - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


TAIL_SAMPLES = 10
"""Samples a tail percentile should rest on (lie beyond it) before it is read as a figure."""


def tail_note(q: float, samples: int) -> str | None:
    """``None`` when the ``q``-th percentile of ``samples`` values rests on enough of them.

    The p99.9 of 5,000 round trips is decided by its 5 slowest: one stall more
    or less moves it. Below :data:`TAIL_SAMPLES` beyond the percentile, this
    says so in words a report can print next to the figure.
    """
    beyond = round(samples * (100 - q) / 100, 6)  # 1,000 x 0.1% is 1, not 0.99999
    if beyond >= TAIL_SAMPLES:
        return None
    slowest = max(1, round(beyond))
    return f"few samples: p{q:g} of {samples:,} rests on its {slowest} slowest" + (
        " (close to its maximum)" if beyond < 1 else ""
    )


def pooled_percentile(rounds: Sequence[Sequence[float]], q: float) -> tuple[float, int]:
    """The ``q``-th percentile over the samples of every round together, and how many there were.

    A tail percentile of one round rests on few samples; pooled over the
    rounds it rests on more (rounds interleave peers, so each saw the same
    mix of load). Raises ``ValueError`` when there is no sample at all.
    """
    merged = sorted(v for r in rounds for v in r)
    return percentile(merged, q), len(merged)


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (``nan`` for none, so a missing peer prints as ``-``)."""
    return statistics.median(values) if values else math.nan


def spread(values: Sequence[float]) -> float:
    """``(max - min) / median``: how far apart repeated runs landed (0 for one run)."""
    if not values:
        return math.nan
    mid = statistics.median(values)
    if mid == 0:
        return math.nan
    return (max(values) - min(values)) / mid


def fmt_rate(value: float) -> str:
    """A rate as a whole number with thousands separators: ``2,274,664``."""
    return "-" if math.isnan(value) else f"{value:,.0f}"


def fmt_us(value: float) -> str:
    """Microseconds with three significant digits (``5.69``, ``10.6``, ``168``, ``1,052``)."""
    if math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_pct(value: float) -> str:
    """A fraction as a whole percentage: ``0.12`` -> ``12%``."""
    return "-" if math.isnan(value) else f"{value * 100:.0f}%"


def fmt_ratio(value: float) -> str:
    """A ratio with two decimals and an ``x``: ``0.62x``."""
    return "-" if math.isnan(value) else f"{value:.2f}x"


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    """A Markdown table with padded columns (readable in a terminal, pasteable in a doc).

    ``right[i]`` right-aligns column ``i`` (numbers); the others are left-aligned.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2))
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
