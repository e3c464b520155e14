"""The far side of ``bench/zmq.py``'s raw pyzmq floors: an OS process of its own.

``python -m synaptic_mesh.bench.zmq_peer mesh URL`` runs a node with the
echo and counter actors of ``_links_peer`` plus ``bench.line``, which answers
hotlines (echo, count, report). ``... router`` binds a ROUTER socket;
``... pubsub`` runs an XPUB-XSUB proxy (the project's, the same one the
``zmq+pubsub`` node uses) plus a SUB and a PUB socket on it; ``... pair``
binds a PAIR socket. Each prints ``READY <address>`` and serves until its
stdin closes. What an application would write by hand with ``zmq.asyncio``
and no framework: a message's first frame says what to do: ``E`` echo the
message back, ``C`` count it, ``R`` reply with the count (8 bytes) and reset
it. On pub-sub the echo goes back on topic ``e``.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from typing import Any

import zmq
import zmq.asyncio

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.bench._links_peer import Counter, Echo
from synaptic_mesh.runtime.node import Node
from synaptic_mesh.transports.zmq_proxy import Proxy

COUNT = struct.Struct(">Q")


async def serve_router(ctx: zmq.asyncio.Context) -> None:
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print("READY", f"127.0.0.1:{port}", flush=True)
    count = 0
    while True:
        parts = await sock.recv_multipart()
        kind = parts[1]
        if kind == b"E":
            await sock.send_multipart(parts)
        elif kind == b"C":
            count += 1
        else:
            await sock.send_multipart([parts[0], b"R", COUNT.pack(count)])
            count = 0


async def serve_pair(ctx: zmq.asyncio.Context) -> None:
    sock = ctx.socket(zmq.PAIR)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print("READY", f"127.0.0.1:{port}", flush=True)
    count = 0
    while True:
        parts = await sock.recv_multipart()
        if parts[0] == b"E":
            await sock.send_multipart(parts)
        elif parts[0] == b"C":
            count += 1
        else:
            await sock.send_multipart([b"R", COUNT.pack(count)])
            count = 0


async def serve_pubsub(ctx: zmq.asyncio.Context) -> None:
    proxy = Proxy("127.0.0.1", 0)
    proxy.start()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    for sock in (sub, pub):
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(f"tcp://127.0.0.1:{proxy.port + 1}")
    pub.connect(f"tcp://127.0.0.1:{proxy.port}")
    for topic in (b"E", b"C", b"R"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    await asyncio.sleep(0.2)  # subscriptions reach the proxy
    print("READY", proxy.address, flush=True)
    count = 0
    try:
        while True:
            parts = await sub.recv_multipart()
            if parts[0] == b"E":
                await pub.send_multipart([b"e", *parts[1:]])
            elif parts[0] == b"C":
                count += 1
            else:
                await pub.send_multipart([b"e", COUNT.pack(count)])
                count = 0
    finally:
        proxy.close()


class LineEcho(AgentActor):
    """Answers hotlines: echoes each message; ``"C"`` messages are counted, ``"R"`` reports."""

    async def on_hotline(self, line: Any) -> None:
        count = 0
        async for msg in line:
            if msg == "C":
                count += 1
            elif msg == "R":
                await line.send(count)
                count = 0
            else:
                await line.send(msg)


async def serve_mesh(url: str) -> None:
    """A node with ``_links_peer``'s actors plus ``bench.line``, which takes hotlines."""
    async with Node(url, name="far") as node:
        await node.spawn(Echo, "bench.echo")
        await node.spawn(Counter, "bench.count", capacity=100_000)
        await node.spawn(LineEcho, "bench.line")
        print("READY", getattr(node.transport, "address", ""), flush=True)
        await asyncio.to_thread(sys.stdin.read)


async def main(kind: str, *rest: str) -> None:
    if kind == "mesh":
        await serve_mesh(rest[0])
        return
    ctx = zmq.asyncio.Context()
    serve = {"router": serve_router, "pair": serve_pair, "pubsub": serve_pubsub}[kind]
    task = asyncio.ensure_future(serve(ctx))
    await asyncio.to_thread(sys.stdin.read)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ctx.destroy(linger=0)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
