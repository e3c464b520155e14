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
import shutil
import sys
import tempfile
from typing import Any

from synaptic_mesh.bench._cli import load_avg, run_header, write_json
from synaptic_mesh.bench._links_clients import Far, MeshClient
from synaptic_mesh.bench.links import (
    Small,
    Target,
    against_floor,
    parse_small_args,
    small_messages,
    small_table,
    targets_table,
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


RAW_PEER = "synaptic_mesh.bench.nng_peer"
"""The far process of the raw pynng floors (``Pair1`` driven by AIO or polled)."""


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
                far = await Far.start(mode, url, module=RAW_PEER)
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
        targets += against_floor(
            small,
            name,
            floor,
            rtt_most=1.3,
            oneway_least=0.70,
            rtt_name=f"{name} ask p50 / {floor} p50",
            oneway_name=f"{name} one-way / {floor} one-way",
        )
    return targets


def report(small: dict[str, Small], targets: list[Target]) -> str:
    return f"{small_table(small, LABEL)}\n\n{targets_table(targets)}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_small_args(
        argv,
        prog="python -m synaptic_mesh.bench.nng",
        description="nng+tcp:// and nng+ipc:// across two processes against raw pynng: "
        "64-byte round trips and one-way throughput.",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when done (1 with ``--strict`` if a target was missed)."""
    args = parse_args(argv)
    print(
        run_header("NNG", load_avg(), machine=False)
        + f"; {args.asks:,} asks and {args.oneway:,} one-way per round, "
        f"{args.repeats} rounds (+1 warm-up), peers interleaved",
        flush=True,
    )
    small = asyncio.run(run(args))
    targets = judge(small)
    print(f"\nload avg after {load_avg()}\n")
    print(report(small, targets))
    if args.json:
        figures = {name: vars(s) for name, s in small.items()}
        verdicts = [vars(t) for t in targets]
        write_json(args.json, "nng", args=vars(args), floors=FLOOR, small=figures, targets=verdicts)
    return 1 if args.strict and any(not t.met for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
