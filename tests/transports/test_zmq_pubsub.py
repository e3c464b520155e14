"""``zmq+pubsub://``: the XPUB-XSUB proxy, queue groups, counted drops, bad input, shutdown.

Every test runs a real proxy (in a node with ``?proxy=1``, a ``Proxy`` object,
or the ``synaptic-mesh proxy`` command) and real ZeroMQ sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys

import msgpack
import pytest
import zmq
import zmq.asyncio

from synaptic_mesh import Node, NoResponders
from synaptic_mesh.runtime.transport_lookup import transport_class
from synaptic_mesh.transports import zmq_proxy, zmq_pubsub
from synaptic_mesh.transports.base import BadFrame
from synaptic_mesh.transports.zmq_proxy import Proxy
from synaptic_mesh.transports.zmq_pubsub import ZmqPubSubTransport, parse_url, plain_prefix
from tests.transports.peer_process import Done, Echo, Job
from tests.transports.util import Collector, until


async def started(url: str, **options: object) -> ZmqPubSubTransport:
    transport = ZmqPubSubTransport(url, **options)
    await transport.start()
    return transport


# -- URL, capabilities ------------------------------------------------------------------


def test_entry_point_url_and_capabilities() -> None:
    assert transport_class("zmq+pubsub://127.0.0.1:7000") is ZmqPubSubTransport
    caps = ZmqPubSubTransport.capabilities
    assert caps.native == frozenset({"pub-sub"}) and caps.delivery == "at-most-once"
    assert caps.knows_interest and caps.ordered and not caps.durable
    s = parse_url("zmq+pubsub://10.0.0.1:7000?proxy=1&flush_timeout=0.5", {"node_id": "n1"})
    assert (s.host, s.port, s.proxy, s.flush_timeout, s.node_id) == (
        "10.0.0.1",
        7000,
        True,
        0.5,
        "n1",
    )
    assert plain_prefix("tot.*.exploration") == b"\x01tot."
    assert plain_prefix("core.claude") == b"\x01core.claude\x00"
    assert plain_prefix(">") == b"\x01"
    for url, error in [
        ("zmq+pubsub://127.0.0.1", "needs host:port"),
        ("zmq+pubsub://127.0.0.1:0", "port 0 only with proxy=1"),
        ("zmq+pubsub://127.0.0.1:7000?heartbeat=1", "unknown option 'heartbeat'"),
        ("zmq://127.0.0.1:7000", "not a zmq\\+pubsub URL"),
    ]:
        with pytest.raises(ValueError, match=error):
            ZmqPubSubTransport(url)


async def test_no_proxy_is_a_clear_error_and_leaves_nothing_open() -> None:
    before = open_fds()
    with pytest.raises(ConnectionError, match=r"no zmq\+pubsub proxy answered .*\?proxy=1"):
        await started("zmq+pubsub://127.0.0.1:9?connect_timeout=0.3")
    assert open_fds() == before


# -- routing -------------------------------------------------------------------------------


async def test_queue_group_across_nodes_each_message_once_and_exact_filters() -> None:
    a = await started("zmq+pubsub://127.0.0.1:0?proxy=1")
    b = await started(f"zmq+pubsub://{a.address}")
    c = await started(f"zmq+pubsub://{a.address}")
    try:
        group, plain, wild = Collector(), Collector(), Collector()
        await b.subscribe("jobs.*", group, queue="workers")
        await c.subscribe("jobs.>", group, queue="workers")
        member = await c.subscribe("jobs.*", group, queue="workers")
        await b.subscribe("jobs.1", plain)
        await c.subscribe("tot.*.exploration", wild)
        for i in range(60):
            await a.publish(f"jobs.{i % 3}", [b"%d" % i])
        await a.publish("tot.b1.exploration", [b"yes"])
        await a.publish("tot.b1.other", [b"no"])  # the prefix "tot." passes, the filter does not
        await a.publish("tot.b1.exploration.deep", [b"no"])
        await until(lambda: len(group.got) == 60 and len(plain.got) == 20 and wild.got)
        await asyncio.sleep(0.05)
        assert sorted(int(p) for p in group.payloads) == list(range(60)), "each job once"
        assert wild.payloads == [b"yes"]
        await member.unsubscribe()
        await asyncio.sleep(0.05)
        group.got.clear()
        for i in range(30):
            await a.publish(f"jobs.{i}", [b"%d" % i])
        await until(lambda: len(group.got) + c.stats.orphaned == 30)
        assert c.stats.orphaned == 0, "the publisher learned the member had left"
        assert a.stats.unconnected == 0 and b.stats.gaps == 0
    finally:
        for t in (c, b, a):
            await t.close()


async def test_no_responders_after_the_barrier_and_asks_across_processes() -> None:
    async with Node("zmq+pubsub://127.0.0.1:0?proxy=1", name="home") as home:
        with pytest.raises(NoResponders):
            await home.ask("nobody.here", Job(0), timeout=5)
        from tests.transports.test_router import child_node

        async with child_node(f"zmq+pubsub://{home.transport.address}", "remote.echo") as _:  # type: ignore[attr-defined]
            assert await home.ask("remote.echo", Job(1), timeout=5) == Done(1, "child")


# -- losses are counted ----------------------------------------------------------------------


async def test_drops_at_the_high_water_mark_are_counted_exactly(monkeypatch) -> None:
    monkeypatch.setattr(zmq_proxy, "PROXY_HWM", 2)
    monkeypatch.setattr(zmq_pubsub, "HWM", 2)
    a = await started("zmq+pubsub://127.0.0.1:0?proxy=1")
    b = await started(f"zmq+pubsub://{a.address}")
    try:
        b._sub.sock.setsockopt(zmq.RCVBUF, 16 * 1024)  # type: ignore[union-attr]
        release = asyncio.Event()
        got: list[int] = []

        async def slow(subject: str, frames: object, reply_to: object) -> None:
            await release.wait()
            got.append(int(bytes(frames[0])))  # type: ignore[index]

        await b.subscribe("flood", slow)
        total = 3000
        for i in range(total):
            await a.publish("flood", [b"%d" % i, b"x" * 8192])
        release.set()
        await asyncio.sleep(0.2)
        await a.publish("flood", [b"%d" % total, b"last"])  # shows a gap at the end too
        await until(lambda: got and got[-1] == total, timeout=10)
        assert b.stats.gaps > 0, "a subscriber that fell behind lost messages"
        assert len(got) + b.stats.gaps == total + 1, "every loss is counted, nothing twice"
        assert got == sorted(got), "what arrives is in order"
    finally:
        await b.close()
        await a.close()


async def test_a_proxy_restart_is_survived_and_publishes_meanwhile_are_counted() -> None:
    proxy = Proxy("127.0.0.1", 0)
    proxy.start()
    port = proxy.port
    a = await started(f"zmq+pubsub://127.0.0.1:{port}")
    b = await started(f"zmq+pubsub://127.0.0.1:{port}")
    try:
        got = Collector()
        await b.subscribe("news", got)
        await a.publish("news", [b"1"])
        await until(lambda: got.payloads == [b"1"])
        proxy.close()
        await until(lambda: not a._connected, what="publisher noticed the proxy went away")
        assert "news" not in a._patterns, "what the old proxy forwarded is forgotten"
        await a.publish("news", [b"during"])  # queued: delivered, or lost and counted
        assert a.stats.unconnected == 1
        proxy = Proxy("127.0.0.1", port)
        proxy.start()
        await until(lambda: a._connected and "news" in a._patterns, timeout=5)
        await a.publish("news", [b"2"])
        await until(lambda: got.payloads[-1:] == [b"2"])
        assert len(got.payloads) + b.stats.gaps == 3, "delivered, or counted as lost"
    finally:
        await b.close()
        await a.close()
        proxy.close()


# -- bad input -----------------------------------------------------------------------------------


async def test_a_foreign_publisher_gets_dead_letters_and_the_node_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with Node("zmq+pubsub://127.0.0.1:0?proxy=1", name="home") as home:
        await home.spawn(Echo, "foo.echo", "home")  # an actor: a queue member
        everything = Collector()
        await home.transport.subscribe(">", everything)  # plain: every subject reaches this node
        reports: list[BadFrame] = []
        home.transport.on_bad_frame.append(reports.append)  # type: ignore[attr-defined]
        ctx = zmq.asyncio.Context()
        raw = ctx.socket(zmq.PUB)
        try:
            raw.connect(f"tcp://{home.transport.address}")  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)  # a PUB sends nothing before its connection is up
            await raw.send_multipart([b"\x01foo.echo\x00not msgpack \xff", b"env"])
            await raw.send_multipart([b"\x01foo.echo", b"env"])  # the topic never ends
            await raw.send_multipart([b"\x01foo.echo\x00\x94\xa3bad\xc0\xa1x\x01", b"env"])
            meta = msgpack.packb(["a..b", None, "raw", 1])
            await raw.send_multipart([b"\x01a..b\x00" + meta, b"env"])
            await until(lambda: len(reports) == 4, what="four refusals")
            assert "msgpack meta" in reports[0].reason
            assert "no complete topic" in reports[1].reason
            assert "does not match its topic" in reports[2].reason
            assert "invalid subject" in reports[3].reason
            assert not any(s.startswith(("foo", "a..b")) for s, _, _ in everything.got)
            letters = [d.reason for d, _ in home.recent_dead_letters if "bad frame" in d.reason]
            assert len(letters) == 4
            assert sum("refused a message" in r.getMessage() for r in caplog.records) == 4
            assert await home.ask("foo.echo", Job(5), timeout=5) == Done(5, "home")
        finally:
            raw.close(linger=0)
            ctx.destroy(linger=0)


# -- the command, shutdown ------------------------------------------------------------------------


async def test_the_proxy_command_serves_a_mesh_and_stops_on_sigint() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "synaptic-mesh")
    proc = subprocess.Popen(
        [script, "proxy", "zmq+pubsub://127.0.0.1:0"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
        assert line.startswith("proxy 127.0.0.1:"), line
        address = line.split()[1].rstrip(":")
        a = await started(f"zmq+pubsub://{address}")
        b = await started(f"zmq+pubsub://{address}")
        got = Collector()
        await b.subscribe("via.cli", got)
        await a.publish("via.cli", [b"ok"])
        await until(lambda: got.payloads == [b"ok"])
        await b.close()
        await a.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 5) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_open_close_cycles_leak_no_descriptor_thread_or_task(no_leaks) -> None:
    async def cycle() -> None:
        async with Node("zmq+pubsub://127.0.0.1:0?proxy=1", name="a") as a:
            url = f"zmq+pubsub://{a.transport.address}"  # type: ignore[attr-defined]
            async with Node(url, name="b") as b:
                await b.spawn(Echo, "b.echo", "b")
                assert await a.ask("b.echo", Job(1), timeout=5) == Done(1, "b")

    await cycle()
    before = open_fds()
    for _ in range(4):
        await cycle()
    assert open_fds() <= before, f"{open_fds() - before} file descriptors leaked"
    await no_leaks()


# -- foreign input: each bad message refused, the next one served ---------------------------------


async def test_a_message_over_this_nodes_max_message_is_a_dead_letter_and_reading_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The SUB's one connection to the proxy carries every publisher's messages: one
    # oversized message must cost that message only, never the connection.
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with Node("zmq+pubsub://127.0.0.1:0?proxy=1&max_message=4096", name="small") as small:
        got = Collector()
        await small.transport.subscribe("big.>", got)
        other = await started(f"zmq+pubsub://{small.transport.address}")  # max_message 256 MiB
        try:
            await other.publish("big.one", [b"before"])
            await other.publish("big.one", [b"x" * 10_000])
            await other.publish("big.one", [b"after"])
            await other.publish("big.two", [b"two"])
            await until(lambda: len(got.got) == 3, what="the messages after the big one")
            assert got.payloads == [b"before", b"after", b"two"]
            assert small.transport.stats.gaps == 0  # the refused one was received, not lost
            ctx = zmq.asyncio.Context()
            raw = ctx.socket(zmq.PUB)
            try:
                raw.connect(f"tcp://{small.transport.address}")  # type: ignore[attr-defined]
                await asyncio.sleep(0.2)
                await raw.send_multipart([b"\x01big.three\x00" + b"x" * 10_000, b"env"])
                await other.publish("big.three", [b"three"])
                await until(lambda: len(got.got) == 4, what="the message after a big frame 0")
            finally:
                raw.close(linger=0)
                ctx.destroy(linger=0)
            assert got.payloads[3] == b"three"
            letters = [d.reason for d, _ in small.recent_dead_letters]
            assert len(letters) == 2, letters
            assert "exceeds max_message 4096" in letters[0], letters
            assert "frame 0 of 10011 bytes exceeds max_message 4096" in letters[1], letters
            assert small.transport.stats.bad_frames == 2
            assert sum("refused a message" in r.getMessage() for r in caplog.records) == 2
        finally:
            await other.close()


async def test_a_foreign_message_sent_upstream_to_the_proxy_is_no_unsubscription() -> None:
    # Only frames starting with 1 or 0 are (un)subscriptions: any other one an XSUB sends
    # to the proxy reaches every publisher as it is, and must not drop a live interest.
    async with (
        Node("zmq+pubsub://127.0.0.1:0?proxy=1", name="a") as a,
        Node(f"zmq+pubsub://{a.transport.address}", name="b") as b,  # type: ignore[attr-defined]
    ):
        await b.spawn(Echo, "svc.echo", "b")
        reports: list[BadFrame] = []
        a.transport.on_bad_frame.append(reports.append)  # type: ignore[attr-defined]
        (member,) = b.transport._members  # type: ignore[attr-defined]
        host, port = a.transport.address.rsplit(":", 1)  # type: ignore[attr-defined]
        ctx = zmq.asyncio.Context()
        raw = ctx.socket(zmq.XSUB)
        connected = raw.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            raw.connect(f"tcp://{host}:{int(port) + 1}")  # the proxy's XPUB
            await asyncio.wait_for(connected.recv_multipart(), 5)
            await raw.send(b"\x07" + member)  # not the member's unsubscription
            await until(lambda: len(reports) == 1, what="the foreign message refused")
            assert "not a subscription" in reports[0].reason
            assert any("not a subscription" in d.reason for d, _ in a.recent_dead_letters)
            assert await a.ask("svc.echo", Job(3), timeout=5) == Done(3, "b")
        finally:
            raw.disable_monitor()
            connected.close(linger=0)
            raw.close(linger=0)
            ctx.destroy(linger=0)
