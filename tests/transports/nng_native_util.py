"""Helpers for the NNG transport tests: two nodes with native sockets, garbage, descriptor leaks.

``test_nng_native`` and its per-pattern files (``test_nng_native_<pattern>.py``)
run two real nodes in this process (:func:`two_nodes`), so they can read each
transport's native counters; each of them checks that a foreign socket's
garbage on a native endpoint is dead-lettered
(:func:`assert_garbage_dead_lettered`) and that closing leaks no file
descriptor (:func:`assert_no_descriptor_leak`, also used by ``test_nng``);
bus and pub-sub check that losses at a full queue are counted
(:func:`assert_flood_losses_counted`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import pynng
import pytest

from synaptic_mesh import Node, message
from synaptic_mesh.runtime.dead_letters import DEAD_LETTER_SUBJECT, DeadLetter
from synaptic_mesh.transports.base import Handler
from tests.transports.util import FAST, until

SCHEMES: Final = ("nng+tcp", "nng+ipc")

SURVEY_BUS: Final = "native=survey,bus,pair,pipeline"
"""Survey and bus are opt-in (see ``DEFAULT_NATIVE``): the ``two_nodes`` default asks for them."""

GARBAGE: Final = b"GET / HTTP/1.1\r\n\r\n"
"""What a foreign socket sends a native endpoint: no Synaptic Mesh framing at all."""


@message(name="tests.nng_native.Chat")
class Chat:
    n: int
    text: str = ""


# -- two nodes ------------------------------------------------------------------------------


@asynccontextmanager
async def two_nodes(
    scheme: str, query: str = SURVEY_BUS, b_query: str | None = None
) -> AsyncIterator[tuple[Node, Node]]:
    """Node ``a`` listening, node ``b`` dialing it, with ``query`` options (``b_query`` for
    ``b`` when given); returns once their native sockets reach each other."""
    path = tempfile.mkdtemp(prefix="smesh-nnn-", dir="/tmp")
    b_query = query if b_query is None else b_query
    extra = f"&{b_query}" if b_query else ""
    try:
        if scheme == "nng+tcp":
            first, second = f"nng+tcp://127.0.0.1:0?{query}", "nng+tcp://127.0.0.1:0?peers={}"
        else:
            first, second = (
                f"nng+ipc://{path}/a.sock?{query}",
                f"nng+ipc://{path}/b.sock?peers={{}}",
            )
        async with Node(first.rstrip("?"), name="a", transport_options=FAST) as a:
            url = second.format(a.transport.address) + extra  # type: ignore[attr-defined]
            async with Node(url, name="b", transport_options=FAST) as b:
                await native_ready(a, b)
                yield a, b
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def native_ready(a: Node, b: Node) -> None:
    """Wait until each node's native sockets reach the other (the endpoint exchange is done)."""
    for me, other in ((a, b), (b, a)):
        for name, lowering in me.transport.lowerings.items():  # type: ignore[attr-defined]
            if name not in other.transport.lowerings:  # type: ignore[attr-defined]
                continue
            socket = {"survey": "surveyor", "bus": "socket", "pub-sub": "publisher"}.get(name)
            if socket is None:  # the others make their sockets per line or per request
                await until(
                    lambda m=me, p=other.transport.id: p in m.transport.native.peers,  # type: ignore[attr-defined]
                    what="endpoint tables exchanged",
                )
                continue
            socket = getattr(lowering, socket)
            peers = [other.transport.id] + ([me.transport.id] if name == "survey" else [])  # type: ignore[attr-defined]
            for peer in peers:
                await until(lambda s=socket, p=peer: s.reaches(p), what=f"{name} reaches {peer}")


# -- losses -----------------------------------------------------------------------------------


