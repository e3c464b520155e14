"""``nng+tcp://`` and ``nng+ipc://`` across two OS processes, against raw pynng in the same run.

For each NNG transport (TCP and IPC) three peers are measured, interleaved
round by round so load drifts hit them alike:

* **the mesh**: a ``Node`` on ``nng+tcp://`` / ``nng+ipc://`` here, a node in
  another process (``bench/_links_peer.py``, the same far node
  ``bench/links.py`` uses). Round trip: ``await node.ask("bench.echo",
  Ping(64 bytes), timeout=10)``; one-way: ``await node.tell("bench.count",
  ...)`` N times, then one ask that returns the count.
* **the floor**: raw pynng, a ``Pair1`` socket each side, the far one in
  another process (``bench/nng_peer.py``), both on pynng's asyncio API
  (``await asend`` / ``await arecv``), 64-byte messages. Round trip: send and
  await the echo; one-way: N sends, then a report request.
* **NNG polled** (for information): the same raw peers driven through NNG's
  pollable descriptors and non-blocking calls, as ``transports/nng_link.py``
  drives its sockets. The gap between it and the mesh is what the runtime
  (node, codec, router, actor) adds; the gap between it and the floor is
  what pynng's AIO costs.

Targets: mesh round trip p50 <= 1.3x raw, one-way >= 70% of raw. Run
``python -m synaptic_mesh.bench.nng --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
from typing import Any

from synaptic_mesh.bench._links_clients import PAYLOAD, Far, MeshClient
from synaptic_mesh.bench._stats import (
    fmt_pct,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    median,
    render_table,
    spread,
    write_json,
)
from synaptic_mesh.bench.links import (
    Small,
    Target,
    add_small_options,
    settle_small_options,
    small_messages,
)
from synaptic_mesh.bench.nng_peer import RawNngClient
from synaptic_mesh.runtime.node import Node

PEERS = ("raw nng tcp", "polled nng tcp", "nng+tcp", "raw nng ipc", "polled nng ipc", "nng+ipc")
FLOOR = {"nng+tcp": "raw nng tcp", "nng+ipc": "raw nng ipc"}
LABEL = {
    "raw nng tcp": "pynng Pair1 asyncio, TCP (floor)",
    "polled nng tcp": "pynng Pair1 polled fds, TCP (info)",
    "nng+tcp": "nng+tcp:// (synaptic_mesh)",
    "raw nng ipc": "pynng Pair1 asyncio, IPC (floor)",
    "polled nng ipc": "pynng Pair1 polled fds, IPC (info)",
    "nng+ipc": "nng+ipc:// (synaptic_mesh)",
}


async def start_raw(mode: str, url: str) -> Far:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "synaptic_mesh.bench.nng_peer",
        mode,
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
    if not line or line[0] != "READY":
        process.kill()
        raise RuntimeError(f"raw nng peer {url} did not start: {line}")
    return Far(process, line[1])


async def measure(clients: dict[str, Any], args: argparse.Namespace) -> dict[str, Small]:
    return await small_messages(clients, args, PEERS)


async def run(args: argparse.Namespace) -> dict[str, Small]:
    tmp = tempfile.mkdtemp(prefix="smesh-nngb-", dir="/tmp")
    fars: list[Far] = []
    clients: dict[str, Any] = {}
    try:
        for name in PEERS:
            if name.startswith(("raw", "polled")):
                mode = "aio" if name.startswith("raw") else "poll"
                url = "tcp://127.0.0.1:0" if name.endswith("tcp") else f"ipc://{tmp}/{mode}.sock"
                far = await start_raw(mode, url)
                fars.append(far)
                clients[name] = await RawNngClient.connect(far.address, mode)
                continue
            tcp = name == "nng+tcp"
            far = await Far.start(
                "mesh", "nng+tcp://127.0.0.1:0" if tcp else f"nng+ipc://{tmp}/far"
            )
            fars.append(far)
            near = "nng+tcp://127.0.0.1:0" if tcp else f"nng+ipc://{tmp}/near"
            near_url = f"{near}?peers={far.address}"
            node = Node(near_url, name="near")
            await node.start()
            clients[name] = MeshClient(node)
        return await measure(clients, args)
    finally:
        for client in clients.values():
            await client.close()
        for far in fars:
            await far.close()
        shutil.rmtree(tmp, ignore_errors=True)


def judge(small: dict[str, Small]) -> list[Target]:
    targets = []
    for name, floor in FLOOR.items():
        ratio = median(small[name].p50) / median(small[floor].p50)
        targets.append(
            Target(
                f"{name} ask p50 / {floor} p50", ratio, "<= 1.3x", ratio <= 1.3, fmt_ratio(ratio)
            )
        )
        share = median(small[name].oneway) / median(small[floor].oneway)
        targets.append(
            Target(
                f"{name} one-way / {floor} one-way", share, ">= 70%", share >= 0.70, fmt_pct(share)
            )
        )
    return targets


def report(small: dict[str, Small], targets: list[Target]) -> str:
    rows = []
    for name in PEERS:
        s = small[name]
        rows.append(
            [
                LABEL[name],
                fmt_us(median(s.p50)),
                fmt_us(median(s.p99)),
                fmt_pct(spread(s.p50)),
                fmt_rate(median(s.oneway)),
                fmt_pct(spread(s.oneway)),
                str(len(s.p50)),
            ]
        )
    table = render_table(
        ["peer", "rr p50 us", "rr p99 us", "p50 spread", "one-way msg/s", "spread", "rounds"],
        rows,
        [False, True, True, True, True, True, True],
    )
    verdicts = render_table(
        ["comparison", "measured", "target", "verdict"],
        [[t.name, t.text, t.goal, t.verdict] for t in targets],
        [False, True, True, False],
    )
    return (
        f"Small messages: {PAYLOAD}-byte payload, two processes\n{table}\n\n"
        f"Targets (ratios within this run)\n{verdicts}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.nng",
        description="nng+tcp:// and nng+ipc:// across two processes against raw pynng: "
        "64-byte round trips and one-way throughput.",
    )
    add_small_options(parser)
    args = parser.parse_args(argv)
    settle_small_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when done (1 with ``--strict`` if a target was missed)."""
    args = parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"synaptic_mesh NNG bench: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load avg {load}; {args.asks:,} asks and {args.oneway:,} one-way per round, "
        f"{args.repeats} rounds (+1 warm-up), peers interleaved",
        flush=True,
    )
    small = asyncio.run(run(args))
    targets = judge(small)
    print(f"\nload avg after {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(report(small, targets))
    if args.json:
        figures = {name: vars(s) for name, s in small.items()}
        verdicts = [vars(t) for t in targets]
        write_json(args.json, "nng", args=vars(args), floors=FLOOR, small=figures, targets=verdicts)
    return 1 if args.strict and any(not t.met for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
