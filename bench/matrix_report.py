"""The matrix's outputs in words: ``results.json``, ``report.md`` and the terminal tables.

The report leads with what a reader asks first: did each section run (and if
not, why), what the seed's "shared memory is 7x faster than TCP" comes to on
this machine (bulk and small messages separately, each ratio with the
baseline it divides by), and every goal of the earlier issues with its
measured ratio and PASS/MISS. The full tables follow. Everything here reads
the rows of ``bench/matrix_rows.py``; nothing is measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synaptic_mesh.bench._stats import fmt_rate, fmt_us, render_table
from synaptic_mesh.bench.matrix_rows import COLD, FLOOR, WARM

SEED_CLAIM = "shared memory is 7x faster than TCP"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "us":
        return fmt_us(value)
    if unit in ("msgs/s", "ops/s"):
        return fmt_rate(value)
    if unit == "GB/s":
        return f"{value:.2f}"
    return f"{value:g}"


def fmt_ratio(row: dict[str, Any]) -> str:
    return row.get("ratio_text") or "-"


def fmt_range(row: dict[str, Any]) -> str:
    return row.get("range_text") or "-"


def fmt_spread(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _find(rows: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def seed_claim(results: dict[str, Any]) -> list[list[str]]:
    """The 7x claim against what this run measured: [what, ratio, baseline, verdict] rows.

    Bulk comes from the ``bulk`` section (100 MB, warm and cold), small
    messages from ``links`` (64 bytes); each ratio names the divisor.
    """
    rows = results["rows"]
    out: list[list[str]] = []
    own_tcp = "tcp:// of this runtime, same message, same run"
    for metric, floor_name, what, baseline in (
        (WARM, "tcp://", "bulk: 100 MB ndarray ask, shm:// vs tcp:// (warm)", own_tcp),
        (
            COLD,
            "tcp://",
            "bulk: 100 MB ndarray ask, shm:// vs tcp:// (cold, first transfer on a fresh link)",
            own_tcp,
        ),
        (
            WARM,
            "raw tcp",
            "bulk: shm:// vs the same 100 MB as one frame over raw asyncio TCP (warm)",
            "raw asyncio Protocol over TCP, transport.write, no runtime",
        ),
    ):
        row = _find(rows, section="bulk", peer="shm://", metric=metric, floor_name=floor_name)
        if row and row["ratio"] is not None:
            shown = _with_range(f"{row['ratio']:.2f}x", row)
            out.append([what, shown, baseline, _holds(row["ratio"])])
    memcpy = _find(rows, section="bulk", peer="shm://", metric=WARM, floor_name="memcpy")
    if memcpy and memcpy["ratio"] is not None:
        out.append(
            [
                "bulk: shm:// vs a memcpy of the same 100 MB (physical floor, warm)",
                _with_range(f"{memcpy['ratio'] * 100:.0f}% of memcpy", memcpy),
                "np.copyto into a warm buffer, same process",
                "-",
            ]
        )
    for metric, lower in (("round trip p50", True), ("one-way throughput", False)):
        shm = _find(rows, section="links", peer="shm://", metric=metric)
        tcp = _find(rows, section="links", peer="tcp://", metric=metric)
        if shm and tcp and shm["value"] and tcp["value"]:
            ratio = tcp["value"] / shm["value"] if lower else shm["value"] / tcp["value"]
            out.append(
                [
                    f"small (64 B): shm:// vs tcp://, {metric}",
                    f"{ratio:.2f}x",
                    "tcp:// of this runtime" + (" (tcp p50 / shm p50)" if lower else ""),
                    _holds(ratio),
                ]
            )
        raw_uds = _find(rows, section="links", peer="raw uds", metric=metric)
        raw_tcp = _find(rows, section="links", peer="raw tcp", metric=metric)
        if raw_uds and raw_tcp and raw_uds["value"] and raw_tcp["value"]:
            ratio = (
                raw_tcp["value"] / raw_uds["value"]
                if lower
                else raw_uds["value"] / raw_tcp["value"]
            )
            out.append(
                [
                    f"small (64 B): floors, raw asyncio Unix socket vs raw TCP, {metric}",
                    f"{ratio:.2f}x",
                    "raw asyncio Protocol over TCP (what the OS offers)",
                    "-",
                ]
            )
    return out


def _holds(ratio: float) -> str:
    """Whether a shm:// speed-up bears out the seed's 7x claim, in the claim table's words."""
    return "holds" if ratio >= 7 else "does not hold"


def _with_range(text: str, row: dict[str, Any]) -> str:
    """``text`` followed by the per-round range of the same ratio, when there is one."""
    return f"{text} ({row['range_text']})" if row.get("range_text") else text