async def assert_flood_losses_counted(
    receiver: Node,
    attach: Callable[[Handler], Awaitable[Any]],
    send: Callable[[Chat], Awaitable[None]],
) -> None:
    """Flood ``receiver`` with ``send`` while the handler ``attach`` gave it stalls.

    For the lowerings whose protocol drops silently at a full pipe queue (Bus0,
    Pub0): the stalled reader lets NNG's queues fill, so some of the flood is
    lost. Asserts that the receiver's ``stats.gaps`` counts every loss (one
    message after the flood reveals a loss at its tail) and that what arrived
    came in order.
    """
    release = asyncio.Event()
    got: list[int] = []

    async def stalls(subject: str, frames: Any, reply_to: str | None) -> None:
        env = receiver.open_envelope(subject, frames)
        got.append(env.body.n)  # type: ignore[union-attr]
        await release.wait()  # the reader stops: NNG's queues fill, then the protocol drops

    await attach(stalls)
    total = 4000
    for n in range(total):
        await send(Chat(n, "x" * 4000))
    release.set()
    await until(lambda: receiver.transport.stats.received >= 1, what="some arrive")  # type: ignore[attr-defined]
    await asyncio.sleep(0.5)  # the queues drain
    await send(Chat(total))  # reveals a loss at the tail
    await until(lambda: got and got[-1] == total, what="the last message")
    gaps = receiver.transport.stats.gaps  # type: ignore[attr-defined]
    assert gaps > 0, "the flood must overrun NNG's queues"
    assert len(got) + gaps == total + 1, (len(got), gaps)
    assert got == sorted(got)


# -- bad input --------------------------------------------------------------------------------


async def assert_garbage_dead_lettered(
    node: Node,
    endpoint: str,
    foreign: Callable[..., pynng.Socket],
    expected: str,
    caplog: pytest.LogCaptureFixture,
    *,
    garbage: bytes = GARBAGE,
    reason: str = "bad frame count",
    settle: float = 0.1,
) -> DeadLetter:
    """Send ``garbage`` to ``node``'s native ``endpoint`` from a socket of type ``foreign``.

    Asserts that ``node`` dead-lettered it as ``expected`` input refused for
    ``reason``, and logged "refused native input" at ERROR; returns the dead
    letter. ``settle``: seconds the foreign socket gets to connect before it
    sends (a Pub0 drops what it sends without a pipe).
    """
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    letters: list[DeadLetter] = []

    async def record(letter: DeadLetter, subject: str) -> None:
        letters.append(letter)

    await node.subscribe(DEAD_LETTER_SUBJECT, record)
    url = node.transport.native.endpoints[endpoint]  # type: ignore[attr-defined]
    with foreign(dial=url, send_timeout=2000) as sock:
        await asyncio.sleep(settle)
        await sock.asend(garbage)
        await until(lambda: letters, what="dead letter")
    assert expected in letters[0].reason and reason in letters[0].reason
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("refused native input" in e and expected in e for e in errors), errors
    return letters[0]


# -- closing releases every socket ------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settled() -> int:
    """The descriptor count once it stopped moving: NNG's reaper thread closes a closed
    socket's pipes (their TCP or Unix sockets) a moment after ``nng_close`` returns."""
    count, still = open_fds(), 0
    while still < 10:
        await asyncio.sleep(0.01)
        now = open_fds()
        count, still = now, (still + 1 if now == count else 0)
    return count


async def assert_no_descriptor_leak(
    cycle: Callable[[], Awaitable[None]],
    *,
    cycles: int = 3,
    what: str = "every native NNG socket must be closed by transport.close()",
) -> None:
    """Run ``cycle`` (open nodes, use them, close them) once, then ``cycles`` times more;
    assert the process has as many open descriptors after those as before (else ``what``)."""
    await cycle()  # NNG's own threads and descriptors are made once per process
    gc.collect()
    gc.disable()  # pynng closes a socket it garbage-collects: that must not be what saves us
    try:
        before = await settled()
        for _ in range(cycles):
            await cycle()
        after = await settled()
    finally:
        gc.enable()
    assert after == before, what
