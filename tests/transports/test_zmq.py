"""``zmq://``: ROUTER-DEALER links under the shared router, on real ZeroMQ sockets.

Covers the URL (tcp://'s parser), the tree topology by subject prefix, frames
kept intact (large ones as zero-copy views), back-pressure (a send waits at
the high-water mark, nothing is dropped), dead peers, a foreign ZeroMQ peer
sending garbage (dead letter, the node goes on), and clean shutdown (no task,
no file descriptor left).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest
import zmq
import zmq.asyncio

from synaptic_mesh import Node, NoResponders
from synaptic_mesh.runtime.transport_lookup import open_transport, transport_class
from synaptic_mesh.transports import zmq_link
from synaptic_mesh.transports.base import LinkClosed
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.zmq import ZmqTransport
from synaptic_mesh.transports.zmq_link import ZmqConnector
from tests.transports.peer_process import Done, Echo, Job
from tests.transports.test_router import child_node
from tests.transports.util import FAST, Collector, node_chain, until

# -- URL, entry point, capabilities ------------------------------------------------


def test_entry_point_url_and_truthful_capabilities() -> None:
    assert transport_class("zmq://127.0.0.1:7001") is ZmqTransport
    caps = ZmqTransport.capabilities
    assert caps.ordered and caps.cross_host and caps.knows_interest and caps.zero_copy
    assert caps.delivery == "at-most-once" and caps.native == frozenset()
    assert not (caps.durable or caps.replay or caps.by_reference)
    t = ZmqTransport("zmq://127.0.0.1:0?role=branch&parent=10.0.0.1:7000&prefixes=photo.>")
    assert t.settings.dials == (("10.0.0.1:7000", ("photo.>",)),)
    assert open_transport("zmq://127.0.0.1:0?max_message=4096").capabilities.max_message == 4096
    with pytest.raises(ValueError, match=r"needs a port \(zmq://"):
        ZmqTransport("zmq://127.0.0.1")
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        ZmqTransport("zmq://127.0.0.1:0?colour=blue")


# -- topologies -----------------------------------------------------------------------

TREE = (
    "zmq://127.0.0.1:0?role=root",
    "zmq://127.0.0.1:0?role=branch&parent={0}&prefixes=photogrammetry.>",
    "zmq://127.0.0.1:0?role=branch&parent={0}",
    "zmq://?role=leaf&parent={1}",
    "zmq://?role=leaf&parent={2}",
)


async def test_tree_of_root_and_branch_routers_by_prefix() -> None:
    async with node_chain(*TREE) as (root, b1, _b2, l1, l2):
        await l1.spawn(Echo, "photogrammetry.mesher", "l1")
        await l1.spawn(Echo, "core.secret", "l1")
        assert await l2.ask("photogrammetry.mesher", Job(1), timeout=5) == Done(1, "l1")
        assert await root.ask("photogrammetry.mesher", Job(2), timeout=5) == Done(2, "l1")
        assert await b1.ask("core.secret", Job(3), timeout=5) == Done(3, "l1"), "inside B1"
        with pytest.raises(NoResponders):  # outside B1's prefixes: the root never learns it
            await l2.ask("core.secret", Job(4), timeout=5)


async def test_full_mesh_of_three_serves_a_queue_group_once() -> None:
    mesh = ("zmq://127.0.0.1:0", "zmq://127.0.0.1:0?peers={0}", "zmq://127.0.0.1:0?peers={0},{1}")
    async with node_chain(*mesh) as nodes:
        got = Collector()
        for node in nodes[1:]:
            await node.transport.subscribe("jobs.*", got, queue="workers")
        for i in range(60):
            await nodes[i % 3].transport.publish(f"jobs.{i % 4}", [b"%d" % i])
        await until(lambda: len(got.got) == 60)
        await asyncio.sleep(0.05)
        assert sorted(int(p) for p in got.payloads) == list(range(60))


# -- links on real sockets ---------------------------------------------------------------


async def test_links_carry_frames_intact_and_large_ones_without_a_copy() -> None:
    ctx = zmq.Context()
    accepted: list[zmq_link.RouterSideLink] = []
    connector = ZmqConnector(ctx, LinkLimits(max_frames=8, max_frame=1 << 22))
    listener = await connector.listen("127.0.0.1:0", accepted.append)
    try:
        dialed = await connector.dial(listener.address, 2.0)
        big = os.urandom(1 << 20)
        messages = [[b"h%d" % i, b"", bytearray(b"x" * i)] for i in range(50)] + [[b"big", big]]
        for frames in messages:
            await dialed.send(frames)
        await until(lambda: accepted)
        got = [await accepted[0].recv() for _ in messages]
        assert [[bytes(f) for f in m] for m in got] == [[bytes(f) for f in m] for m in messages]
        assert isinstance(got[-1][1], memoryview), "a large frame is a view on libzmq's buffer"
        await accepted[0].send([b"back"])
        assert await dialed.recv() == [b"back"]
        with pytest.raises(ValueError, match="frames"):
            await dialed.send([b"x"] * 9)
        dialed.close()
        with pytest.raises(LinkClosed, match="closed by the peer"):
            await accepted[0].recv()
        with pytest.raises(OSError):
            await connector.dial("127.0.0.1:1", 2.0)
    finally:
        await listener.close()
        await listener.wait_closed()  # type: ignore[attr-defined]
        ctx.destroy(linger=0)


async def test_send_waits_at_the_high_water_mark_and_drops_nothing(monkeypatch) -> None:
    monkeypatch.setattr(zmq_link, "HWM", 4)
    ctx = zmq.asyncio.Context()
    sync_ctx = zmq.Context()
    raw = ctx.socket(zmq.ROUTER)  # a peer that does not read for a while
    raw.setsockopt(zmq.RCVHWM, 4)
    raw.setsockopt(zmq.RCVBUF, 64 * 1024)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    try:
        link = await ZmqConnector(sync_ctx, LinkLimits()).dial(f"127.0.0.1:{port}", 2.0)
        payload = b"p" * (256 * 1024)
        sent = 0
        blocked = False
        while sent < 400:
            try:
                await asyncio.wait_for(link.send([b"%d" % sent, payload]), 0.5)
            except TimeoutError:
                blocked = True
                break
            sent += 1
        assert blocked, "send must wait when the peer does not read"
        pending = asyncio.ensure_future(link.send([b"%d" % sent, payload]))
        await asyncio.sleep(0.05)
        assert not pending.done()
        received = []
        while len(received) < sent + 1:
            parts = await asyncio.wait_for(raw.recv_multipart(), 5)
            received.append(int(parts[1]))
        await pending
        assert received == list(range(sent + 1)), "in order, none dropped"
        link.abort("test over")
        await link.wait_closed()
    finally:
        raw.close(linger=0)
        ctx.destroy(linger=0)
        sync_ctx.destroy(linger=0)


# -- dead peers and bad input ---------------------------------------------------------------


async def test_a_killed_dialer_is_noticed_by_its_disconnect_before_any_heartbeat() -> None:
    url = "zmq://127.0.0.1:0?heartbeat=5&misses=3"
    async with Node(url, name="home") as node:
        downs: list[str] = []
        node.transport.on_peer_down.append(lambda peer, reason: downs.append(reason))  # type: ignore[attr-defined]
        child = f"zmq://127.0.0.1:0?peers={node.transport.address}&heartbeat=5"  # type: ignore[attr-defined]
        async with child_node(child, "remote.echo") as (proc, _child_id):
            assert await node.ask("remote.echo", Job(1), timeout=5) == Done(1, "child")
            killed = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            await until(lambda: downs, timeout=4, what="peer down")
            assert time.monotonic() - killed < 2.0, "found by the disconnect, not heartbeats"
            assert "connection lost" in downs[0]
            with pytest.raises(NoResponders):
                await node.ask("remote.echo", Job(2), timeout=5)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"GET / HTTP/1.1\r\n\r\n"], "msgpack"),
        ([b"\x93\x01\x02\x03", b"payload"], "HELLO"),
        ([b"x"] * 300, "300 frames"),
    ],
    ids=["text", "not-hello", "too-many-frames"],
)
async def test_a_foreign_dealer_gets_a_dead_letter_and_the_node_goes_on(
    frames: list[bytes], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with node_chain("zmq://127.0.0.1:0", "zmq://127.0.0.1:0?peers={0}") as (home, friend):
        await friend.spawn(Echo, "friend.echo", "friend")
        ctx = zmq.asyncio.Context()
        raw = ctx.socket(zmq.DEALER)
        try:
            raw.connect(f"tcp://{home.transport.address}")
            await raw.send_multipart(frames)

            def letters() -> list[str]:
                return [d.reason for d, _ in home.recent_dead_letters if "bad frame" in d.reason]

            await until(lambda: letters(), what="dead letter")
            assert any(reason.lower() in r.lower() for r in letters()), letters()
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert errors, "a clear log line"
            before = home.transport.bad_frames
            for _ in range(5):  # stragglers of the refused link open no new links
                await raw.send_multipart([b"more garbage"])
            await asyncio.sleep(0.1)
            assert home.transport.bad_frames == before
            assert await home.ask("friend.echo", Job(7), timeout=5) == Done(7, "friend")
        finally:
            raw.close(linger=0)
            ctx.destroy(linger=0)


# -- shutdown -----------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_open_close_cycles_leak_no_file_descriptor_and_no_task(no_leaks) -> None:
    async def cycle() -> None:
        async with node_chain("zmq://127.0.0.1:0", "zmq://127.0.0.1:0?peers={0}") as (a, b):
            await b.spawn(Echo, "b.echo", "b")
            assert await a.ask("b.echo", Job(1), timeout=5) == Done(1, "b")

    await cycle()  # warm up: imports, loop internals
    before = open_fds()
    for _ in range(5):
        await cycle()
    await asyncio.sleep(0.05)
    assert open_fds() <= before, f"{open_fds() - before} file descriptors leaked"
    await no_leaks()


async def test_close_is_idempotent_and_refuses_new_work() -> None:
    t = ZmqTransport("zmq://127.0.0.1:0", **FAST)
    await t.start()
    await t.close()
    await t.close()
    assert t.ctx is None
    from synaptic_mesh import TransportClosed

    with pytest.raises(TransportClosed):
        await t.publish("a.b", [b"x"])
