"""``nng+tcp://`` and ``nng+ipc://``: URLs, capabilities, links on real NNG sockets, bad input,
and that closing releases every socket.

Bad input comes from a *foreign* NNG peer driven by hand with pynng: it can
send garbage to the rendezvous, a wrong token to a link socket, or anything
at all over a link it obtained properly. Each must end in a clear ERROR log
line and a dead letter on ``_mesh.dead``, while the node's healthy peer goes
on working.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pynng
import pytest

from synaptic_mesh import Node, NoResponders, message
from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.dead_letters import DEAD_LETTER_SUBJECT, DeadLetter
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.runtime.transport_lookup import open_transport, transport_class
from synaptic_mesh.transports.base import LinkClosed
from synaptic_mesh.transports.framing import LinkLimits, encode_message
from synaptic_mesh.transports.nng import (
    NngIpcTransport,
    NngTcpTransport,
    parse_ipc_url,
    parse_tcp_url,
)
from synaptic_mesh.transports.nng_connector import (
    ACCEPTED,
    MAX_PENDING,
    REQUEST,
    TOKEN,
    NngConnector,
)
from synaptic_mesh.transports.nng_link import BIG_MESSAGE
from synaptic_mesh.transports.nng_native import DEFAULT_NATIVE
from tests.transports.nng_native_util import assert_no_descriptor_leak
from tests.transports.peer_process import Done, Job
from tests.transports.test_router import child_node
from tests.transports.util import FAST, Collector, until

SCHEMES = ("nng+tcp", "nng+ipc")


@asynccontextmanager
async def directory() -> AsyncIterator[str]:
    path = tempfile.mkdtemp(prefix="smesh-nngt-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def linked(scheme: str, **options: Any) -> AsyncIterator[tuple[Any, Any]]:
    """Two started transports of ``scheme``, ``b`` dialing ``a``; closed on exit."""
    async with directory() as path:
        if scheme == "nng+tcp":
            first_url, second_url = "nng+tcp://127.0.0.1:0", "nng+tcp://127.0.0.1:0?peers={}"
        else:
            first_url, second_url = (
                f"nng+ipc://{path}/a.sock",
                f"nng+ipc://{path}/b.sock?peers={{}}",
            )
        a = open_transport(first_url, **{**FAST, **options})
        await a.start()
        b = open_transport(second_url.format(a.address), **{**FAST, **options})
        try:
            await b.start()
            await until(lambda: a.peer_ids() and b.peer_ids(), what="linked")
            yield a, b
        finally:
            await b.close()
            await a.close()


# -- URL, entry points, capabilities --------------------------------------------------------


def test_entry_points_and_truthful_capabilities() -> None:
    assert transport_class("nng+tcp://127.0.0.1:7001") is NngTcpTransport
    assert transport_class("nng+ipc:///tmp/x.sock") is NngIpcTransport
    for cls in (NngTcpTransport, NngIpcTransport):
        caps = cls.capabilities
        assert caps.ordered and caps.knows_interest and caps.delivery == "at-most-once"
        assert not (caps.durable or caps.replay or caps.zero_copy or caps.by_reference)
        assert caps.max_message == RouterSettings.max_message
        assert caps.native == DEFAULT_NATIVE  # a full-mesh node's; see test_nng_native
    assert NngTcpTransport.capabilities.cross_host
    assert not NngIpcTransport.capabilities.cross_host
    small = open_transport("nng+tcp://127.0.0.1:0?max_message=4096")
    assert small.capabilities.max_message == 4096


def test_url_formats() -> None:
    mesh = parse_tcp_url("nng+tcp://127.0.0.1:7001?peers=127.0.0.1:7002,127.0.0.1:7003", {})
    assert (mesh.role, mesh.listen) == ("mesh", "127.0.0.1:7001")
    assert mesh.peers == ("127.0.0.1:7002", "127.0.0.1:7003")
    branch = parse_tcp_url(
        "nng+tcp://0.0.0.0:7010?role=branch&root=10.0.0.1:7000&prefixes=photogrammetry.>",
        {"heartbeat": 0.25},
    )
    assert branch.topology == "tree" and branch.parent == "10.0.0.1:7000"
    assert branch.prefixes == ("photogrammetry.>",) and branch.heartbeat == 0.25
    assert parse_tcp_url("nng+tcp://?role=leaf&parent=[::1]:7010", {}).listen is None
    ipc = parse_ipc_url("nng+ipc:///run/mesh/a.sock?peers=/run/mesh/b.sock,/run/mesh/c.sock", {})
    assert ipc.listen == "/run/mesh/a.sock" and ipc.peers == (
        "/run/mesh/b.sock",
        "/run/mesh/c.sock",
    )
    leaf = parse_ipc_url("nng+ipc://?role=leaf&parent=/run/mesh/root.sock", {})
    assert leaf.listen is None and leaf.dials == (("/run/mesh/root.sock", None),)
    fresh = parse_ipc_url("nng+ipc://", {"node_id": "n/1"})
    assert fresh.listen is not None and fresh.listen.endswith("/nng-n_1.sock")
    assert parse_ipc_url("nng+ipc://rel%20dir/a.sock", {}).listen == "rel dir/a.sock"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("nng+tcp://127.0.0.1", "needs a port"),
        ("nng+tcp://127.0.0.1:0?peers=nohost", "must be host:port"),
        ("nng+tcp://127.0.0.1:0?colour=blue", "unknown option 'colour'"),
        ("nng+ipc:///tmp/a.sock?role=branch", "needs a parent"),
        ("nng+ipc:///tmp/a.sock?heartbeat=soon", "not a valid float"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        open_transport(url)


async def test_ipc_path_too_long_is_a_clear_error() -> None:
    transport = NngIpcTransport("nng+ipc:///tmp/" + "x" * 100 + ".sock")
    with pytest.raises(OSError, match="longer than 107 bytes"):
        await transport.start()
    await transport.close()


# -- links on real NNG sockets ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
async def test_link_carries_multipart_messages_intact_in_order_then_closes_gracefully(
    scheme: str,
) -> None:
    async with directory() as path:
        connector = NngConnector(scheme, LinkLimits(max_frames=8), 2.0)
        accepted: list[Any] = []
        address = "127.0.0.1:0" if scheme == "tcp" else f"{path}/n.sock"
        listener = await connector.listen(address, accepted.append)
        link = await connector.dial(listener.address, 2.0)
        await until(lambda: accepted, what="link accepted")
        server = accepted[0]
        big = bytes(range(256)) * 1024  # 256 KiB: received without a copy, as a view
        messages = [
            [b"one"],
            [b"", b"empty first frame"],
            [b"header", big, b"tail"],
            [memoryview(bytearray(b"a memoryview"))],
            *([b"small %d" % i] for i in range(1000)),  # beyond NNG's buffer: queued in order
        ]
        for frames in messages:
            await link.send(frames)
        link.close()  # graceful: everything sent before is still read by the peer
        for frames in messages:
            got = await server.recv()
            assert [bytes(f) for f in got] == [bytes(f) for f in frames]
        with pytest.raises(LinkClosed, match="closed by the peer"):
            await server.recv()
        await asyncio.wait_for(link.wait_closed(), 3)
        await asyncio.wait_for(server.wait_closed(), 3)
        assert link.socket_closed and server.socket_closed
        with pytest.raises(ValueError, match="1 to 8 frames"):
            await link.send([b"x"] * 9)
        await listener.close()
        assert connector.live == set()


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
async def test_a_receiver_gets_every_message_in_order_from_the_descriptor_callback(
    scheme: str,
) -> None:
    """With ``set_receiver``, messages (those already waiting first) reach the receiver from
    the receive descriptor's reader callback, with no task; the peer's close ends the link."""
    async with directory() as path:
        connector = NngConnector(scheme, LinkLimits(max_frames=8), 2.0)
        accepted: list[Any] = []
        address = "127.0.0.1:0" if scheme == "tcp" else f"{path}/n.sock"
        listener = await connector.listen(address, accepted.append)
        link = await connector.dial(listener.address, 2.0)
        await until(lambda: accepted, what="link accepted")
        server = accepted[0]
        for i in range(3):  # waiting in NNG before the receiver is set
            await link.send([b"early %d" % i])
        await asyncio.sleep(0.05)
        got: list[list[bytes]] = []
        tasks: list[asyncio.Task[Any] | None] = []

        def receiver(frames: list[Any]) -> None:
            tasks.append(asyncio.current_task())
            got.append([bytes(f) for f in frames])

        assert server.set_receiver(receiver)
        assert got == [[b"early 0"], [b"early 1"], [b"early 2"]]
        later = [[b"header", b"body %d" % i] for i in range(500)]  # beyond NNG's buffer
        for frames in later:
            await link.send(frames)
        await until(lambda: len(got) == 503, what="every message")
        assert got[3:] == later
        assert set(tasks[3:]) == {None}  # from a loop callback, not a reader task
        link.close()
        await asyncio.wait_for(server.wait_closed(), 3)  # no recv() needed to notice
        with pytest.raises(LinkClosed, match="closed by the peer"):
            await server.recv()
        await asyncio.wait_for(link.wait_closed(), 3)
        assert link.socket_closed and server.socket_closed
        await listener.close()
        assert connector.live == set()


async def test_a_burst_goes_to_nng_in_one_go_after_its_first_message() -> None:
    async with directory() as path:
        connector = NngConnector("ipc", LinkLimits(max_frames=8), 2.0)
        accepted: list[Any] = []
        listener = await connector.listen(f"{path}/n.sock", accepted.append)
        link = await connector.dial(listener.address, 2.0)
        await until(lambda: accepted, what="link accepted")
        server = accepted[0]
        for i in range(50):  # one loop iteration: the first goes at once, the rest queue
            link.send_nowait([b"burst %d" % i])
        assert len(link._pending) == 49, "queued behind the first, not sent one by one"
        await asyncio.sleep(0)  # the iteration ends: the batch is handed over together
        assert not link._pending
        for i in range(50):
            assert await server.recv() == [b"burst %d" % i]
        link.send_nowait([b"next"])
        link.send_nowait([b"last"])  # queued behind "next" when close() comes
        link.close()  # what was sent before close is still delivered
        assert await server.recv() == [b"next"]
        assert await server.recv() == [b"last"]
        await asyncio.wait_for(link.wait_closed(), 3)
        await listener.close()


async def test_big_frames_arrive_as_views_without_a_copy() -> None:
    async with linked("nng+tcp") as (a, b):
        got = Collector()
        received: list[Any] = []

        async def keep(subject: str, frames: Any, reply_to: str | None) -> None:
            received.append(frames)

        await a.subscribe("bulk.>", keep)
        payload = os.urandom(BIG_MESSAGE * 4)
        await b.publish("bulk.x", [b"envelope", payload])
        await until(lambda: received, what="bulk message")
        envelope, attachment = received[0]
        assert envelope == b"envelope" and bytes(attachment) == payload
        assert isinstance(attachment, memoryview), "a large frame is a view of the NNG message"
        del got


async def test_publish_beyond_max_message_raises_value_error() -> None:
    async with linked("nng+ipc", max_message=1024) as (a, b):
        got = Collector()
        await a.subscribe("size.>", got)
        await b.publish("size.ok", [b"x" * 1024])
        with pytest.raises(ValueError, match="exceeds max_message 1024"):
            await b.publish("size.big", [b"x" * 1000, b"y" * 25])
        await until(lambda: got.payloads == [b"x" * 1024], what="the message within the limit")


async def test_back_pressure_holds_a_fast_sender_and_loses_nothing() -> None:
    """Far more than NNG's buffers hold, with a slow handler: every message, in order."""
    options = {"window_msgs": 64, "high_water": 64 * 1024, "low_water": 16 * 1024}
    async with linked("nng+tcp", **options) as (a, b):
        seen: list[int] = []

        async def slow(subject: str, frames: Any, reply_to: str | None) -> None:
            seen.append(int(bytes(frames[0])))
            if len(seen) % 100 == 0:
                await asyncio.sleep(0.01)

        await a.subscribe("flood.>", slow)
        for n in range(3000):
            await b.publish("flood.x", [b"%d" % n + b" " * 2000])
        await until(lambda: len(seen) == 3000, timeout=20, what="all delivered")
        assert seen == list(range(3000))


