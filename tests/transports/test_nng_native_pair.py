"""NNG native PAIR hotline: a dedicated ``Pair1`` socket pair per line.

Two real nodes in this process (``two_nodes`` of ``test_nng_native``), so the
tests can see each line's sockets and the transport's counters; the pattern
conformance suite runs hotlines with the peer in another process.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import pynng
import pytest

from synaptic_mesh import AgentActor, RemoteError, on
from synaptic_mesh.transports.nng_native import pack
from synaptic_mesh.transports.nng_pair import PAIR_HELLO
from tests.patterns.actors import CallPeer, LineEcho
from tests.transports.pair_talkers import (
    Talked,
    Talker,
    busy_peer_scenario,
    open_line_by_hand,
)
from tests.transports.test_nng_native import SCHEMES, settled, two_nodes
from tests.transports.util import until


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_hotline_runs_on_its_own_pair1_sockets_and_they_close_with_it(
    scheme: str,
) -> None:
    async with two_nodes(scheme) as (a, b):
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Talker, "core.claude")
        before = a.transport.link_stats(b.transport.id)  # type: ignore[attr-defined]
        talked = await a.ask("core.claude", CallPeer("core.gemini", 200), timeout=10)
        assert talked.replies == [f"echo {n}" for n in range(200)]
        assert talked.on_pair, "the line's messages went over its Pair1 socket"
        after = a.transport.link_stats(b.transport.id)  # type: ignore[attr-defined]
        routed = after.messages_sent - before.messages_sent
        assert routed < 10, f"{routed} messages went through the router instead of Pair1"
        # 200 messages and the close (pings may add a few)
        assert a.transport.stats.sent >= 201  # type: ignore[attr-defined]
        await until(lambda: b.transport.stats.received >= 201, what="the close read")  # type: ignore[attr-defined]
        assert a.transport.stats.fallbacks == 0  # type: ignore[attr-defined]
        lowerings = [n.transport.lowerings["pair"] for n in (a, b)]  # type: ignore[attr-defined]
        await until(lambda: not any(lw.calling or lw.answering for lw in lowerings))


async def test_a_busy_peer_refuses_and_the_refused_socket_is_released() -> None:
    async with two_nodes("nng+tcp") as (a, b):
        await busy_peer_scenario(a, b)


async def test_a_caller_on_the_generic_lowering_gets_no_handshake() -> None:
    """``native=`` on the caller's node: the answering node keeps that line on the subjects."""
    async with two_nodes("nng+tcp", query="native=", b_query="") as (a, b):
        assert "pair" not in a.transport.capabilities.native  # type: ignore[attr-defined]
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Talker, "core.claude")
        talked = await a.ask("core.claude", CallPeer("core.gemini", 20), timeout=10)
        assert talked.replies == [f"echo {n}" for n in range(20)]
        assert not a.recent_dead_letters, "a handshake the caller cannot read was sent"
        assert b.transport.stats.sent == 0  # type: ignore[attr-defined]


async def test_a_line_whose_pipe_drops_goes_on_over_the_subjects() -> None:
    async with two_nodes("nng+ipc") as (a, b):
        await b.spawn(LineEcho, "core.gemini")

        class Breaker(AgentActor):
            @on(CallPeer)
            async def talk(self, msg: CallPeer) -> Talked:
                async with self.hotline(msg.peer, heartbeat=0.2) as line:
                    lowering = self.node.transport.lowerings["pair"]  # type: ignore[attr-defined]
                    await line.send("0")
                    first = await line.receive()
                    lowering.calling[line.id].close()  # the pipe drops under the line
                    replies = [first]
                    for n in range(1, msg.count):
                        await line.send(str(n))
                        replies.append(await line.receive())
                return Talked(replies, False)

        await a.spawn(Breaker, "core.breaker")
        try:
            talked = await a.ask("core.breaker", CallPeer("core.gemini", 5), timeout=10)
        except RemoteError as exc:
            # An echo b sent on its Pair1 before it saw the pipe drop is lost with the
            # pipe; the line's sequence numbers catch that and close the line: never a
            # silent gap.
            assert "HotlineClosed" in str(exc) and "lost messages" in str(exc), exc
            return
        assert talked.replies == [f"echo {n}" for n in range(5)]
        # b's end saw its pipe drop and sent its echoes over the subjects
        assert b.transport.stats.fallbacks >= 1  # type: ignore[attr-defined]


async def test_a_foreign_pair1_peer_is_dead_lettered_and_the_node_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with two_nodes("nng+tcp") as (a, b):
        limits = b.transport.native.limits  # type: ignore[attr-defined]
        cases = (("feed01", pack(["M"], [b"not an envelope"], limits)), ("feed02", b"??"))
        foreigners: list[pynng.Pair1] = []
        try:
            for line_id, garbage in cases:
                url = await open_line_by_hand(a, b, line_id, PAIR_HELLO)
                foreign = pynng.Pair1(dial=url, send_timeout=2000)
                foreigners.append(foreign)
                await foreign.asend(garbage)

            def letters() -> list[str]:
                return [d.reason for d, _ in b.recent_dead_letters]

            await until(lambda: len(letters()) >= 2, what="two dead letters")
            assert any("line feed02: a message of 2 bytes" in r for r in letters()), letters()
            assert any("line feed" not in r for r in letters()), "the envelope decoder's letter"
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any("refused native input" in e and "line feed02" in e for e in errors), errors
            assert b.transport.stats.bad_frames == 1  # type: ignore[attr-defined]
        finally:
            for foreign in foreigners:
                foreign.close()
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Talker, "core.claude")
        talked = await a.ask("core.claude", CallPeer("core.gemini", 3), timeout=10)
        assert talked.replies == ["echo 0", "echo 1", "echo 2"] and talked.on_pair


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_lines_and_nodes_leak_no_file_descriptor(scheme: str, no_leaks: Any) -> None:
    async def cycle() -> None:
        async with two_nodes(scheme) as (a, b):
            await b.spawn(LineEcho, "core.gemini")
            await a.spawn(Talker, "core.claude")
            for _ in range(3):
                talked = await a.ask("core.claude", CallPeer("core.gemini", 5), timeout=10)
                assert talked.on_pair

    await cycle()
    gc.collect()
    gc.disable()  # pynng closes a socket it garbage-collects: that must not be what saves us
    try:
        before = await settled()
        for _ in range(3):
            await cycle()
        after = await settled()
    finally:
        gc.enable()
    assert after == before, "every line's Pair1 socket must be closed"
    await no_leaks()
