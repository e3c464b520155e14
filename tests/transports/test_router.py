"""The subject router over real TCP links: full mesh and root/branch/leaf trees.

Traffic is counted per link (``link_stats``: MSGs only, control excluded) to
show that nothing goes to a peer without matching interest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from synaptic_mesh import AgentActor, NoResponders, subscribe
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.router_interest import pattern_within
from synaptic_mesh.transports.base import eager_handler
from tests.transports.peer_process import Done, Echo, Job
from tests.transports.util import Collector, node_chain, tcp_nodes, until

MESH3 = ("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}", "tcp://127.0.0.1:0?peers={0},{1}")


# -- full mesh ------------------------------------------------------------------------


async def test_mesh_interest_propagates_and_only_interested_peers_get_traffic() -> None:
    async with tcp_nodes(*MESH3) as (a, b, c):
        assert sorted(a.peer_ids()) == sorted([b.id, c.id])
        got = Collector()
        sub = await c.subscribe("only.c.>", got)
        # subscribe returned: every peer already knows (FLUSH barrier)
        assert a.peer_interest(c.id) == [("only.c.>", None)]
        assert b.peer_interest(c.id) == [("only.c.>", None)]
        assert a.peer_interest(b.id) == []
        for i in range(20):
            await a.publish("only.c.x", [b"%d" % i])
        await until(lambda: len(got.got) == 20)
        assert got.payloads == [b"%d" % i for i in range(20)], "in order"
        assert a.link_stats(c.id).messages_sent == 20
        assert a.link_stats(b.id).messages_sent == 0, "never forwarded to an uninterested peer"
        assert b.link_stats(a.id).messages_received == 0
        assert c.link_stats(b.id).messages_sent == 0, "a mesh forwards one hop only"
        await sub.unsubscribe()
        await until(lambda: not a.peer_interest(c.id), what="UNSUB reached a")
        await a.publish("only.c.x", [b"nobody wants this"])
        assert a.link_stats(c.id).messages_sent == 20


async def test_mesh_no_responders_and_reply_routing() -> None:
    async with tcp_nodes(*MESH3) as (a, _b, c):
        inbox = Collector()
        await a.subscribe("_INBOX.a.>", inbox)
        await a.publish("nobody.home", [b"question"], reply_to="_INBOX.a.1")
        assert inbox.got == [("_INBOX.a.1", [], None)], "no responders: empty frames at once"

        async def answer(subject: str, frames: list[bytes], reply_to: str | None) -> None:
            assert reply_to is not None
            await c.publish(reply_to, [b"answer to " + bytes(frames[0])])

        await c.subscribe("svc.answer", answer)
        await a.publish("svc.answer", [b"q1"], reply_to="_INBOX.a.2")
        await until(lambda: len(inbox.got) == 2)
        assert inbox.got[1] == ("_INBOX.a.2", [b"answer to q1"], None)


async def test_queue_group_spanning_three_nodes_is_served_exactly_once() -> None:
    async with tcp_nodes(*MESH3) as nodes:
        a, b, c = nodes
        members = {name: Collector() for name in ("a1", "a2", "b1", "c1")}
        await a.subscribe("jobs.>", members["a1"], queue="workers")
        await a.subscribe("jobs.*", members["a2"], queue="workers")
        await b.subscribe("jobs.>", members["b1"], queue="workers")
        await c.subscribe("jobs.>", members["c1"], queue="workers")
        everyone = Collector()
        await c.subscribe("jobs.>", everyone)  # a plain subscriber hears every job
        sent = []
        for i in range(60):
            for origin in (a, b):
                payload = f"{origin.id}:{i}".encode()
                sent.append(payload)
                await origin.publish(f"jobs.{i % 4}", [payload])
        await until(lambda: sum(len(m.got) for m in members.values()) >= 120)
        await until(lambda: len(everyone.got) == 120)
        await asyncio.sleep(0.05)  # a duplicate would arrive now
        delivered = Counter(p for m in members.values() for p in m.payloads)
        assert sorted(delivered) == sorted(sent) and set(delivered.values()) == {1}
        assert all(m.got for m in members.values()), {n: len(m.got) for n, m in members.items()}


async def test_both_nodes_dialing_each_other_keep_one_peer_and_exactly_once() -> None:
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    pa, pb = ports
    async with tcp_nodes(
        f"tcp://127.0.0.1:{pa}?peers=127.0.0.1:{pb}",
        f"tcp://127.0.0.1:{pb}?peers=127.0.0.1:{pa}",
        connect_timeout=0.2,
    ) as (a, b):
        await until(lambda: len(a._peers[b.id].links) == 2 and len(b._peers[a.id].links) == 2)
        downs: list[str] = []
        a.on_peer_down.append(lambda peer, reason: downs.append(peer))
        got = Collector()
        await b.subscribe("twice.>", got)
        for i in range(50):
            await a.publish("twice.x", [b"%d" % i])
        await until(lambda: len(got.got) == 50)
        a._peers[b.id].links[0].link.abort("test drops one of two links")
        for i in range(50, 60):
            await a.publish("twice.x", [b"%d" % i])
        await until(lambda: len(got.got) == 60)
        await asyncio.sleep(0.05)
        assert got.payloads == [b"%d" % i for i in range(60)], "exactly once, in order"
        assert downs == [], "the peer is still up on its other link"


async def test_slow_handler_holds_the_sender_by_credit_while_heartbeats_flow() -> None:
    async with tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}", window_msgs=8) as (
        a,
        b,
    ):
        gate = asyncio.Event()
        got: list[bytes] = []

        async def slow(subject: str, frames: list[bytes], reply_to: str | None) -> None:
            await gate.wait()
            got.append(bytes(frames[0]))

        await b.subscribe("slow.>", slow)

        async def flood() -> None:
            for i in range(100):
                await a.publish("slow.x", [b"%d" % i])

        task = asyncio.ensure_future(flood())
        await asyncio.sleep(3 * a.settings.dead_after)  # far longer than a dead link lives
        assert not task.done(), "the publisher waits for credit"
        assert a.link_stats(b.id).messages_sent == 8, "no more than the window is in flight"
        assert a.peer_ids() == [b.id] and b.peer_ids() == [a.id], "heartbeats kept the link"
        gate.set()
        await asyncio.wait_for(task, 5)
        await until(lambda: len(got) == 100)
        assert got == [b"%d" % i for i in range(100)]


class GatedHandler:
    """``deliver`` is an eager handler that records the bodies it gets, in order.

    ``b"wait"`` returns a coroutine that records it once ``gate`` is set,
    ``b"boom"`` raises, anything else is recorded at once (``DONE``).
    ``in_tasks``: the task each call ran in (``None``: the link's callback).
    """

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.got: list[bytes] = []
        self.in_tasks: list[asyncio.Task[Any] | None] = []

    async def _rest(self, body: bytes) -> None:
        await self.gate.wait()
        self.got.append(body)

    @eager_handler
    def deliver(self, subject: str, frames: list[bytes], reply_to: str | None) -> Any:
        self.in_tasks.append(asyncio.current_task())
        body = bytes(frames[0])
        if body == b"boom":
            raise RuntimeError("a bug in a handler")
        if body == b"wait":
            return self._rest(body)
        self.got.append(body)
        return DONE


async def test_a_plain_eager_handler_returns_done_or_the_rest_to_wait_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler that is a plain function: DONE finishes a delivery at once; a coroutine it
    returns holds the link's later messages until it is done; one that raises is logged."""
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}") as (a, b):
        handler = GatedHandler()
        gate, got = handler.gate, handler.got

        await b.subscribe("plain.x", handler.deliver, queue="plain.x")  # one eager recipient
        await until(lambda: bool(a.peers_serving("plain.x")), what="interest reached a")
        for body in (b"1", b"boom", b"2", b"wait", b"3", b"4"):
            await a.publish("plain.x", [body])
        await until(lambda: got == [b"1", b"2"])
        await asyncio.sleep(0.05)
        assert got == [b"1", b"2"], "3 and 4 wait behind the delivery that waits"
        gate.set()
        await until(lambda: len(got) == 5)
        assert got == [b"1", b"2", b"wait", b"3", b"4"]
        failures = [r for r in caplog.records if "failed on plain.x" in r.getMessage()]
        assert len(failures) == 1 and "a bug in a handler" in str(failures[0].exc_info)