async def test_dead_peer_is_noticed_and_redialled() -> None:
    async with linked("nng+tcp") as (a, b):
        down: list[tuple[str, str]] = []
        b.on_peer_down.append(lambda peer, reason: down.append((peer, reason)))
        a_id, address = a.id, a.address
        await a.close()
        await until(lambda: down, what="peer down")
        assert down[0][0] == a_id
        again = NngTcpTransport(f"nng+tcp://{address}", **FAST)
        await again.start()
        try:
            await until(lambda: again.peer_ids() == [b.id], what="redialled")
        finally:
            await again.close()


async def test_tree_of_root_branch_and_leaf_over_ipc() -> None:
    """Same topologies as ``tcp://``: a leaf's publish reaches the root through its branch."""
    async with directory() as path:
        root = NngIpcTransport(f"nng+ipc://{path}/root.sock?role=root", **FAST)
        branch = NngIpcTransport(
            f"nng+ipc://{path}/branch.sock?role=branch&parent={path}/root.sock&prefixes=photo.>",
            **FAST,
        )
        leaf = NngIpcTransport(f"nng+ipc://?role=leaf&parent={path}/branch.sock", **FAST)
        started = []
        try:
            for transport in (root, branch, leaf):
                await transport.start()
                started.append(transport)
            at_leaf, at_root = Collector(), Collector()
            await leaf.subscribe("photo.mesh", at_leaf)
            await root.subscribe("report.>", at_root)
            await until(lambda: root.peer_interest(branch.id), what="interest up the tree")
            await root.publish("photo.mesh", [b"down"])
            await leaf.publish("report.done", [b"up"])
            await until(lambda: at_leaf.payloads == [b"down"] and at_root.payloads == [b"up"])
            assert leaf.address is None and sorted(root.peer_ids()) == [branch.id]
        finally:
            for transport in reversed(started):
                await transport.close()


