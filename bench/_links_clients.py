"""The near side of ``bench/links.py``: the far process, and a client per peer.

:class:`Far` starts a ``bench._links_peer`` process (or another bench's far
peer); :class:`RawClient` is the floor's client (a hand-written asyncio
``Protocol``), :class:`MeshClient` a ``Node`` on the transport under test.
Both clients offer the same three measurements so the bench drives them
alike: ``rtt`` (sequential round trips, microseconds each), ``oneway``
(messages per second, counted by the far side) and ``bulk`` (seconds for one
100 MB transfer: an ask for a node; for the floor, one length-prefixed frame
written from the array's buffer and the far side's 8-byte acknowledgement
once it has all of it).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, cast

from synaptic_mesh.bench._links_peer import _COUNT, _LEN, Bulk, Nudge, Ping, Report
from synaptic_mesh.runtime.node import Node

PAYLOAD = 64
ASK_TIMEOUT = 10.0
"""A real ask always has a timeout; it costs a timer per ask, so the bench pays it."""


class Far:
    """A far bench process; ``address`` is what it printed after READY.

    The far side of every two-process bench: ``bench._links_peer`` (a node,
    or the raw asyncio floors) by default, or another ``module`` that speaks
    the same start-up (``READY address`` on stdout, stop when stdin closes),
    such as ``bench.zmq_peer`` and ``bench.nng_peer``.
    """

    def __init__(self, process: asyncio.subprocess.Process, address: str) -> None:
        self.process = process
        self.address = address

    @classmethod
    async def start(cls, *argv: str, module: str = "synaptic_mesh.bench._links_peer") -> Far:
        """Run ``python -m module *argv`` and wait (30 s at most) for its READY line.

        Raises ``RuntimeError`` naming ``argv`` when the process says anything else.
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
        if not line or line[0] != "READY":
            process.kill()
            raise RuntimeError(f"bench peer {argv} did not start: {line}")
        return cls(process, line[1] if len(line) > 1 else "")

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class RawClient(asyncio.Protocol):
    """The floor's client: length-prefixed frames over an asyncio ``Protocol``."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future[bytes] | None = None
        self.writable: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, kind: str, address: str) -> RawClient:
        loop = asyncio.get_running_loop()
        if kind == "uds":
            _, client = await loop.create_unix_connection(cls, address)
        else:
            host, _, port = address.rpartition(":")
            _, client = await loop.create_connection(cls, host, int(port))
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 4:
            (length,) = _LEN.unpack_from(self.buffer)
            if len(self.buffer) >= 4 + length:
                frame = bytes(self.buffer[4 : 4 + length])
                del self.buffer[: 4 + length]
                if self.reply is not None and not self.reply.done():
                    self.reply.set_result(frame)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    async def request(self, frame: bytes) -> bytes:
        assert self.transport is not None
        self.reply = asyncio.get_running_loop().create_future()
        self.transport.write(frame)
        return await self.reply

    async def rtt(self, n: int) -> list[float]:
        frame = _LEN.pack(PAYLOAD) + b"E" + bytes(PAYLOAD - 1)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            await self.request(frame)
            samples.append((clock() - t0) / 1000)
        return samples

    async def oneway(self, n: int) -> float:
        assert self.transport is not None
        frame = _LEN.pack(PAYLOAD) + b"C" + bytes(PAYLOAD - 1)
        write = self.transport.write
        t0 = time.perf_counter()
        for _ in range(n):
            write(frame)
            if self.writable is not None:
                await self.writable
        (count,) = _COUNT.unpack(await self.request(_LEN.pack(1) + b"R"))
        elapsed = time.perf_counter() - t0
        assert count == n, f"the floor counted {count} of {n}"
        return n / elapsed

    async def bulk(self, data: Any) -> float:
        assert self.transport is not None
        view = memoryview(data).cast("B")
        t0 = time.perf_counter()
        self.reply = asyncio.get_running_loop().create_future()
        self.transport.write(_LEN.pack(len(view) + 1) + b"B")
        self.transport.write(view)
        reply = await self.reply
        elapsed = time.perf_counter() - t0
        (length,) = _COUNT.unpack(reply)
        assert length == len(view) + 1, f"the floor acknowledged {length} of {len(view) + 1} bytes"
        if self.writable is not None:  # the acknowledgement can overtake resume_writing
            await self.writable
        return elapsed

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class MeshClient:
    """A ``Node`` on the transport under test, linked to the far node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def rtt(self, n: int) -> list[float]:
        ping, ask, samples = Ping(bytes(PAYLOAD)), self.node.ask, []
        clock = time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            await ask("bench.echo", ping, timeout=ASK_TIMEOUT)
            samples.append((clock() - t0) / 1000)
        return samples

    async def oneway(self, n: int) -> float:
        ping, tell = Ping(bytes(PAYLOAD)), self.node.tell
        t0 = time.perf_counter()
        for _ in range(n):
            await tell("bench.count", ping)
        count = await self.node.ask("bench.count", Report(), timeout=60)
        elapsed = time.perf_counter() - t0
        assert count == n, f"the far node counted {count} of {n}"
        return n / elapsed

    async def bulk(self, data: Any) -> float:
        t0 = time.perf_counter()
        last = await self.node.ask("bench.bulk", Bulk(data), timeout=120)
        elapsed = time.perf_counter() - t0
        assert last == float(data[-1])
        # Let the far actor drop the array (it keeps its last message until the
        # next one), then wait for the RELEASE: the next transfer finds the
        # segment free, as a steady stream of transfers would.
        await self.node.ask("bench.bulk", Nudge(), timeout=10)
        stats = getattr(self.node.transport, "shm_stats", None)
        deadline = time.monotonic() + 2
        while stats is not None and stats()["busy"] and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return elapsed

    async def close(self) -> None:
        await self.node.close()
