"""Interpreter work per message: Python bytecodes executed per ask round trip and per tell.

``python -m synaptic_mesh.bench.opcodes [--transport tcp] [--top 15] [--json PATH]``

Two nodes in this process, linked by the transport (``bench/patterns.py``'s
``two_nodes``, so any registered scheme), run the workload of
``bench/links.py`` (an echo actor answering 64-byte asks, a counter taking
64-byte tells) while ``sys.settrace`` counts the bytecodes each function
executes (opcode events). Both nodes run here, so a round trip counts the
asker's and the answerer's work, the event loop's included.

Why count instead of time: on a shared two-core machine a timing moves by
tens of percent from one minute to the next, so two commits cannot be told
apart by their timings unless they differ a lot. A count of bytecodes is
the same on every run (give or take the loop's timers), so it shows what a
change to the hot path saves, to the instruction. It is a proxy: a bytecode
that allocates or calls into C costs more than one that loads a local, and
syscalls are not counted at all; the timed benches (``bench/links.py``)
remain the judges of speed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from synaptic_mesh.bench import _cli
from synaptic_mesh.bench._links_peer import Counter, Echo, Ping, Report
from synaptic_mesh.bench.patterns import two_nodes
from synaptic_mesh.runtime.node import Node

PAYLOAD = bytes(64)
WARM = 500
"""Messages sent before counting: caches filled, links warm, credit flowing."""

Key = tuple[str, str, int]


class OpcodeCounter:
    """Counts the bytecodes each function executes while it is installed (``with``)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[Key] = collections.Counter()

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            self.counts[(code.co_filename, code.co_name, code.co_firstlineno)] += 1
        elif event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        return self._trace

    def __enter__(self) -> OpcodeCounter:
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def top(self, n: int, per: int) -> list[tuple[float, str]]:
        """The ``n`` functions that executed the most, in bytecodes per message."""
        return [
            (count / per, f"{Path(file).name}:{line} {name}")
            for (file, name, line), count in self.counts.most_common(n)
        ]


async def count(scheme: str, asks: int, tells: int) -> tuple[OpcodeCounter, OpcodeCounter]:
    """Bytecodes of ``asks`` round trips and of ``tells`` tells (and the counter's report)."""
    async with two_nodes(scheme) as (far, near):
        await far.spawn(Echo, "bench.echo")
        await far.spawn(Counter, "bench.count", capacity=100_000)
        ping = Ping(PAYLOAD)
        await warm(near, ping)
        with OpcodeCounter() as asked:
            for _ in range(asks):
                await near.ask("bench.echo", ping, timeout=10)
        with OpcodeCounter() as told:
            for _ in range(tells):
                await near.tell("bench.count", ping)
            got = await near.ask("bench.count", Report(), timeout=10)
    if got != tells:
        raise RuntimeError(f"the counter got {got} of {tells} tells")
    return asked, told


async def warm(near: Node, ping: Ping) -> None:
    for _ in range(WARM):
        await near.ask("bench.echo", ping, timeout=10)
    for _ in range(WARM):
        await near.tell("bench.count", ping)
    await near.ask("bench.count", Report(), timeout=10)


def report(scheme: str, asked: OpcodeCounter, told: OpcodeCounter, args: argparse.Namespace) -> str:
    lines = [
        _cli.run_header("opcode", _cli.load_avg()),
        f"{args.asks:,} asks and {args.tells:,} tells of {len(PAYLOAD)} bytes over {scheme}://, "
        "both nodes in this process",
        "",
        f"bytecodes per ask round trip: {asked.total / args.asks:,.0f}",
        f"bytecodes per tell:           {told.total / args.tells:,.0f}",
    ]
    sections = (("ask round trip", asked, args.asks), ("tell", told, args.tells))
    for title, counter, per in sections if args.top else ():
        lines += ["", f"most bytecodes per {title}:"]
        lines += [f"{n:8.1f}  {where}" for n, where in counter.top(args.top, per)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.opcodes",
        description="Python bytecodes executed per ask round trip and per tell (deterministic).",
    )
    parser.add_argument("--transport", default="tcp", help="a registered scheme (default tcp)")
    parser.add_argument("-m", "--asks", type=int, default=1000, help="round trips (default 1,000)")
    parser.add_argument("-n", "--tells", type=int, default=5000, help="tells (default 5,000)")
    parser.add_argument("--top", type=int, default=0, help="list the N busiest functions")
    parser.add_argument("--json", metavar="PATH", help=_cli.JSON_HELP)
    args = parser.parse_args(argv)
    _cli.require_positive(parser, args, "asks", "tells")
    if args.top < 0:
        parser.error("--top must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    asked, told = asyncio.run(count(args.transport, args.asks, args.tells))
    print(report(args.transport, asked, told, args))
    if args.json:
        _cli.write_json(
            args.json,
            "opcodes",
            transport=args.transport,
            bytecodes_per_ask=asked.total / args.asks,
            bytecodes_per_tell=told.total / args.tells,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