async def test_publish_now_sends_only_what_needs_no_waiting() -> None:
    """The synchronous fast path: one remote recipient with credit, else declined unsent."""
    async with tcp_nodes(
        "tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}", window_msgs=4, max_message=1024
    ) as (
        a,
        b,
    ):
        gate = asyncio.Event()
        got: list[bytes] = []

        async def slow(subject: str, frames: list[bytes], reply_to: str | None) -> None:
            await gate.wait()
            got.append(bytes(frames[0]))

        await b.subscribe("far.>", slow)
        mine = Collector()
        await a.subscribe("near.x", mine)
        assert not a.publish_now("nobody.home", [b"x"]), "nobody: publish reports it"
        assert not a.publish_now("near.x", [b"x"]), "a local handler runs in publish"
        assert not a.publish_now("far.x", [b"x" * (a.settings.max_message + 1)])
        with pytest.raises(ValueError, match="max_message"):
            await a.publish("far.x", [b"x" * (a.settings.max_message + 1)])
        sent = 0
        while a.publish_now("far.x", [b"%d" % sent]):
            sent += 1
            assert sent <= 4, "never past the peer's window"
        assert sent == 4 and a.link_stats(b.id).messages_sent == 4
        task = asyncio.ensure_future(a.publish("far.x", [b"4"]))  # waits for credit
        gate.set()
        await asyncio.wait_for(task, 5)
        await until(lambda: len(got) == 5)
        assert got == [b"%d" % i for i in range(5)], "in order with the slow path"
        assert mine.got == [], "declined means not sent"


