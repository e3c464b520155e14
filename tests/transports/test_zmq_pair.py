"""``zmq+pair://``: hotlines on dedicated PAIR sockets, busy lines, bad input, cleanup."""

from __future__ import annotations

import logging
import os

import pytest
import zmq
import zmq.asyncio

from synaptic_mesh import Node
from synaptic_mesh.runtime.transport_lookup import transport_class
from synaptic_mesh.transports.zmq_pair import PAIR_HELLO, ZmqPairTransport
from tests.patterns.actors import CallPeer, LineEcho
from tests.transports.pair_talkers import Talker, busy_peer_scenario, open_line_by_hand
from tests.transports.util import FAST, until


def test_entry_point_options_and_native_lowering() -> None:
    assert transport_class("zmq+pair://127.0.0.1:0") is ZmqPairTransport
    caps = ZmqPairTransport.capabilities
    assert caps.native == frozenset({"pair"}) and caps.knows_interest and caps.ordered
    t = ZmqPairTransport("zmq+pair://0.0.0.0:0?pair_host=10.1.2.3&heartbeat=0.5")
    assert (t.pair_host, t.settings.heartbeat) == ("10.1.2.3", 0.5)
    wild = ZmqPairTransport("zmq+pair://0.0.0.0:0")
    assert (wild.pair_host, wild.pair_advertise) == ("0.0.0.0", "127.0.0.1")
    lowering = t.native_lowering("pair")
    assert all(hasattr(lowering, name) for name in ("listen", "serve", "attach", "send"))
    assert t.native_lowering("survey") is None
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        ZmqPairTransport("zmq+pair://127.0.0.1:0?colour=blue")


async def pair_nodes() -> tuple[Node, Node]:
    a = Node("zmq+pair://127.0.0.1:0", name="a", transport_options=FAST)
    await a.start()
    url = f"zmq+pair://127.0.0.1:0?peers={a.transport.address}"  # type: ignore[attr-defined]
    b = Node(url, name="b", transport_options=FAST)
    await b.start()
    return a, b


async def test_a_hotline_runs_on_its_own_pair_sockets_and_they_close_with_it() -> None:
    a, b = await pair_nodes()
    try:
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Talker, "core.claude")
        before = a.transport.link_stats(b.transport.id)  # type: ignore[attr-defined]
        talked = await a.ask("core.claude", CallPeer("core.gemini", 200), timeout=10)
        assert talked.replies == [f"echo {n}" for n in range(200)]
        assert talked.on_pair, "the line's messages went over its PAIR socket"
        after = a.transport.link_stats(b.transport.id)  # type: ignore[attr-defined]
        routed = after.messages_sent - before.messages_sent
        assert routed < 10, f"{routed} messages went through the router instead of PAIR"
        lowerings = [n.transport.lowering for n in (a, b)]  # type: ignore[attr-defined]
        await until(lambda: not any(lw.calling or lw.answering for lw in lowerings))
    finally:
        await b.close()
        await a.close()


async def test_a_busy_peer_refuses_and_the_refused_socket_is_released() -> None:
    a, b = await pair_nodes()
    try:
        await busy_peer_scenario(a, b)
    finally:
        await b.close()
        await a.close()


async def test_a_foreign_pair_peer_gets_dead_letters_and_the_node_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    a, b = await pair_nodes()
    ctx = zmq.asyncio.Context()
    raws: list[zmq.asyncio.Socket] = []
    try:
        cases = (("feed01", [b"M", b"not an envelope"]), ("feed02", [b"??"]))
        for line_id, garbage in cases:
            endpoint = await open_line_by_hand(a, b, line_id, PAIR_HELLO)
            raw = ctx.socket(zmq.PAIR)
            raws.append(raw)
            raw.connect(endpoint)
            await raw.send_multipart(garbage)

        def letters() -> list[str]:
            return [d.reason for d, _ in b.recent_dead_letters]

        await until(lambda: len(letters()) >= 2, what="two dead letters")
        assert any("not a line message" in r for r in letters()), letters()
        assert any("bad frame" not in r for r in letters()), "the envelope decoder's letter"
        assert any("not a line message" in r.getMessage() for r in caplog.records)
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Talker, "core.claude")
        talked = await a.ask("core.claude", CallPeer("core.gemini", 3), timeout=10)
        assert talked.replies == ["echo 0", "echo 1", "echo 2"] and talked.on_pair
    finally:
        for raw in raws:
            raw.close(linger=0)
        ctx.destroy(linger=0)
        await b.close()
        await a.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_lines_and_nodes_leak_no_descriptor_or_task(no_leaks) -> None:
    async def cycle() -> None:
        a, b = await pair_nodes()
        try:
            await b.spawn(LineEcho, "core.gemini")
            await a.spawn(Talker, "core.claude")
            for _ in range(3):
                talked = await a.ask("core.claude", CallPeer("core.gemini", 5), timeout=10)
                assert talked.on_pair
        finally:
            await b.close()
            await a.close()

    await cycle()
    before = open_fds()
    for _ in range(3):
        await cycle()
    assert open_fds() <= before, f"{open_fds() - before} file descriptors leaked"
    await no_leaks()
