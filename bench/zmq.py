"""The ZeroMQ transports across two OS processes, next to raw pyzmq doing the same.

For each scheme, in one run, interleaved round by round:

* ``zmq://`` (ROUTER-DEALER links under the subject router) and ``zmq+pair://``
  (the same links; its PAIR sockets serve hotlines only) against a raw
  ``zmq.asyncio`` DEALER talking to a raw ROUTER in the far process;
* ``zmq+pubsub://`` (through the XPUB-XSUB proxy, run by the far node) against
  raw PUB/SUB sockets through the same proxy code in the far process;
* a ``zmq+pair://`` hotline (its own PAIR sockets; measured from inside an
  actor holding the line) against a raw PAIR socket talking to a raw PAIR.

Measured: 64-byte round trips (a node's ``ask`` against an echo; raw: one
message out, the echo back), p50 and p99; one-way throughput (``tell``s
counted by the far side, then one round trip for the count). Targets: round
trip p50 at most 1.3x the raw one, one-way at least 70% of raw. On pub-sub a
subscriber that falls behind loses messages (at-most-once); one-way rates
count what arrived and the loss is printed.

Run ``python -m synaptic_mesh.bench.zmq --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import zmq
import zmq.asyncio

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on
from synaptic_mesh.bench._cli import load_avg, run_header, write_json
from synaptic_mesh.bench._links_clients import PAYLOAD, Far, MeshClient
from synaptic_mesh.bench._links_peer import Ping, Report
from synaptic_mesh.bench.links import (
    Small,
    Target,
    against_floor,
    parse_small_args,
    small_messages,
    small_table,
    targets_table,
)
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node

PEERS = ("raw router", "zmq", "zmq+pair", "raw pubsub", "zmq+pubsub", "raw pair", "hotline")
FLOOR = {
    "zmq": "raw router",
    "zmq+pair": "raw router",
    "zmq+pubsub": "raw pubsub",
    "hotline": "raw pair",
}
LABEL = {
    "raw router": "raw pyzmq DEALER -> ROUTER (floor)",
    "zmq": "zmq:// asks and tells (synaptic_mesh)",
    "zmq+pair": "zmq+pair:// asks and tells (synaptic_mesh)",
    "raw pubsub": "raw pyzmq PUB/SUB via proxy (floor)",
    "zmq+pubsub": "zmq+pubsub:// asks and tells (synaptic_mesh)",
    "raw pair": "raw pyzmq PAIR <-> PAIR (floor)",
    "hotline": "zmq+pair:// hotline on PAIR (synaptic_mesh)",
}
COUNT_BYTES = 8
FAR_PEER = "synaptic_mesh.bench.zmq_peer"
"""The far process: raw pyzmq floors, or a node with ``mesh URL``."""


class RawClient:
    """A raw pyzmq floor: frame 0 says echo (E), count (C) or report (R); ``tx`` sends the
    requests and ``rx`` receives the echoes and the count (one socket, or PUB and SUB)."""

    tx: zmq.asyncio.Socket
    rx: zmq.asyncio.Socket
    lost = 0

    async def rtt(self, n: int) -> list[float]:
        send, recv, samples = self.tx.send_multipart, self.rx.recv_multipart, []
        frame, clock = [b"E", bytes(PAYLOAD)], time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            await send(frame)
            await recv()
            samples.append((clock() - t0) / 1000)
        return samples

    async def oneway(self, n: int) -> float:
        send, frame = self.tx.send_multipart, [b"C", bytes(PAYLOAD)]
        t0 = time.perf_counter()
        for _ in range(n):
            await send(frame)
        await send([b"R"])
        count = int.from_bytes((await self.rx.recv_multipart())[1], "big")
        elapsed = time.perf_counter() - t0
        self.lost += n - count
        return count / elapsed

    async def close(self) -> None:
        for sock in {self.tx, self.rx}:
            sock.close(linger=0)


class RawDealer(RawClient):
    """The floor of ``zmq://``: a DEALER talking to the far ROUTER."""

    socket_type = zmq.DEALER

    def __init__(self, ctx: zmq.asyncio.Context, address: str) -> None:
        self.tx = self.rx = ctx.socket(self.socket_type)
        self.tx.connect(f"tcp://{address}")


