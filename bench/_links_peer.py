"""The far side of ``bench/links.py``: an OS process of its own, so every figure crosses one.

``python -m synaptic_mesh.bench._links_peer mesh URL`` runs a ``Node`` on
``URL`` with the bench's actors (``bench.echo``, ``bench.count``,
``bench.bulk``); ``... raw uds PATH`` and ``... raw tcp`` run the floor, a
hand-written asyncio ``Protocol`` speaking length-prefixed frames. Each
prints ``READY <address>`` and runs until its stdin closes.

The raw floor is what an application would write by hand with asyncio and no
framework: a 4-byte big-endian length, then the payload, whose first byte
says what to do: ``E`` echo the frame back, ``C`` count it, ``R`` reply with
the count (8 bytes) and reset it, ``B`` (a bulk transfer) reply with the
frame's length (8 bytes) once all of it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from typing import Any, cast

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node

_LEN = struct.Struct(">I")
_COUNT = struct.Struct(">Q")


# -- the mesh side -------------------------------------------------------------------------


@message(name="bench.links.Ping")
class Ping:
    """The small message: 64 bytes of payload."""

    data: bytes


@message(name="bench.links.Report")
class Report:
    """Ask the counter how many pings it got since the last report."""


@message(name="bench.links.Bulk")
class Bulk:
    """The 100 MB attachment (an ndarray field travels as a frame of its own)."""

    data: Any


@message(name="bench.links.Nudge")
class Nudge:
    """Makes the bulk sink take its next message, so it lets go of the previous array."""


class Echo(AgentActor):
    @on(Ping)
    async def ping(self, msg: Ping) -> Ping:
        return msg


class Counter(AgentActor):
    def __init__(self) -> None:
        self.count = 0

    @on(Ping)
    async def ping(self, msg: Ping) -> None:
        self.count += 1

    @on(Report)
    async def report(self, msg: Report) -> int:
        count, self.count = self.count, 0
        return count


class BulkSink(AgentActor):
    """Receives the array and answers with its last element: the receiver reads the
    attachment (one page of it) but copies nothing."""

    @on(Bulk)
    async def bulk(self, msg: Bulk) -> float:
        return float(msg.data[-1])

    @on(Nudge)
    async def nudge(self, msg: Nudge) -> str:
        return "ok"


async def serve_mesh(url: str) -> None:
    with contextlib.suppress(ImportError):  # now, not at the first Bulk: cold = the transport
        import numpy  # noqa: F401
    async with Node(url, name="far") as node:
        await node.spawn(Echo, "bench.echo")
        await node.spawn(Counter, "bench.count", capacity=100_000)
        await node.spawn(BulkSink, "bench.bulk")
        print("READY", getattr(node.transport, "address", ""), flush=True)
        await asyncio.to_thread(sys.stdin.read)


# -- the raw asyncio floor -------------------------------------------------------------------


class RawServer(asyncio.Protocol):
    """Length-prefixed frames: echo, count or report (see module docstring)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start, end = 0, len(buffer)
        while end - start >= 4:
            (length,) = _LEN.unpack_from(buffer, start)
            if end - start - 4 < length:
                break
            kind = buffer[start + 4]
            if kind == 0x45:  # E
                assert self.transport is not None
                self.transport.write(bytes(buffer[start : start + 4 + length]))
            elif kind == 0x43:  # C
                self.count += 1
            elif kind == 0x42:  # B: a bulk frame, acknowledged with its length, not copied
                assert self.transport is not None
                self.transport.write(_LEN.pack(8) + _COUNT.pack(length))
            else:  # R
                assert self.transport is not None
                self.transport.write(_LEN.pack(8) + _COUNT.pack(self.count))
                self.count = 0
            start += 4 + length
        del buffer[:start]


async def serve_raw(kind: str, path: str) -> None:
    loop = asyncio.get_running_loop()
    if kind == "uds":
        server = await loop.create_unix_server(RawServer, path)
        address = path
    else:
        server = await loop.create_server(RawServer, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        address = f"{host}:{port}"
    print("READY", address, flush=True)
    await asyncio.to_thread(sys.stdin.read)
    server.close()


def main(argv: list[str]) -> None:
    if argv[0] == "mesh":
        asyncio.run(serve_mesh(argv[1]))
    else:
        asyncio.run(serve_raw(argv[1], argv[2] if len(argv) > 2 else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