def claim_summary(claim: list[list[str]]) -> str:
    """One sentence: for which kind of traffic the 7x claim holds in this run."""
    judged = [(what, ratio, verdict) for what, ratio, _, verdict in claim if verdict != "-"]
    holds = [f"{what} ({ratio})" for what, ratio, v in judged if v == "holds"]
    fails = [f"{what} ({ratio})" for what, ratio, v in judged if v != "holds"]
    said = []
    if holds:
        said.append("holds for " + "; ".join(holds))
    if fails:
        said.append("does not hold for " + "; ".join(fails))
    return "In this run the 7x claim " + ". It ".join(said) + "." if said else ""


def goal_rows(results: dict[str, Any]) -> list[list[str]]:
    table = []
    for row in results["rows"]:
        if not row.get("target"):
            continue
        where = row["transport"] + (f" {row['pattern']}" if row["pattern"] else "")
        source = row.get("goal_source") or f"bench.{row['section']}"
        table.append(
            [
                f"issue {GOAL_ISSUES[source]} ({source})" if source in GOAL_ISSUES else source,
                where,
                f"{row['peer']} {row['metric']}",
                row["floor_name"] or "-",
                fmt_ratio(row),
                fmt_range(row),
                row["target"],
                row["verdict"],
            ]
        )
    return table


GOAL_ISSUES = {
    "bench.inproc": 3,
    "bench.links": 5,
    "bench.patterns": 6,
    "bench.zmq": 7,
    "bench.nng": 7,
    "bench.nats": 8,
}
"""The issue whose "Speed" section states each script's goals."""

GOAL_HEADERS = [
    "goal of",
    "transport",
    "measured",
    "baseline",
    "ratio",
    "per round",
    "target",
    "verdict",
]


def section_rows(results: dict[str, Any]) -> list[list[str]]:
    table = []
    for s in results["sections"]:
        detail = s["reason"] or ""
        if s["notes"]:
            detail = "; ".join(filter(None, [detail, *s["notes"]]))
        table.append([s["name"], s["status"], f"{s['seconds']:.0f}", str(s["figures"]), detail])
    return table


def figure_rows(results: dict[str, Any], *, patterns: bool) -> list[list[str]]:
    table = []
    for row in results["rows"]:
        if (row["section"] == "patterns") != patterns:
            continue
        lead = (
            [row["transport"], row["pattern"]] if patterns else [row["section"], row["transport"]]
        )
        table.append(
            [
                *lead,
                row["peer"],
                row["metric"],
                fmt_value(row["value"], row["unit"]),
                fmt_span(row),
                row["unit"],
                fmt_spread(row["spread"]),
                str(row["runs"]),
                row["floor_name"] or "-",
                fmt_value(row["floor_value"], row["unit"]),
                fmt_ratio(row),
                fmt_range(row),
                row["verdict"] if row.get("target") else "",
                row.get("note") or "",
            ]
        )
    return table


def fmt_span(row: dict[str, Any]) -> str:
    """``min..max`` of the runs behind a figure (``-`` for a single run)."""
    low, high = row.get("low"), row.get("high")
    if low is None or high is None or row.get("runs", 0) < 2:
        return "-"
    return f"{fmt_value(low, row['unit'])}..{fmt_value(high, row['unit'])}"


def _figure_headers(patterns: bool) -> list[str]:
    lead = ["transport", "pattern"] if patterns else ["section", "transport"]
    return [
        *lead,
        "peer",
        "metric",
        "value",
        "min..max",
        "unit",
        "spread",
        "runs",
        "floor",
        "floor value",
        "ratio",
        "per round",
        "verdict",
        "note",
    ]


RIGHT_FIGURES = [
    *(False, False, False, False),
    *(True, True, False, True, True),
    *(False, True, True, True),
    *(False, False),
]


BULK_HEADERS = [
    "path",
    "receiver",
    "cold GB/s (min..max)",
    "warm GB/s (min..max)",
    "warm vs memcpy",
    "warm vs tcp://",
    "cold+warm runs",
]


