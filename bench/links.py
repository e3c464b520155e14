"""Link transports across two OS processes: ``shm://`` and ``tcp://`` against their floors.

Absolute figures move from run to run and machine to machine (see
``shared/BASELINES.md``), so this script measures the transports *and* their
floors in the same run, and judges by ratios:

1. **Bulk**: a 100 MB float32 numpy array sent from this process to a node in
   another process (an ask; the far actor reads the last element and answers).
   Compared: ``shm://`` against ``tcp://`` (time ratio, target >= 7x) and
   ``shm://`` against a plain memcpy of the same 100 MB in this process
   (``np.copyto`` into a warm buffer; throughput ratio, target >= 70%). The
   raw asyncio floors move the same 100 MB too (one length-prefixed frame
   written from the array's buffer, acknowledged once received), so
   ``tcp://`` stands next to what plain asyncio TCP does. The first transfer
   (cold: fresh segments, fresh socket buffers) is reported on its own; the
   verdicts use the median of the warm ones.
2. **Small messages**: 64-byte ask round trips (p50/p99) and one-way
   throughput (tells, then one ask that returns the count) for ``shm://`` and
   ``tcp://``, next to the floors measured in the same run: a hand-written
   asyncio ``Protocol`` echo server over a Unix socket and over TCP
   (``bench/_links_peer.py``). Targets: round trip p50 <= 1.5x the floor of
   the same socket family, one-way >= 60% of it. p99 and p99.9 are reported
   too; p99.9 also pooled over every round's asks (15,000 in a full run, so
   it rests on its 15 slowest rather than one round's 5).

``--json PATH`` writes every round's figures, the floors each transport is
judged against, the bulk times and the targets; ``synaptic-mesh bench``
(``bench/matrix.py``) reads it.
Rounds interleave the four peers so that load drifts hit them alike. Run
``python -m synaptic_mesh.bench.links --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from synaptic_mesh.bench._cli import (
    add_output_options,
    dump_json,
    fill_unset,
    load_avg,
    measured_on,
    require_positive,
    run_header,
)
from synaptic_mesh.bench._links_clients import PAYLOAD, Far, MeshClient, RawClient
from synaptic_mesh.bench._stats import (
    fmt_pct,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    median,
    percentile,
    pooled_percentile,
    render_table,
    spread,
)
from synaptic_mesh.runtime.node import Node

ASKS = 5_000
ONEWAY = 50_000
REPEATS = 3
TRANSFERS = 7
BULK_FLOATS = 25_000_000  # 100,000,000 bytes
SMALL = ("raw uds", "shm", "raw tcp", "tcp")
BULK_PATHS = ("shm", "tcp", "raw uds", "raw tcp")
FLOOR = {"shm": "raw uds", "tcp": "raw tcp"}
LABEL = {
    "raw uds": "asyncio Protocol, Unix socket (floor)",
    "shm": "shm:// (synaptic_mesh)",
    "raw tcp": "asyncio Protocol, TCP (floor)",
    "tcp": "tcp:// (synaptic_mesh)",
}


@dataclass
class Small:
    """Figures of one peer for the small-message part, one entry per round."""

    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    oneway: list[float] = field(default_factory=list)
    p999: list[float] = field(default_factory=list)
    p999_pooled: float | None = None  # over every round's round trips together
    samples: int = 0  # round trips behind p999_pooled


@dataclass
class Target:
    """One verdict: a ratio measured in this run against its goal."""

    name: str
    measured: float
    goal: str
    met: bool
    text: str

    @property
    def verdict(self) -> str:
        return "ok" if self.met else "MISS"


# -- measuring ---------------------------------------------------------------------------------


def add_small_options(parser: argparse.ArgumentParser, quick: str = "") -> None:
    """The options of the 64-byte measurement (``small_messages``), shared by the benches
    that use it; ``quick`` adds to the ``--quick`` help what else it shortens."""
    parser.add_argument("-m", "--asks", type=int, help=f"round trips per round (default {ASKS:,})")
    parser.add_argument(
        "-n", "--oneway", type=int, help=f"one-way messages per round (default {ONEWAY:,})"
    )
    parser.add_argument("--repeats", type=int, help=f"measured rounds (default {REPEATS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: 1,000 asks, 10,000 one-way, 1 round{quick}",
    )
    add_output_options(parser)


def settle_small_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the defaults of ``add_small_options`` (smaller with ``--quick``) and check them."""
    args.asks = args.asks or (1_000 if args.quick else ASKS)
    args.oneway = args.oneway or (10_000 if args.quick else ONEWAY)
    args.repeats = args.repeats or (1 if args.quick else REPEATS)
    require_positive(parser, args, "asks", "oneway", "repeats")


