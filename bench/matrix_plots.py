"""The matrix's two plots: ``latency.png`` and ``throughput.png`` (matplotlib, Agg backend).

Each bar is a peer on a transport (this runtime or the raw floor next to it),
so the gap between a transport and its floor is visible at a glance; each
bar's whisker spans the smallest and largest round behind it; the axes
are logarithmic because an in-process ask and a broker round trip differ by
two orders of magnitude. Patterns get a panel of their own (p50 latency and
throughput per pattern, grouped by transport). Only rows from
``bench/matrix_rows.py`` are drawn; a plot with nothing to draw says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

LATENCY = (
    "ask p50",
    "ask p99",
    "ask p99.9",
    "round trip p50",
    "round trip p99",
    "round trip p99.9",
)
THROUGHPUT = ("tell throughput", "one-way throughput")
BULK = ("100 MB transfer, warm", "100 MB transfer, cold")

Bar = tuple[float, float, float]
"""A bar: the figure and the smallest and largest run behind it (the whisker)."""


def _short(metric: str) -> str:
    """``ask p50`` and ``round trip p50`` share a bar colour (``p50``); so do tell and one-way."""
    if metric in THROUGHPUT:
        return "messages/s"
    if metric in BULK:
        return metric.rsplit(", ", 1)[-1]
    return metric.removeprefix("ask ").removeprefix("round trip ")


def _bar(row: dict[str, Any]) -> Bar:
    value = row["value"]
    low = row.get("low") if row.get("low") is not None else value
    high = row.get("high") if row.get("high") is not None else value
    return value, min(low, value), max(high, value)


def _peer_bars(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, Bar]]:
    """``{"transport: peer": {short metric: bar}}`` for the non-pattern rows of ``metrics``.

    A peer compared with several floors has several rows of the same value; one is kept.
    """
    bars: dict[str, dict[str, Bar]] = {}
    for row in rows:
        if row["section"] == "patterns" or row["metric"] not in metrics or row["value"] is None:
            continue
        bars.setdefault(f"{row['transport']}: {row['peer']}", {})[_short(row["metric"])] = _bar(row)
    return bars


def _pattern_bars(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, dict[str, Bar]]:
    bars: dict[str, dict[str, Bar]] = {}
    for row in rows:
        if row["section"] == "patterns" and row["metric"] == metric and row["value"] is not None:
            bars.setdefault(row["transport"], {})[row["pattern"]] = _bar(row)
    return bars


def _grouped(ax: Any, bars: dict[str, dict[str, Bar]], keys: Sequence[str], xlabel: str) -> None:
    """Horizontal grouped bars: one group per label, one bar per key present, min..max whiskers."""
    labels = list(bars)
    keys = [k for k in keys if any(k in v for v in bars.values())]
    if not labels or not keys:
        ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    height = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ys = [n + i * height for n in range(len(labels))]
        got = [bars[label].get(key, (0.0, 0.0, 0.0)) for label in labels]
        whiskers = [[v - lo for v, lo, _ in got], [hi - v for v, _, hi in got]]
        ax.barh(
            ys,
            [v for v, _, _ in got],
            height=height,
            label=key,
            xerr=whiskers,
            error_kw={"elinewidth": 0.7, "capsize": 1.5, "alpha": 0.6},
        )
    ax.set_yticks([n + 0.4 - height / 2 for n in range(len(labels))])
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _figure(
    panels: list[tuple[str, dict[str, dict[str, Bar]], Sequence[str], str]],
    path: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [
        max(2.0, 0.3 * len(bars) * max(1, len(keys)) ** 0.5 + 1) for _, bars, keys, _ in panels
    ]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(10, sum(heights) + 1),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (name, bars, keys, xlabel) in zip(axes[:, 0], panels, strict=True):
        _grouped(ax, bars, keys, xlabel)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the suptitle
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Write ``latency.png`` and ``throughput.png`` into ``out_dir``; returns their file names."""
    rows = results["rows"]
    when = f"({'quick' if results['quick'] else 'full'} run {results['started']})"
    patterns = sorted({r["pattern"] for r in rows if r["section"] == "patterns"})
    latency: list[tuple[str, dict[str, dict[str, Bar]], Sequence[str], str]] = [
        (
            "ask / round trip by transport and peer (runtime next to its floor)",
            _peer_bars(rows, LATENCY),
            ("p50", "p99", "p99.9"),
            "microseconds (log)",
        ),
    ]
    throughput: list[tuple[str, dict[str, dict[str, Bar]], Sequence[str], str]] = [
        (
            "tell / one-way by transport and peer",
            _peer_bars(rows, THROUGHPUT),
            ("messages/s",),
            "messages per second (log)",
        ),
        (
            "100 MB attachment, warm and cold (floors: memcpy, raw sockets)",
            _peer_bars(rows, BULK),
            ("warm", "cold"),
            "GB/s (log)",
        ),
    ]
    if patterns:
        latency.append(
            (
                "patterns: p50 by transport",
                _pattern_bars(rows, "p50"),
                patterns,
                "microseconds (log)",
            )
        )
        throughput.append(
            (
                "patterns: throughput by transport",
                _pattern_bars(rows, "throughput"),
                patterns,
                "operations per second (log)",
            )
        )
    _figure(latency, out_dir / "latency.png", f"Synaptic Mesh latency {when}")
    _figure(throughput, out_dir / "throughput.png", f"Synaptic Mesh throughput {when}")
    return ["latency.png", "throughput.png"]
