"""Actors and steps the native PAIR hotline tests share (``zmq+pair`` and NNG ``Pair1``).

Both lowerings are ``transport.native_lowering("pair")`` and keep each line's
ends in ``calling`` and ``answering``, with ``up`` (the other end connected)
and ``usable`` (messages still go on the line's own socket), so one actor and
one scenario serve either transport; each test module brings its own nodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synaptic_mesh import AgentActor, Node, RemoteError, message, on
from synaptic_mesh.patterns.hotline import HotlineOpen
from tests.patterns.actors import CallPeer, LineEcho
from tests.transports.util import Collector, until


@message(name="tests.pair_talkers.Talked")
class Talked:
    replies: list[str]
    on_pair: bool


class Talker(AgentActor):
    """Opens a line, sends ``count`` messages, reads the echoes; says whether the line's own
    socket carried them (``False`` on a transport without a native PAIR lowering)."""

    @on(CallPeer)
    async def talk(self, msg: CallPeer) -> Talked:
        async with self.hotline(msg.peer, heartbeat=0.2) as line:
            lowering: Any = self.node.transport.native_lowering("pair")
            end = lowering.calling.get(line.id) if lowering is not None else None
            for n in range(msg.count):
                await line.send(str(n))
            replies = [await line.receive() for _ in range(msg.count)]
            on_pair = end is not None and end.up and end.usable
            await asyncio.sleep(msg.hold)
        return Talked(replies, on_pair)


async def busy_peer_scenario(a: Node, b: Node) -> None:
    """The busy-line scenario: ``core.claude`` on ``a`` holds a line to ``core.gemini`` on
    ``b``; ``core.other`` is refused, and each answering socket of ``b`` closes in turn."""
    await b.spawn(LineEcho, "core.gemini")
    await a.spawn(Talker, "core.claude")
    await a.spawn(Talker, "core.other")
    lowering: Any = b.transport.native_lowering("pair")
    first = asyncio.ensure_future(a.ask("core.claude", CallPeer("core.gemini", 1, 0.6), timeout=10))
    await until(lambda: any(e.up for e in lowering.answering.values()), what="line up")
    holding = set(lowering.answering)
    with pytest.raises(
        RemoteError, match=r"HotlineBusy: core.gemini is on a hotline with core.claude"
    ):
        await a.ask("core.other", CallPeer("core.gemini", 1), timeout=10)
    await until(lambda: set(lowering.answering) == holding, what="refused socket closed")
    assert (await first).on_pair
    await until(lambda: not lowering.answering, what="answering socket released")


async def open_line_by_hand(a: Node, b: Node, line_id: str, hello: bytes) -> str:
    """Open line ``line_id`` from ``a`` as a raw caller would, to a ``LineEcho`` spawned on ``b``
    as ``core.gemini<line_id>``; returns the address in the handshake (frame 0 ``hello``), for a
    foreign socket to connect to."""
    peer = f"core.gemini{line_id}"
    await b.spawn(LineEcho, peer)
    handshake = Collector()
    await a.transport.subscribe(f"_line.{line_id}", handshake)
    accepted = await a.ask(f"_hotline.{peer}", HotlineOpen(line_id, "raw.caller", 0.2), timeout=5)
    assert accepted.line == line_id
    assert handshake.got and handshake.got[0][1][0] == hello
    return handshake.got[0][1][1].decode()