async def test_ipv6_addresses() -> None:
    a = NngTcpTransport("nng+tcp://[::1]:0", **FAST)
    try:
        await a.start()
    except OSError as exc:  # no IPv6 loopback on this machine
        await a.close()
        pytest.skip(f"no IPv6 loopback: {exc}")
    b = NngTcpTransport(f"nng+tcp://[::1]:0?peers={a.address}", **FAST)
    try:
        await b.start()
        assert a.address.startswith("[::1]:") and b.peer_ids() == [a.id]
    finally:
        await b.close()
        await a.close()


async def test_killed_peer_process_is_dropped_and_its_subjects_gone() -> None:
    """SIGKILL: NNG removes the pipe at once; the link closes without waiting for heartbeats."""
    async with Node("nng+tcp://127.0.0.1:0", name="a", transport_options=FAST) as a:
        downs: list[tuple[str, str]] = []
        a.transport.on_peer_down.append(lambda peer, reason: downs.append((peer, reason)))  # type: ignore[attr-defined]
        url = f"nng+tcp://127.0.0.1:0?peers={a.transport.address}"  # type: ignore[attr-defined]
        async with child_node(url, "remote.echo") as (proc, child_id):
            assert await a.ask("remote.echo", Job(1), timeout=5) == Done(1, "child")
            os.kill(proc.pid, signal.SIGKILL)
            await until(lambda: downs, timeout=3, what="peer down")
            assert downs[0][0] == child_id
            with pytest.raises(NoResponders):
                await a.ask("remote.echo", Job(2), timeout=5)