def credit_adds_up(a: Any, b: Any) -> bool:
    """What ``a`` may still send to ``b`` plus what ``b`` holds uncredited is ``b``'s window
    (once no CREDIT is on its way): no message and no byte of credit was lost or made up."""
    sending, receiving = a._peers[b.id].links[0], b._peers[a.id].links[0]
    return (
        sending._credit_msgs + receiving._held_msgs == b.settings.window_msgs
        and sending._credit_bytes + receiving._held_bytes == b.settings.window_bytes
    )


async def assert_credit_exact(a: Any, b: Any) -> None:
    await until(lambda: credit_adds_up(a, b), what="the credit adds up to the window")


async def test_a_burst_to_one_subject_travels_as_msgs_in_order_with_exact_credit() -> None:
    """One-frame messages that follow a first MSG to the same subject in the same turn are
    gathered in MSGS; every message arrives once and in the link's order, whether its
    handler runs at once (eager) or in a delivery task, and the credit adds up."""
    async with tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}") as (a, b):
        log: list[bytes] = []

        @eager_handler
        def at_once(subject: str, frames: list[bytes], reply_to: str | None) -> Any:
            log.append(bytes(frames[0]))
            return DONE

        async def in_task(subject: str, frames: list[bytes], reply_to: str | None) -> None:
            log.append(b"+".join(bytes(f) for f in frames) + (b"?" if reply_to else b""))

        await b.subscribe("burst.eager", at_once, queue="burst.eager")  # one eager recipient
        await b.subscribe("burst.task", in_task)
        await until(lambda: bool(a.peers_serving("burst.eager") and a.peers_serving("burst.task")))
        sent: list[bytes] = []

        def send(subject: str, frames: list[bytes], reply_to: str | None = None) -> None:
            assert a.publish_now(subject, frames, reply_to)
            sent.append(b"+".join(frames) + (b"?" if reply_to else b""))

        for i in range(300):  # one turn of the loop: nothing here awaits
            send("burst.eager", [b"e%d" % i])
        for i in range(300):
            send("burst.task", [b"t%d" % i])
        send("burst.task", [b"asks"], "_INBOX.x.1")  # a reply subject: a MSG of its own
        send("burst.task", [b"two", b"frames"])  # two frames: a MSG of its own
        for i in range(300, 400):
            send("burst.eager", [b"e%d" % i])
        await until(lambda: len(log) == len(sent), what="every message delivered")
        assert log == sent, "once each, in the order sent"
        stats, got = a.link_stats(b.id), b.link_stats(a.id)
        assert stats.messages_sent == got.messages_received == len(sent)
        # each run of one subject: its first message alone, the rest in MSGS of at most 255
        assert stats.batches_sent == got.batches_received == 2 + 2 + 1
        assert stats.bytes_sent == got.bytes_received
        await assert_credit_exact(a, b)
        for _ in range(3):  # past the window several times over: credit keeps coming back
            for i in range(b.settings.window_msgs):
                if not a.publish_now("burst.eager", [b"m%d" % i]):
                    await a.publish("burst.eager", [b"m%d" % i])
        await until(lambda: len(log) == len(sent) + 3 * b.settings.window_msgs)
        await assert_credit_exact(a, b)