def bulk_rows(results: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """The 100 MB transfer per path (floors first), and the skipped transports with why."""
    raw = (results.get("raw") or {}).get("bulk") or {}
    rows = [r for r in results["rows"] if r["section"] == "bulk"]
    selected = set(results["selection"]["transports"])
    table = []
    for name, path in (raw.get("paths") or {}).items():
        peer = name if name in ("memcpy", "raw uds", "raw tcp") else f"{name}://"
        warm = _find(rows, peer=peer, metric=WARM)
        cold = _find(rows, peer=peer, metric=COLD)
        if warm is None and cold is None:
            continue
        vs_memcpy = _find(rows, peer=peer, metric=WARM, floor_name="memcpy")
        vs_tcp = _find(rows, peer=peer, metric=WARM, floor_name="tcp://")

        def rate(row: dict[str, Any] | None) -> str:
            if row is None or row["value"] is None:
                return "-"
            span = fmt_span(row)
            return fmt_value(row["value"], "GB/s") + (f" ({span})" if span != "-" else "")

        table.append(
            [
                peer + (" (floor)" if (warm or cold or {}).get("transport") == FLOOR else ""),
                path.get("receiver", "-"),
                rate(cold),
                rate(warm),
                _share(vs_memcpy),
                f"{vs_tcp['ratio']:.2f}x" if vs_tcp and vs_tcp["ratio"] else "-",
                f"{len(path.get('cold_s', []))}+{len(path.get('warm_s', []))}",
            ]
        )
    skipped = [
        f"{scheme}:// skipped: {why}"
        for scheme, why in (raw.get("skipped") or {}).items()
        if scheme in selected
    ]
    failed = [
        f"{r['peer']} failed transfers: {r.get('note')}"
        for r in rows
        if r["metric"] == "failed transfers"
    ]
    return table, skipped + failed


def _share(row: dict[str, Any] | None) -> str:
    return f"{row['ratio'] * 100:.0f}%" if row and row["ratio"] is not None else "-"


PEER_HEADERS = [
    "peer",
    "tell msgs/s",
    "tell spread",
    "tell vs floor",
    "ask p50 us",
    "ask p99 us",
    "ask p99.9 us",
    "ask p50 vs floor",
]


def peer_rows(results: dict[str, Any]) -> list[list[str]]:
    """One line per in-process peer: tell and ask figures, each against the floor."""
    by_peer: dict[str, dict[str, dict[str, Any]]] = {}
    for row in results["rows"]:
        if row["section"] != "inproc" or row["floor_name"] not in (None, "handactor_waiter"):
            continue
        by_peer.setdefault(row["peer"], {})[row["metric"]] = row
    table = []
    for peer, m in by_peer.items():
        tell, p50 = m.get("tell throughput", {}), m.get("ask p50", {})

        def vs(row: dict[str, Any]) -> str:
            return "floor" if row and row.get("floor_name") is None else fmt_ratio(row)

        table.append(
            [
                peer,
                fmt_value(tell.get("value"), "msgs/s"),
                fmt_spread(tell.get("spread")),
                vs(tell),
                fmt_value(p50.get("value"), "us"),
                fmt_value(m.get("ask p99", {}).get("value"), "us"),
                fmt_value(m.get("ask p99.9", {}).get("value"), "us"),
                vs(p50),
            ]
        )
    return table


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(_strict(results), out, indent=1, allow_nan=False)
        out.write("\n")


def _strict(value: Any) -> Any:
    """The scripts' JSON may hold NaN (a ratio with no floor); strict JSON says ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def write_report(results: dict[str, Any], path: Path, plots: list[str]) -> None:
    machine = results["machine"]
    mode = (
        "quick (smoke run: one round and few samples per figure, no spread, tail percentiles "
        "resting on a handful of samples; not for judging)"
        if results["quick"]
        else "full"
    )
    goals = goal_rows(results)
    passed = sum(1 for g in goals if g[-1] == "PASS")
    parts = [
        "# Synaptic Mesh benchmark matrix",
        "",
        f"Run {results['started']} .. {results['finished']}, wall time "
        f"{results['wall_seconds']:.0f} s, mode: {mode}. Python {machine['python']} on "
        f"{machine['machine']}, {machine['cpus']} CPUs, load average before "
        f"{machine.get('load_avg_before')}, after {machine.get('load_avg')}. "
        f"Transports selected: {', '.join(results['selection']['transports'])}; patterns: "
        f"{', '.join(results['selection']['patterns']) or 'none'}.",
        "",
        "Every figure is a median over the script's rounds, shown with the smallest and largest "
        "round (`min..max`) and its spread `(max - min) / median`; a p99.9 is taken over every "
        "round's samples together where the script keeps them, and the `note` column says when "
        "a percentile rests on fewer than 10 samples. Every ratio divides by a floor measured "
        "by the same script in the same run (never by a figure from another run or machine); "
        "`per round` is the range of the same ratio taken round by round.",
        "",
        "## Sections",
        "",
        render_table(
            ["section", "status", "seconds", "figures", "reason / notes"],
            section_rows(results),
            [False, False, True, True, False],
        ),
        "",
        "## The seed's claim",
        "",
        f'The seed claims "{SEED_CLAIM}". Measured in this run (ratios > 1 favour shared memory):',
        "",
    ]
    claim = seed_claim(results)
    if claim:
        parts.append(
            render_table(
                ["comparison", "ratio", "baseline (the divisor)", "7x claim"],
                claim,
                [False, True, False, False],
            )
        )
        parts += ["", claim_summary(claim)]
    else:
        parts.append("Not measured: the `links` section did not run (see Sections).")
    parts += [
        "",
        f"## Goals of the earlier issues ({passed} of {len(goals)} PASS)",
        "",
        "Ratios are `value / floor` (latency: lower is better; throughput: higher is better); "
        "`per round` is the range of the same ratio taken round by round. Pattern rows show the "
        "cost over the bare twin instead, `twin rate / pattern rate - 1` (computed from the "
        "medians; `bench.patterns` prints the median of the per-round costs, which can differ "
        "slightly).",
        "",
        render_table(GOAL_HEADERS, goals, [False, False, False, False, True, True, True, False])
        if goals
        else "No goal could be judged in this run.",
        "",
    ]
    bulk, bulk_notes = bulk_rows(results)
    if bulk or bulk_notes:
        size = ((results.get("raw") or {}).get("bulk") or {}).get("bulk_bytes", 100_000_000)
        parts += [
            "## 100 MB attachment on every transport",
            "",
            f"A {size:,}-byte float32 ndarray in a `@message` field (it travels as a frame of "
            "its own), sent as an ask from a node here to an actor that reads its last element. "
            "Each round opens every path afresh: the cold transfer is the first on a new link "
            "(one per round), the warm ones follow on it. GB/s are medians with min..max over "
            "the transfers; the ratios divide by memcpy of the same bytes (`np.copyto` into a "
            "buffer) or by `tcp://`, measured in the same run.",
            "",
        ]
        if bulk:
            parts.append(
                render_table(BULK_HEADERS, bulk, [False, False, True, True, True, True, True])
            )
        if bulk_notes:
            parts += ["", *(f"- {n}" for n in bulk_notes)]
        parts.append("")
    peers = peer_rows(results)
    if peers:
        parts += [
            "## In-process peers (the foundation issue's comparison)",
            "",
            "Each peer's median over rounds with its spread; `vs floor` divides by the "
            "hand-written asyncio actor (`handactor_waiter`) of the same run.",
            "",
            render_table(PEER_HEADERS, peers, [False, True, True, True, True, True, True, True]),
            "",
        ]
    parts += [
        "## Every figure: peers and transports",
        "",
        render_table(_figure_headers(False), figure_rows(results, patterns=False), RIGHT_FIGURES),
        "",
    ]
    pattern_table = figure_rows(results, patterns=True)
    if pattern_table:
        parts += [
            "## Patterns (against each pattern's bare `node.publish` twin)",
            "",
            render_table(_figure_headers(True), pattern_table, RIGHT_FIGURES),
            "",
        ]
    failed = [s for s in results["sections"] if s["status"] == "failed" and s["tail"]]
    for s in failed:
        parts += [f"## What `{s['name']}` printed last", "", "```", *s["tail"], "```", ""]
    if plots:
        parts += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    path.write_text("\n".join(parts), encoding="utf-8")


def terminal_tables(results: dict[str, Any]) -> list[Any]:
    """Rich tables for the end of the run: sections, the 7x claim, and the goals."""
    from rich.table import Table

    tables = []
    sections = Table(title="Sections")
    for header in ("section", "status", "s", "figures", "reason / notes"):
        sections.add_column(header, overflow="fold")
    for name, status, seconds, figures, detail in section_rows(results):
        colour = {"ran": "green", "skipped": "yellow", "failed": "red"}.get(status, "")
        sections.add_row(name, f"[{colour}]{status}[/]", seconds, figures, detail)
    tables.append(sections)
    claim = seed_claim(results)
    if claim:
        seed = Table(title=f'Seed claim: "{SEED_CLAIM}"')
        for header in ("comparison", "ratio", "baseline", "7x"):
            seed.add_column(header, overflow="fold")
        for row in claim:
            seed.add_row(*row)
        tables.append(seed)
    goals = Table(title="Goals (ratio = value / floor, same run)")
    for header in GOAL_HEADERS:
        goals.add_column(header, overflow="fold", justify="right" if header == "ratio" else "left")
    for row in goal_rows(results):
        colour = "green" if row[-1] == "PASS" else "red" if row[-1] == "MISS" else ""
        goals.add_row(*row[:-1], f"[{colour}]{row[-1]}[/]" if colour else row[-1])
    tables.append(goals)
    return tables