async def test_message_beyond_recv_max_size_closes_only_that_link() -> None:
    """NNG itself refuses a message over the link's ``recv_max_size``: that pipe closes."""
    async with watched_pair(max_message=1000) as (a, b, _letters):
        foreign = Foreign(a.transport.address)  # type: ignore[attr-defined]
        try:
            sock = await foreign.link()
            await sock.asend(wire(proto.hello("foreign", "mesh", 1000, 1 << 20)))
            await until(lambda: "foreign" in a.transport.peer_ids(), what="foreign peer up")  # type: ignore[attr-defined]
            await sock.asend(b"\x00" * (256 * 1024))  # > 1000 + 64 KiB header + frame table
            await until(lambda: "foreign" not in a.transport.peer_ids(), what="link closed")  # type: ignore[attr-defined]
        finally:
            foreign.close()
        assert a.transport.peer_ids() == [b.transport.id]  # type: ignore[attr-defined]
        await assert_still_working(a, b)


# -- bad input from a foreign NNG peer ---------------------------------------------------------


def wire(frames: Any) -> bytes:
    """One link message's NNG body."""
    return b"".join(bytes(p) for p in encode_message(frames, LinkLimits())[0])


class Foreign:
    """A hand-driven NNG peer: the rendezvous by hand, then raw bytes on its link socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock: pynng.Pair1 | None = None

    async def rendezvous(self, request: bytes = REQUEST) -> bytes:
        with pynng.Req0(recv_timeout=3000, send_timeout=3000) as req:
            req.dial(f"tcp://{self.address}", block=True)
            await req.asend(request)
            return await req.arecv()

    async def link(self, token: bytes | None = None) -> pynng.Pair1:
        reply = await self.rendezvous()
        assert reply.startswith(ACCEPTED)
        real, port = reply[len(ACCEPTED) : len(ACCEPTED) + TOKEN], reply[len(ACCEPTED) + TOKEN :]
        self.sock = pynng.Pair1(recv_timeout=3000, send_timeout=3000)
        self.sock.dial(f"tcp://127.0.0.1:{port.decode()}", block=True)
        await self.sock.asend(real if token is None else token)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@message(name="tests.nng.Note")
class Note:
    text: str


@asynccontextmanager
async def watched_pair(**options: Any) -> AsyncIterator[tuple[Node, Node, list[DeadLetter]]]:
    """Node ``a`` (listening) with a healthy peer ``b``; ``letters`` is what ``_mesh.dead`` got."""
    options = {**FAST, **options}
    async with Node("nng+tcp://127.0.0.1:0", name="a", transport_options=options) as a:
        url = f"nng+tcp://127.0.0.1:0?peers={a.transport.address}"  # type: ignore[attr-defined]
        async with Node(url, name="b", transport_options=options) as b:
            letters: list[DeadLetter] = []

            async def record(letter: DeadLetter, subject: str) -> None:
                letters.append(letter)

            await a.subscribe(DEAD_LETTER_SUBJECT, record)
            yield a, b, letters


async def assert_still_working(a: Node, b: Node) -> None:
    heard: list[Note] = []

    async def keep(note: Note, subject: str) -> None:
        heard.append(note)

    await a.subscribe("still.works", keep)
    await asyncio.sleep(0.05)
    await b.publish("still.works", Note("after the bad input"))
    await until(lambda: heard == [Note("after the bad input")], what="healthy peer still works")


def errors_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_garbage_at_the_rendezvous_is_a_dead_letter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with watched_pair() as (a, b, letters):
        foreign = Foreign(a.transport.address)  # type: ignore[attr-defined]
        reply = await foreign.rendezvous(b"GET / HTTP/1.1\r\n\r\n")
        assert reply.startswith(b"SMNNG1-") and b"not a Synaptic Mesh link request" in reply
        await until(lambda: letters, what="dead letter")
        assert "not a Synaptic Mesh link request" in letters[0].reason
        assert letters[0].detail == b"GET / HTTP/1.1\r\n\r\n".hex()
        assert any("not a Synaptic Mesh link request" in e for e in errors_in(caplog))
        await assert_still_working(a, b)


async def test_wrong_token_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with watched_pair() as (a, b, letters):
        foreign = Foreign(a.transport.address)  # type: ignore[attr-defined]
        try:
            await foreign.link(token=b"x" * TOKEN)
            await until(lambda: letters, what="dead letter")
        finally:
            foreign.close()
        assert "first message is not its token" in letters[0].reason
        assert any("first message is not its token" in e for e in errors_in(caplog))
        assert a.transport.peer_ids() == [b.transport.id]  # type: ignore[attr-defined]
        await assert_still_working(a, b)


async def test_a_flood_of_link_requests_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with watched_pair() as (a, b, _letters):
        foreign = Foreign(a.transport.address)  # type: ignore[attr-defined]
        replies = [await foreign.rendezvous() for _ in range(MAX_PENDING + 3)]
        assert all(r.startswith(ACCEPTED) for r in replies[:MAX_PENDING])
        assert all(b"too many links" in r for r in replies[MAX_PENDING:])
        assert any("refusing a link request" in e for e in errors_in(caplog))
        await assert_still_working(a, b)


BAD_LINK_INPUT = {
    "raw bytes": (b"hello, not a mesh peer", "bad frame count"),
    "lengths past the end": (
        b"\x00\x00\x00\x02\x00\x00\x00\x05\x00\x00\x01\x00abc",
        "add up to 261",
    ),
    "count past the end": (b"\x00\x00\x00\x03\x00\x00\x00\x01", "do not fit"),
    "lengths that disagree": (b"\x00\x00\x00\x01\x00\x00\x00\x09abc", "add up to 9 bytes"),
    "frame count only": (b"\x00\x00\x00\x01", "do not fit"),
    "header not msgpack": (
        b"".join(encode_message([b"\xc1\xc1 not msgpack"], LinkLimits())[0]),
        "not valid msgpack",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LINK_INPUT), ids=list(BAD_LINK_INPUT))
async def test_non_link_bytes_on_a_link_close_only_that_link(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    data, expected = BAD_LINK_INPUT[case]
    async with watched_pair() as (a, b, letters):
        foreign = Foreign(a.transport.address)  # type: ignore[attr-defined]
        try:
            sock = await foreign.link()
            await sock.asend(data)
            await until(lambda: letters, what="dead letter")
        finally:
            foreign.close()
        assert expected in letters[0].reason and letters[0].reason.startswith("bad frame from")
        assert any(expected in e for e in errors_in(caplog)), errors_in(caplog)
        await until(lambda: a.transport.peer_ids() == [b.transport.id], what="only b is left")  # type: ignore[attr-defined]
        await assert_still_working(a, b)


async def test_a_non_envelope_message_is_dead_lettered_and_the_link_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A foreign peer speaking the router protocol but sending bytes that are no envelope."""
    caplog.set_level(logging.WARNING, logger="synaptic_mesh")
    async with watched_pair() as (a, b, letters):
        heard: list[Note] = []

        async def keep(note: Note, subject: str) -> None:
            heard.append(note)

        await a.subscribe("foreign.>", keep)
        foreign = Foreign(a.transport.address)  # type: ignore[attr-defined]
        try:
            sock = await foreign.link()
            await sock.asend(wire(proto.hello("foreign", "mesh", 1000, 1 << 20)))
            await sock.asend(wire(proto.control(proto.FLUSHED, 0)))
            header = proto.msg_header("foreign.x", None, [], 0)
            await sock.asend(wire([header, b"\x93not an envelope"]))
            await sock.asend(wire([header, msgpack.packb({"kind": 99})]))
            await until(lambda: len(letters) >= 2, what="two dead letters")
            assert "foreign" in a.transport.peer_ids()  # type: ignore[attr-defined]
        finally:
            foreign.close()
        assert all(letter.subject == "foreign.x" for letter in letters[:2])
        assert heard == []
        await assert_still_working(a, b)


# -- closing releases every socket ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_open_close_cycles_leak_no_file_descriptor(scheme: str, no_leaks) -> None:
    async def cycle() -> None:
        async with linked(scheme) as (a, b):
            got = Collector()
            await a.subscribe("fd.>", got)
            for n in range(50):
                await b.publish("fd.x", [b"%d" % n])
            await until(lambda: len(got.got) == 50, what="traffic")

    await assert_no_descriptor_leak(
        cycle, cycles=5, what="every NNG socket must be closed by transport.close()"
    )
    await no_leaks()
