"""Helpers for the link transport tests: started TCP transports, a raw wire peer."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.transports.framing import PREAMBLE, LinkLimits, encode_message
from synaptic_mesh.transports.tcp import TcpTransport, split_address

FAST = {"heartbeat": 0.1, "misses": 3, "connect_timeout": 2.0, "backoff": 0.02}
"""Timing for tests: a dead link is noticed within 0.3 s."""


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what}")
        await asyncio.sleep(0.002)


@asynccontextmanager
async def tcp_nodes(*specs: str, **options: Any) -> AsyncIterator[list[TcpTransport]]:
    """Start transports one after another; ``{0}``, ``{1}``... in a spec is an earlier address.

    ``tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}")`` gives two
    linked mesh nodes. All are closed on exit, last first.
    """
    started: list[TcpTransport] = []
    try:
        for spec in specs:
            url = spec.format(*[t.address for t in started])
            transport = TcpTransport(url, **{**FAST, **options})
            await transport.start()
            started.append(transport)
        yield started
    finally:
        for transport in reversed(started):
            await transport.close()


class Collector:
    """A transport handler that records ``(subject, frames, reply_to)``."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[bytes], str | None]] = []

    async def __call__(self, subject: str, frames: Any, reply_to: str | None) -> None:
        self.got.append((subject, [bytes(f) for f in frames], reply_to))

    @property
    def payloads(self) -> list[bytes]:
        return [frames[0] for _, frames, _ in self.got if frames]


def wire(frames: Any, limits: LinkLimits | None = None) -> bytes:
    """One link message as bytes on the wire."""
    pieces, _ = encode_message(frames, limits or LinkLimits())
    return b"".join(bytes(p) for p in pieces)


def raw_header(count: int, *lengths: int) -> bytes:
    """A message header with arbitrary (possibly lying) count and lengths."""
    return struct.pack(f">I{len(lengths)}I", count, *lengths)


class RawPeer:
    """A socket driven by hand: speaks, or breaks, the link protocol."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, address: str, rcvbuf: int | None = None) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, split_address(address))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def hello(
        self, node_id: str = "raw-peer", window_msgs: int = 4096, window_bytes: int = 1 << 24
    ) -> None:
        """Preamble and a valid HELLO: from here on this is a mesh peer."""
        await self.send(PREAMBLE + wire(proto.hello(node_id, "mesh", window_msgs, window_bytes)))

    async def subscribe(self, pattern: str, queue: str | None = None) -> None:
        await self.send(wire(proto.interest(proto.SUB, pattern, queue)))

    async def wait_closed(self, timeout: float = 3.0) -> bool:
        """Read (and discard) until the other side closes; True if it did in time."""
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline:
            try:
                data = await asyncio.wait_for(
                    self.loop.sock_recv(self.sock, 65536), deadline - self.loop.time()
                )
            except (ConnectionError, OSError):
                return True
            except TimeoutError:
                return False
            if not data:
                return True
        return False

    def reset(self) -> None:
        """Close with an RST instead of a FIN (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


@asynccontextmanager
async def node_chain(*specs: str, **options: Any) -> AsyncIterator[list[Any]]:
    """Like :func:`tcp_nodes` but with started ``Node`` objects (named n0, n1, ...)."""
    from synaptic_mesh import Node

    started: list[Any] = []
    try:
        for i, spec in enumerate(specs):
            url = spec.format(*[n.transport.address for n in started])
            node = Node(url, name=f"n{i}", transport_options={**FAST, **options})
            await node.start()
            started.append(node)
        yield started
    finally:
        for node in reversed(started):
            await node.close()