async def test_what_a_turn_gathers_leaves_in_one_write_when_the_turn_ends() -> None:
    """The first message of a turn is written at once; everything after it in the turn,
    the MSGS still being gathered at its end included, goes in one more socket write."""
    async with tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}") as (a, b):
        got = Collector()
        await b.subscribe("turn.x", got)
        await b.subscribe("turn.y", got)
        await until(lambda: bool(a.peers_serving("turn.x") and a.peers_serving("turn.y")))
        (state,) = a._interest.links
        sock = state.link._transport
        writes: list[int] = []
        write = sock.write

        def counted(data: Any) -> None:
            writes.append(len(data))
            write(data)

        sock.write = counted
        try:
            for i in range(50):  # one turn: nothing here awaits
                assert a.publish_now("turn.x", [b"x%d" % i])
            assert a.publish_now("turn.y", [b"y"])  # sends the MSGS gathered so far first
            for i in range(50, 100):
                assert a.publish_now("turn.x", [b"x%d" % i])  # gathered until the turn ends
            await until(lambda: len(got.got) == 101, what="every message delivered")
        finally:
            sock.write = write
        assert len(writes) == 2, writes
        assert a.link_stats(b.id).batches_sent == 2


async def test_what_a_read_sends_back_leaves_before_the_read_returns() -> None:
    """A reply sent while a read is handled is written by the end of that read's callback,
    the MSGS gathered behind the first one included: no loop turn goes by first."""
    async with tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}") as (a, b):
        back = Collector()
        await a.subscribe("turn.back", back)

        @eager_handler
        def echo(subject: str, frames: Any, reply_to: str | None) -> Any:
            assert b.publish_now("turn.back", [bytes(frames[0])])
            return DONE

        await b.subscribe("turn.echo", echo)
        await until(lambda: bool(a.peers_serving("turn.echo") and b.peers_serving("turn.back")))
        (state,) = b._interest.links
        link, sock = state.link, state.link._transport
        reading = False
        writes: list[bool] = []  # per socket write: was b's link inside its read callback?
        write, buffer_updated = sock.write, link.buffer_updated

        def counted(data: Any) -> None:
            writes.append(reading)
            write(data)

        def read(nbytes: int) -> None:
            nonlocal reading
            reading = True
            try:
                buffer_updated(nbytes)
            finally:
                reading = False

        sock.write, link.buffer_updated = counted, read
        try:
            for i in range(40):  # one turn: a MSG, then a MSGS
                assert a.publish_now("turn.echo", [b"%d" % i])
            await until(lambda: len(back.got) == 40, what="every echo back")
        finally:
            sock.write, link.buffer_updated = write, buffer_updated
        assert back.payloads == [b"%d" % i for i in range(40)]
        assert writes
        assert all(writes), writes