def parse_small_args(argv: list[str] | None, *, prog: str, description: str) -> argparse.Namespace:
    """The command line of a bench that measures small messages only (``zmq.py``, ``nng.py``):
    the options of ``add_small_options``, parsed and settled."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_small_options(parser)
    args = parser.parse_args(argv)
    settle_small_options(parser, args)
    return args


async def small_messages(
    clients: dict[str, Any], args: argparse.Namespace, peers: tuple[str, ...] = SMALL
) -> dict[str, Small]:
    """Round trips and one-way rates of ``peers`` (clients with ``rtt`` and ``oneway``),
    interleaved round by round so that load drifts hit them alike; used by the
    other two-process benches too (``zmq.py``, ``nng.py``)."""
    results = {name: Small() for name in peers}
    rounds: dict[str, list[list[float]]] = {name: [] for name in peers}
    for name in peers:  # warm-up, not recorded
        await clients[name].rtt(max(args.asks // 10, 100))
        await clients[name].oneway(max(args.oneway // 10, 1000))
    for i in range(args.repeats):
        line = []
        for name in peers:
            gc.collect()
            samples = sorted(await clients[name].rtt(args.asks))
            gc.collect()
            rate = await clients[name].oneway(args.oneway)
            result = results[name]
            result.p50.append(percentile(samples, 50))
            result.p99.append(percentile(samples, 99))
            result.p999.append(percentile(samples, 99.9))
            rounds[name].append(samples)
            result.oneway.append(rate)
            line.append(f"{name} {fmt_us(result.p50[-1])} us / {fmt_rate(rate)} msg/s")
        print(f"round {i + 1}/{args.repeats}: " + "; ".join(line), flush=True)
    for name, result in results.items():
        result.p999_pooled, result.samples = pooled_percentile(rounds[name], 99.9)
    return results


def against_floor(
    small: dict[str, Small],
    peer: str,
    floor: str,
    *,
    rtt_most: float,
    oneway_least: float,
    rtt_name: str,
    oneway_name: str,
) -> list[Target]:
    """The two small-message targets of ``peer`` against its ``floor``, under the names given.

    Round trip p50 at most ``rtt_most`` times the floor's, one-way rate at
    least ``oneway_least`` of the floor's, both as ratios of medians; every
    two-process bench judges its transports this way, each with its own goals.
    """
    ratio = median(small[peer].p50) / median(small[floor].p50)
    share = median(small[peer].oneway) / median(small[floor].oneway)
    return [
        Target(rtt_name, ratio, f"<= {rtt_most:g}x", ratio <= rtt_most, fmt_ratio(ratio)),
        Target(oneway_name, share, f">= {oneway_least:.0%}", share >= oneway_least, fmt_pct(share)),
    ]


def small_table(
    small: dict[str, Small],
    labels: dict[str, str],
    *,
    pooled: bool = False,
    lost: dict[str, int] | None = None,
) -> str:
    """The small-message table of a two-process bench, headed, a row per peer of ``labels``.

    Round trip p50 and p99 (medians over rounds) with the p50's spread, the
    one-way rate with its spread, and the rounds. ``pooled`` adds p99.9 over
    every round's round trips; with ``lost`` the last column counts messages
    lost (at-most-once pub-sub) instead of rounds.
    """
    headers = ["peer", "rr p50 us", "rr p99 us"]
    if pooled:
        headers.append("rr p99.9 us (pooled)")
    headers += ["p50 spread", "one-way msg/s", "spread", "rounds" if lost is None else "lost"]
    rows = []
    for name, label in labels.items():
        s = small[name]
        row = [label, fmt_us(median(s.p50)), fmt_us(median(s.p99))]
        if pooled:
            row.append(fmt_us(s.p999_pooled if s.p999_pooled is not None else median(s.p999)))
        row += [fmt_pct(spread(s.p50)), fmt_rate(median(s.oneway)), fmt_pct(spread(s.oneway))]
        row.append(str(len(s.p50)) if lost is None else f"{lost.get(name, 0):,}")
        rows.append(row)
    right = [False] + [True] * (len(headers) - 1)
    return f"Small messages: {PAYLOAD}-byte payload, two processes\n" + render_table(
        headers, rows, right
    )


def targets_table(targets: list[Target]) -> str:
    """The verdicts of a two-process bench, headed: each ratio, its goal, ok or MISS."""
    return "Targets (ratios within this run)\n" + render_table(
        ["comparison", "measured", "target", "verdict"],
        [[t.name, t.text, t.goal, t.verdict] for t in targets],
        [False, True, True, False],
    )


async def bulk_transfers(
    clients: dict[str, Any], args: argparse.Namespace
) -> dict[str, list[float]] | None:
    """Seconds per transfer: index 0 is the cold one. ``None`` without numpy."""
    try:
        import numpy as np
    except ImportError:
        print("bulk: skipped, numpy is not installed", flush=True)
        return None
    data = np.arange(BULK_FLOATS, dtype=np.float32)
    dst = np.empty_like(data)
    times: dict[str, list[float]] = {n: [] for n in ("memcpy", *BULK_PATHS)}
    for i in range(args.transfers + 1):
        gc.collect()
        t0 = time.perf_counter()
        np.copyto(dst, data)
        times["memcpy"].append(time.perf_counter() - t0)
        for name in BULK_PATHS:
            gc.collect()
            times[name].append(await clients[name].bulk(data))
        what = "cold" if i == 0 else f"warm {i}/{args.transfers}"
        print(
            f"bulk {what}: " + ", ".join(f"{k} {v[-1] * 1000:.1f} ms" for k, v in times.items()),
            flush=True,
        )
    return times


async def run(args: argparse.Namespace) -> tuple[dict[str, Small], dict[str, list[float]] | None]:
    tmp = tempfile.mkdtemp(prefix="smesh-bench-", dir="/tmp")
    fars: list[Far] = []
    clients: dict[str, Any] = {}
    try:
        for name, argv in {
            "raw uds": ("raw", "uds", f"{tmp}/raw.sock"),
            "raw tcp": ("raw", "tcp"),
            "shm": ("mesh", f"shm://{tmp}/mesh"),
            "tcp": ("mesh", "tcp://127.0.0.1:0"),
        }.items():
            far = await Far.start(*argv)
            fars.append(far)
            if name.startswith("raw"):
                clients[name] = await RawClient.connect(name[4:], far.address)
                continue
            url = f"shm://{tmp}/mesh" if name == "shm" else f"tcp://127.0.0.1:0?peers={far.address}"
            node = Node(url, name="near")
            await node.start()
            clients[name] = MeshClient(node)
        small = await small_messages(clients, args)
        bulk = await bulk_transfers(clients, args) if args.transfers else None
        return small, bulk
    finally:
        for client in clients.values():
            await client.close()
        for far in fars:
            await far.close()
        shutil.rmtree(tmp, ignore_errors=True)


# -- judging and reporting -----------------------------------------------------------------------


def judge(small: dict[str, Small], bulk: dict[str, list[float]] | None) -> list[Target]:
    targets = []
    if bulk is not None:
        shm, tcp, memcpy = (median(bulk[k][1:]) for k in ("shm", "tcp", "memcpy"))
        targets.append(
            Target(
                "bulk: tcp:// time / shm:// time (warm)",
                tcp / shm,
                ">= 7x",
                tcp / shm >= 7,
                fmt_ratio(tcp / shm),
            )
        )
        targets.append(
            Target(
                "bulk: shm:// throughput / memcpy throughput (warm)",
                memcpy / shm,
                ">= 70%",
                memcpy / shm >= 0.70,
                fmt_pct(memcpy / shm),
            )
        )
    for name, floor in FLOOR.items():
        targets += against_floor(
            small,
            name,
            floor,
            rtt_most=1.5,
            oneway_least=0.60,
            rtt_name=f"{name}:// ask p50 / {floor} echo p50",
            oneway_name=f"{name}:// one-way / {floor} one-way",
        )
    return targets


def report(
    small: dict[str, Small], bulk: dict[str, list[float]] | None, targets: list[Target]
) -> str:
    parts = []
    if bulk is not None:
        rows = []
        for name, label in (
            ("memcpy", "plain memcpy, np.copyto (floor)"),
            ("shm", "shm:// (synaptic_mesh)"),
            ("tcp", "tcp:// (synaptic_mesh)"),
            ("raw uds", "asyncio Protocol, Unix socket, one frame"),
            ("raw tcp", "asyncio Protocol, TCP, one frame"),
        ):
            warm = bulk[name][1:]
            mid = median(warm)
            rows.append(
                [
                    label,
                    f"{bulk[name][0] * 1000:.1f}",
                    f"{mid * 1000:.1f}",
                    f"{BULK_FLOATS * 4 / mid / 1e9:.2f}",
                    fmt_pct(spread(warm)),
                    str(len(warm)),
                ]
            )
        parts.append(
            f"Bulk: {BULK_FLOATS * 4:,} bytes float32, this process -> far process\n"
            + render_table(
                ["path", "cold ms", "warm median ms", "warm GB/s", "spread", "warm runs"],
                rows,
                [False, True, True, True, True, True],
            )
        )
    parts.append(small_table(small, LABEL, pooled=True))
    parts.append(targets_table(targets))
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.links",
        description="shm:// and tcp:// across two processes against their floors: 100 MB "
        "transfers vs memcpy, 64-byte round trips and one-way throughput vs raw asyncio echo.",
    )
    add_small_options(parser, ", 3 transfers")
    parser.add_argument(
        "--transfers", type=int, help=f"warm 100 MB transfers (default {TRANSFERS}; 0: none)"
    )
    args = parser.parse_args(argv)
    settle_small_options(parser, args)
    fill_unset(args, full={"transfers": TRANSFERS}, quick={"transfers": 3})
    if args.transfers < 0:
        parser.error("--transfers must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when done (1 with ``--strict`` if a target was missed)."""
    args = parse_args(argv)
    load_before = load_avg()
    print(
        run_header("link", load_before, loop="loop=asyncio") + "\n"
        f"small: {args.asks:,} sequential asks and {args.oneway:,} tells per round, "
        f"{args.repeats} rounds (+1 warm-up), peers interleaved; "
        f"bulk: 1 cold + {args.transfers} warm transfers per path",
        flush=True,
    )
    small, bulk = asyncio.run(run(args))
    targets = judge(small, bulk)
    load_after = load_avg()
    print(f"\nload avg before {load_before}, after {load_after}\n")
    print(report(small, bulk, targets))
    if args.json:
        data = {
            "bench": "links",
            **measured_on({"before": load_before, "after": load_after}),
            "args": vars(args),
            "payload_bytes": PAYLOAD,
            "labels": LABEL,
            "floors": FLOOR,
            "small": {name: vars(s) for name, s in small.items()},
            "bulk_bytes": BULK_FLOATS * 4,
            "bulk_floor": "memcpy",
            "bulk_seconds": bulk,
            "bulk_note": "index 0 of each list is the cold transfer; the verdicts use the rest",
            "targets": [
                {
                    "name": t.name,
                    "measured": t.measured,
                    "target": t.goal,
                    "met": t.met,
                    "verdict": t.verdict,
                }
                for t in targets
            ],
        }
        dump_json(args.json, data)
    return 1 if args.strict and any(not t.met for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