class RawPubSub(RawClient):
    """The floor of ``zmq+pubsub://``: PUB to the proxy's XSUB, SUB on its XPUB (topic ``e``)."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.tx, self.rx = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        for sock in (self.tx, self.rx):
            sock.setsockopt(zmq.SNDHWM, 100_000)
            sock.setsockopt(zmq.RCVHWM, 100_000)
        self.tx.connect(f"tcp://{host}:{port}")
        self.rx.connect(f"tcp://{host}:{int(port) + 1}")
        self.rx.setsockopt(zmq.SUBSCRIBE, b"e")

    async def ready(self) -> None:
        """Echo until one comes back: both connections and subscriptions are up."""
        while True:
            await self.tx.send_multipart([b"E", b"hello"])
            if await self.rx.poll(100):
                await self.rx.recv_multipart()
                while await self.rx.poll(50):
                    await self.rx.recv_multipart()
                return


class RawPair(RawDealer):
    """The floor of a ``zmq+pair`` hotline: a PAIR socket (same E/C/R protocol)."""

    socket_type = zmq.PAIR


@message(name="bench.zmq.LineRun")
class LineRun:
    """Ask the near ``LineBench`` to open a line and run ``kind`` (rtt, oneway) ``n`` times."""

    kind: str
    n: int


class LineBench(AgentActor):
    """Opens a hotline to ``bench.line`` and measures on it from inside the actor."""

    @on(LineRun)
    async def run(self, msg: LineRun) -> Any:
        async with self.hotline("bench.line") as line:
            if msg.kind == "rtt":
                ping, samples, clock = Ping(bytes(PAYLOAD)), [], time.perf_counter_ns
                for _ in range(msg.n):
                    t0 = clock()
                    await line.send(ping)
                    await line.receive()
                    samples.append((clock() - t0) / 1000)
                return samples
            t0 = time.perf_counter()
            for _ in range(msg.n):
                await line.send("C")
            await line.send("R")
            count = await line.receive()
            return [count, time.perf_counter() - t0]


class LineClient:
    """Measures a ``zmq+pair`` hotline through a ``LineBench`` actor on the near node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.lost = 0

    async def rtt(self, n: int) -> list[float]:
        samples: list[float] = await self.node.ask("bench.liner", LineRun("rtt", n), timeout=300)
        return samples

    async def oneway(self, n: int) -> float:
        count, elapsed = await self.node.ask("bench.liner", LineRun("oneway", n), timeout=300)
        self.lost += n - count
        return float(count / elapsed)

    async def close(self) -> None:
        pass  # the node is closed by its MeshClient


class LossyMeshClient(MeshClient):
    """A node client whose one-way count may fall short (pub-sub is at-most-once)."""

    lost = 0

    async def oneway(self, n: int) -> float:
        ping, tell = Ping(bytes(PAYLOAD)), self.node.tell
        t0 = time.perf_counter()
        for _ in range(n):
            await tell("bench.count", ping)
        count = await self.node.ask("bench.count", Report(), timeout=60)
        elapsed = time.perf_counter() - t0
        self.lost += n - count
        return count / elapsed


async def measure(clients: dict[str, Any], args: argparse.Namespace) -> dict[str, Small]:
    return await small_messages(clients, args, PEERS)


async def run(args: argparse.Namespace) -> tuple[dict[str, Small], dict[str, int]]:
    ctx = zmq.asyncio.Context()
    fars: list[Far] = []
    clients: dict[str, Any] = {}
    try:
        for name, argv in {
            "raw router": ("router",),
            "raw pubsub": ("pubsub",),
            "raw pair": ("pair",),
        }.items():
            far = await Far.start(*argv, module=FAR_PEER)
            fars.append(far)
            if name == "raw router":
                clients[name] = RawDealer(ctx, far.address)
            elif name == "raw pair":
                clients[name] = RawPair(ctx, far.address)
            else:
                clients[name] = RawPubSub(ctx, far.address)
                await clients[name].ready()
        for scheme in ("zmq", "zmq+pair", "zmq+pubsub"):
            url = f"{scheme}://127.0.0.1:0" + ("?proxy=1" if scheme == "zmq+pubsub" else "")
            far = await Far.start("mesh", url, module=FAR_PEER)
            fars.append(far)
            near = (
                f"zmq+pubsub://{far.address}"
                if scheme == "zmq+pubsub"
                else f"{scheme}://127.0.0.1:0?peers={far.address}"
            )
            node = Node(near, name="near")
            await node.start()
            clients[scheme] = LossyMeshClient(node)
            if scheme == "zmq+pair":
                await node.spawn(LineBench, "bench.liner")
                clients["hotline"] = LineClient(node)
        results = await measure(clients, args)
        return results, {name: getattr(c, "lost", 0) for name, c in clients.items()}
    finally:
        for client in clients.values():
            await client.close()
        for far in fars:
            await far.close()
        ctx.destroy(linger=0)


def judge(results: dict[str, Small]) -> list[Target]:
    targets = []
    for name, floor in FLOOR.items():
        shown = "zmq+pair:// hotline" if name == "hotline" else f"{name}://"
        targets += against_floor(
            results,
            name,
            floor,
            rtt_most=1.3,
            oneway_least=0.70,
            rtt_name=f"{shown} rr p50 / {floor}",
            oneway_name=f"{shown} one-way / {floor}",
        )
    return targets


def report(results: dict[str, Small], lost: dict[str, int], targets: list[Target]) -> str:
    return f"{small_table(results, LABEL, lost=lost)}\n\n{targets_table(targets)}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_small_args(
        argv,
        prog="python -m synaptic_mesh.bench.zmq",
        description="zmq://, zmq+pair:// and zmq+pubsub:// across two processes against "
        "raw pyzmq: 64-byte round trips and one-way throughput.",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pyzmq = f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"
    print(
        run_header("zmq", load_avg(), machine=False, library=pyzmq) + "\n"
        f"{args.asks:,} sequential round trips and {args.oneway:,} one-way messages per round, "
        f"{args.repeats} rounds (+1 warm-up), peers interleaved",
        flush=True,
    )
    results, lost = asyncio.run(run(args))
    targets = judge(results)
    print("\n" + report(results, lost, targets))
    if args.json:
        small = {name: vars(figures) for name, figures in results.items()}
        write_json(
            args.json, "zmq", args=vars(args), labels=LABEL, floors=FLOOR, small=small, lost=lost
        )
    return 1 if args.strict and any(not t.met for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