async def test_a_delivery_that_waits_inside_a_msgs_holds_the_rest_of_it_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Within a MSGS as between MSGs: a handler that waits holds the later messages, one
    that raises is logged and the rest go on, and the MSGS's credit comes back after all."""
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}") as (a, b):
        handler = GatedHandler()
        gate, got = handler.gate, handler.got

        await b.subscribe("plain.x", handler.deliver, queue="plain.x")
        await until(lambda: bool(a.peers_serving("plain.x")), what="interest reached a")
        for body in (b"1", b"2", b"boom", b"3", b"wait", b"4", b"5"):
            assert a.publish_now("plain.x", [body])  # 1 alone, the rest in one MSGS
        await until(lambda: got == [b"1", b"2", b"3"])
        await asyncio.sleep(0.05)
        assert got == [b"1", b"2", b"3"], "4 and 5 wait behind the delivery that waits"
        assert b.link_stats(a.id).batches_received == 1
        assert handler.in_tasks == [None] * 5, "up to the one that waits: in the link's callback"
        gate.set()
        await until(lambda: len(got) == 6)
        assert got == [b"1", b"2", b"3", b"wait", b"4", b"5"]
        failures = [r for r in caplog.records if "failed on plain.x" in r.getMessage()]
        assert len(failures) == 1 and "a bug in a handler" in str(failures[0].exc_info)
        await assert_credit_exact(a, b)


async def test_a_received_message_for_one_local_handler_is_handled_at_once() -> None:
    """In a mesh a received message is never forwarded: with one handler on this node it
    is delivered in the link's callback even when peers share the interest (a bus), in
    order, and a delivery that waits still holds the later ones."""
    async with tcp_nodes("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}") as (a, b):
        handler = GatedHandler()
        gate, got, in_tasks = handler.gate, handler.got, handler.in_tasks

        at_a = Collector()
        await a.subscribe("both.>", at_a)  # b's table: its handler and peer a
        await b.subscribe("both.>", handler.deliver)
        await until(lambda: bool(a.peers_serving("both.x") and b.peers_serving("both.x")))
        for body in (b"1", b"2"):
            await a.publish("both.x", [body])
        await until(lambda: got == [b"1", b"2"])
        assert in_tasks == [None, None], "no delivery task: handled in the link's callback"
        for body in (b"wait", b"3", b"4"):
            await a.publish("both.x", [body])
        await asyncio.sleep(0.05)
        assert got == [b"1", b"2"], "3 and 4 wait behind the delivery that waits"
        gate.set()
        await until(lambda: len(got) == 5)
        assert got == [b"1", b"2", b"wait", b"3", b"4"]
        await asyncio.sleep(0.05)
        assert at_a.payloads == [b"1", b"2", b"wait", b"3", b"4"], "nothing came back to a"


# -- a node in another process, killed -------------------------------------------------


@asynccontextmanager
async def child_node(
    url: str, subject: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.transports.peer_process",
        url,
        subject,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=root,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.startswith(b"READY "), line
        yield proc, line.split()[1].decode()
    finally:
        with contextlib.suppress(ProcessLookupError):  # already reaped after a SIGKILL
            proc.kill()
        await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
async def test_killed_node_is_detected_dropped_and_rejoins(sig: signal.Signals) -> None:
    """SIGKILL closes the socket at once; SIGSTOP leaves it open, only heartbeats notice."""
    timing = {"heartbeat": 0.2, "misses": 3}
    async with node_chain("tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}", **timing) as (a, b):
        downs: list[tuple[str, str, float]] = []
        ups: list[str] = []
        a.transport.on_peer_down.append(lambda p, r: downs.append((p, r, time.monotonic())))
        a.transport.on_peer_up.append(ups.append)
        peers = f"{a.transport.address},{b.transport.address}"
        url = f"tcp://127.0.0.1:0?peers={peers}&heartbeat=0.2&misses=3"
        async with child_node(url, "remote.echo") as (proc, child_id):
            assert await a.ask("remote.echo", Job(1), timeout=5) == Done(1, "child")
            assert await b.ask("remote.echo", Job(2), timeout=5) == Done(2, "child")
            killed = time.monotonic()
            os.kill(proc.pid, sig)
            await until(lambda: downs, timeout=3, what="peer_down fired")
            peer, reason, at = downs[0]
            assert peer == child_id
            assert at - killed <= 0.6 + 0.4, f"detected after {at - killed:.2f} s"
            if sig == signal.SIGSTOP:
                assert "no heartbeat" in reason
            assert a.transport.peer_interest(child_id) == []
            with pytest.raises(NoResponders):
                await a.ask("remote.echo", Job(3), timeout=5)
            await until(lambda: child_id not in b.transport.peer_ids(), what="b dropped it too")
        async with child_node(url, "remote.echo") as (_proc, new_id):
            assert new_id != child_id and new_id in ups
            assert await a.ask("remote.echo", Job(4), timeout=5) == Done(4, "child")
            assert await b.ask("remote.echo", Job(5), timeout=5) == Done(5, "child")


# -- root / branch / leaf tree ---------------------------------------------------------

TREE = (
    "tcp://127.0.0.1:0?role=root",  # 0 root
    "tcp://127.0.0.1:0?role=branch&parent={0}&prefixes=photogrammetry.>",  # 1 branch B1
    "tcp://127.0.0.1:0?role=branch&parent={0}",  # 2 branch B2, exports everything
    "tcp://?role=leaf&parent={1}",  # 3 leaf L1 under B1
    "tcp://?role=leaf&parent={1}",  # 4 leaf L3 under B1
    "tcp://?role=leaf&parent={2}",  # 5 leaf L2 under B2
)


class PoolWorker(AgentActor):
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log

    @subscribe("jobs.>", queue="workers")
    async def work(self, msg: Job) -> None:
        self.log.append((self.subject, msg.n))


def ids(*nodes: object) -> list[str]:
    return [n.transport.id for n in nodes]  # type: ignore[attr-defined]


async def test_tree_routes_asks_through_branches_and_only_towards_interest() -> None:
    async with node_chain(*TREE) as (root, b1, b2, l1, l3, l2):
        await l1.spawn(Echo, "photogrammetry.mesher", "l1")
        assert await l2.ask("photogrammetry.mesher", Job(1), timeout=5) == Done(1, "l1")
        assert await root.ask("photogrammetry.mesher", Job(2), timeout=5) == Done(2, "l1")
        scans = Collector()
        await l1.transport.subscribe("photogrammetry.scan.>", scans)
        before = {
            "root->b2": root.transport.link_stats(b2.transport.id).messages_sent,
            "b1->l3": b1.transport.link_stats(l3.transport.id).messages_sent,
            "b1->l1": b1.transport.link_stats(l1.transport.id).messages_sent,
        }
        for i in range(10):
            await l2.transport.publish("photogrammetry.scan.x", [b"%d" % i])
        await until(lambda: len(scans.got) == 10)
        assert scans.payloads == [b"%d" % i for i in range(10)]
        assert b1.transport.link_stats(l1.transport.id).messages_sent == before["b1->l1"] + 10
        assert b1.transport.link_stats(l3.transport.id).messages_sent == before["b1->l3"] == 0
        assert root.transport.link_stats(b2.transport.id).messages_sent == before["root->b2"]
        # a burst in one turn leaves the leaf as MSGS; each router on the way forwards it on
        for i in range(10, 310):
            assert l2.transport.publish_now("photogrammetry.scan.x", [b"%d" % i])
        await until(lambda: len(scans.got) == 310)
        assert scans.payloads == [b"%d" % i for i in range(310)], "once each, in order"
        assert l2.transport.link_stats(b2.transport.id).batches_sent == 2


async def test_tree_branch_prefixes_limit_what_the_root_learns() -> None:
    async with node_chain(*TREE) as (root, b1, _b2, l1, l3, l2):
        await l1.spawn(Echo, "core.secret", "l1")
        assert await l3.ask("core.secret", Job(1), timeout=5) == Done(1, "l1"), "same branch"
        assert ("core.secret", "core.secret") not in root.transport.peer_interest(b1.transport.id)
        with pytest.raises(NoResponders):
            await l2.ask("core.secret", Job(2), timeout=5)
        assert pattern_within("photogrammetry.mesh.*", "photogrammetry.>")
        assert not pattern_within("*.mesh", "photogrammetry.>")


async def test_tree_queue_group_is_served_exactly_once() -> None:
    async with node_chain(*TREE) as (root, _b1, b2, l1, l3, l2):
        log: list[tuple[str, int]] = []
        for node, name in ((root, "root"), (b2, "b2"), (l2, "l2"), (l1, "l1")):
            await node.spawn(PoolWorker, f"pool.{name}", log)
        origins = (root, l2, l3)
        for i in range(90):
            await origins[i % 3].publish(f"jobs.{i % 5}", Job(i))
        await until(lambda: len(log) >= 90)
        await asyncio.sleep(0.05)
        assert sorted(n for _, n in log) == list(range(90)), "each job exactly once"
        assert {w for w, _ in log} == {"pool.root", "pool.b2", "pool.l2", "pool.l1"}
        from_l1 = {n % 3 for w, n in log if w == "pool.l1"}
        assert from_l1 == {2}, "jobs.> is outside B1's prefixes: only l3 (inside) reaches l1"


async def test_tree_interest_vanishes_with_a_leaf_and_returns_when_it_rejoins() -> None:
    async with node_chain(*TREE) as (root, b1, _b2, l1, _l3, l2):
        downs: list[str] = []
        b1.transport.on_peer_down.append(lambda peer, reason: downs.append(peer))
        await l1.spawn(Echo, "photogrammetry.mesher", "l1")
        assert await l2.ask("photogrammetry.mesher", Job(1), timeout=5) == Done(1, "l1")
        gone = l1.transport.id
        await l1.close()
        await until(lambda: downs == [gone], what="the branch saw its leaf go")

        def known_at_root() -> bool:
            keys = root.transport.peer_interest(b1.transport.id)
            return ("photogrammetry.mesher", "photogrammetry.mesher") in keys

        await until(lambda: not known_at_root(), what="interest withdrawn up the tree")

        def known_at_l2() -> bool:
            keys = l2.transport.peer_interest(_b2.transport.id)
            return any(pattern == "photogrammetry.mesher" for pattern, _ in keys)

        await until(lambda: not known_at_l2(), what="and down to the other leaves")
        with pytest.raises(NoResponders):
            await l2.ask("photogrammetry.mesher", Job(2), timeout=5)
        async with node_chain(f"tcp://?role=leaf&parent={b1.transport.address}") as [again]:
            await again.spawn(Echo, "photogrammetry.mesher", "again")
            assert known_at_root()
            assert await l2.ask("photogrammetry.mesher", Job(3), timeout=5) == Done(3, "again")


async def test_closing_leaves_no_task_behind(no_leaks) -> None:
    async with tcp_nodes(*MESH3) as (a, b, c):
        got = Collector()
        await c.subscribe("x.>", got, queue="q")
        await b.subscribe("x.>", got, queue="q")
        for i in range(10):
            await a.publish("x.y", [b"%d" % i])
        await until(lambda: len(got.got) == 10)
    await no_leaks()
