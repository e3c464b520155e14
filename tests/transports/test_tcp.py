"""``tcp://``: URL, capabilities, framing on real sockets, and bad input on the wire.

Every bad-input case drives a real socket at a listening node that also has
a healthy peer: the bad link must close with a clear ERROR log and a
``BadFrame`` report, while the node and its other link go on working.
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket

import msgpack
import pytest

from synaptic_mesh import TransportClosed
from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.runtime.transport_lookup import open_transport, transport_class
from synaptic_mesh.transports.base import BadFrame, LinkClosed
from synaptic_mesh.transports.framing import PREAMBLE, LinkLimits, encode_message
from synaptic_mesh.transports.tcp import TcpConnector, TcpTransport, parse_url
from tests.transports.util import Collector, RawPeer, raw_header, tcp_nodes, until, wire

# -- URL, entry point, capabilities ------------------------------------------------


def test_entry_point_and_truthful_capabilities() -> None:
    assert transport_class("tcp://127.0.0.1:7001") is TcpTransport
    caps = TcpTransport.capabilities
    assert caps.ordered and caps.cross_host and caps.knows_interest
    assert caps.delivery == "at-most-once"
    assert not (caps.durable or caps.replay or caps.zero_copy or caps.by_reference)
    assert caps.max_message == RouterSettings.max_message
    small = open_transport("tcp://127.0.0.1:0?max_message=4096")
    assert small.capabilities.max_message == 4096


def test_url_formats() -> None:
    mesh = parse_url("tcp://127.0.0.1:7001?peers=127.0.0.1:7002, 127.0.0.1:7003", {})
    assert (mesh.role, mesh.topology, mesh.listen) == ("mesh", "mesh", "127.0.0.1:7001")
    assert mesh.peers == ("127.0.0.1:7002", "127.0.0.1:7003")
    branch = parse_url(
        "tcp://0.0.0.0:7010?role=branch&root=10.0.0.1:7000&prefixes=photogrammetry.>,scan.*",
        {"heartbeat": 0.25},
    )
    assert branch.topology == "tree" and branch.parent == "10.0.0.1:7000"
    assert branch.prefixes == ("photogrammetry.>", "scan.*") and branch.heartbeat == 0.25
    assert branch.dials == (("10.0.0.1:7000", ("photogrammetry.>", "scan.*")),)
    leaf = parse_url("tcp://?role=leaf&parent=[::1]:7010", {})
    assert leaf.listen is None and leaf.parent == "[::1]:7010"
    assert parse_url("tcp://[::1]:0", {}).listen == "[::1]:0"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("tcp://127.0.0.1", "needs a port"),
        ("tcp://127.0.0.1:0?peers=nohost", "must be host:port"),
        ("tcp://127.0.0.1:0?colour=blue", "unknown option 'colour'"),
        ("tcp://127.0.0.1:0?role=branch", "needs a parent"),
        ("tcp://127.0.0.1:0?prefixes=a.>", "applies to a branch or leaf"),
        ("tcp://127.0.0.1:0?role=king", "role must be one of"),
        ("tcp://?role=root", "must listen"),
        ("tcp://127.0.0.1:0?heartbeat=soon", "not a valid float"),
        ("tcp://127.0.0.1:0?role=leaf&parent=h:1&prefixes=a..b", "empty token"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        TcpTransport(url)


# -- framing over a real socket --------------------------------------------------------


async def test_link_carries_multipart_messages_intact_and_in_order() -> None:
    connector = TcpConnector(LinkLimits(max_frames=8))
    accepted: list = []
    listener = await connector.listen("127.0.0.1:0", accepted.append)
    link = await connector.dial(listener.address, 2.0)
    await until(lambda: accepted, what="link accepted")
    server = accepted[0]
    big = bytes(range(256)) * 8192  # 2 MiB: received straight into its own buffer
    floats = array.array("d", [1.5, -2.25, 3.0])
    messages = [
        [b"one"],
        [b"", b"empty first frame"],
        [b"header", big, b"tail"],
        [memoryview(bytearray(b"a memoryview"))],
        [memoryview(floats)],  # a non-byte format is sent as its raw bytes
        *([b"small %d" % i] for i in range(500)),
    ]
    for message in messages:
        await link.send(message)
    for message in messages:
        got = await server.recv()
        assert [bytes(f) for f in got] == [bytes(f) for f in message]
    with pytest.raises(ValueError, match="1 to 8 frames"):
        await link.send([b"x"] * 9)
    link.close()
    with pytest.raises(LinkClosed, match="closed by the peer"):
        await server.recv()
    await listener.close()


async def test_publish_beyond_max_message_or_frames_raises_value_error() -> None:
    async with tcp_nodes("tcp://127.0.0.1:0", max_message=1024) as [a]:
        got = Collector()
        await a.subscribe("size.>", got)
        await a.publish("size.ok", [b"x" * 1024])
        with pytest.raises(ValueError, match="exceeds max_message 1024"):
            await a.publish("size.big", [b"x" * 1000, b"y" * 25])
        with pytest.raises(ValueError, match="at most 255 frames"):
            await a.publish("size.many", [b"x"] * 256)
        assert got.payloads == [b"x" * 1024]
    with pytest.raises(TransportClosed):
        await a.publish("size.ok", [b"late"])


def test_two_frame_messages_take_the_same_wire_form_as_any_other() -> None:
    """A header and an envelope (the common message) are framed by a shortcut: same bytes,
    same limits as the general path."""
    limits = LinkLimits(max_frame=64, max_message=100)
    pieces, size = encode_message([b"h" * 10, b"e" * 50], limits)
    general, _ = encode_message([b"h" * 10, bytearray(b"e" * 50)], limits)
    assert size == 60 and b"".join(pieces) == b"".join(bytes(p) for p in general)
    assert pieces[0] == raw_header(2, 10, 50) + b"h" * 10 + b"e" * 50
    with pytest.raises(ValueError, match="exceeds the link's max_message 100"):
        encode_message([b"h" * 60, b"e" * 60], limits)
    with pytest.raises(ValueError, match="largest frame 65"):
        encode_message([b"h", b"e" * 65], limits)
    with pytest.raises(ValueError, match="1 to 1 frames"):
        encode_message([b"h", b"e"], LinkLimits(max_frames=1))


# -- bad input on the wire -----------------------------------------------------------------

_HELLO = PREAMBLE + wire(proto.hello("raw-peer", "mesh", 4096, 1 << 24))

BAD_INPUTS = {
    "garbage bytes": (b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n", "preamble"),
    "negative length prefix": (_HELLO + raw_header(1, 0xFFFFFFFF), "exceeds max_frame"),
    "oversized length prefix": (_HELLO + raw_header(2, 8, 70_000), "exceeds max_frame 65536"),
    "two frames over max_message": (  # each small, together over the link's 1000 + MAX_HEADER
        _HELLO + raw_header(2, 40_000, 40_000) + bytes(80_000),
        f"message of 80000 bytes exceeds max_message {1000 + proto.MAX_HEADER}",
    ),
    "zero frame count": (_HELLO + raw_header(0), "bad frame count 0"),
    "huge frame count": (_HELLO + raw_header(0x7FFFFFFF), "bad frame count 2147483647"),
    "header not msgpack": (_HELLO + wire([b"\xc1\xc1 not msgpack"]), "not valid msgpack"),
    "unknown operation": (_HELLO + wire([msgpack.packb([99])]), "unknown router operation 99"),
    "bad pattern": (_HELLO + wire(proto.interest(proto.SUB, "a.>.b", None)), "bad pattern"),
    "message before hello": (PREAMBLE + wire(proto.PING_FRAMES), "expected HELLO first"),
    "wrong version": (
        PREAMBLE + wire([msgpack.packb([proto.HELLO, 99, "x", "mesh", 1, 1])]),
        "protocol version 99",
    ),
    "invalid subject": (
        _HELLO + wire([proto.msg_header("a..b", None, [], 0), b"an envelope"]),
        "invalid subject",
    ),
    "MSGS with a reply subject": (
        _HELLO + wire([msgpack.packb([proto.MSGS, "a.b", "_INBOX.x.1", [], 0]), b"e1", b"e2"]),
        "MSGS reply_to must be nil",
    ),
    "MSGS without messages": (
        _HELLO + wire([proto.msgs_header("a.b", [], 0)]),
        "MSGS carries 1 to 255 messages, got 0",
    ),
    "MSGS over the window": (  # the window counts each message of a MSGS
        _HELLO + wire([proto.msgs_header("a.b", [], 0), *[b"e"] * 9]),
        "peer overran its window: 9 messages",
    ),
}


@pytest.fixture
async def healthy_pair():
    """Node ``a`` (listening, small max_message and window) with a working peer ``b``."""
    async with tcp_nodes(
        "tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={0}", max_message=1000, window_msgs=8
    ) as (a, b):
        reports: list[BadFrame] = []
        a.on_bad_frame.append(reports.append)
        yield a, b, reports


async def assert_still_working(a: TcpTransport, b: TcpTransport) -> None:
    """The node's other link goes on, both ways."""
    at_b, at_a = Collector(), Collector()
    await b.subscribe("still.works", at_b)
    await a.subscribe("back.works", at_a)
    await a.publish("still.works", [b"to b"])
    await b.publish("back.works", [b"to a"])
    await until(lambda: at_b.payloads == [b"to b"] and at_a.payloads == [b"to a"])
    assert a.peer_ids() == [b.id]


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
async def test_bad_input_closes_only_that_link(
    case: str, healthy_pair, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, reports = healthy_pair
    data, expected = BAD_INPUTS[case]
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    raw = await RawPeer.connect(a.address)
    await raw.send(data)
    assert await raw.wait_closed(), "the node must close the bad link"
    raw.close()
    await until(lambda: reports, what="bad frame reported")
    assert expected in reports[0].reason
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(expected in message for message in errors), errors
    if case == "invalid subject":  # a complete message was involved: it is handed over
        assert reports[0].frames == (b"an envelope",) and reports[0].subject == "a..b"
    await assert_still_working(a, b)


async def test_truncated_frame_then_eof(healthy_pair, caplog: pytest.LogCaptureFixture) -> None:
    a, b, reports = healthy_pair
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    raw = await RawPeer.connect(a.address)
    await raw.send(_HELLO + raw_header(2, 10, 100) + b"x" * 10 + b"y" * 50)
    raw.sock.shutdown(socket.SHUT_WR)
    assert await raw.wait_closed()
    raw.close()
    await until(lambda: reports, what="bad frame reported")
    assert "truncated message" in reports[0].reason
    assert "frame 2 of 2: 50 of 100 bytes" in reports[0].reason
    assert any("truncated message" in r.getMessage() for r in caplog.records)
    await assert_still_working(a, b)


async def test_connection_reset_mid_frame(healthy_pair, caplog: pytest.LogCaptureFixture) -> None:
    a, b, reports = healthy_pair
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    raw = await RawPeer.connect(a.address)
    await raw.send(_HELLO + raw_header(1, 200_00) + b"z" * 5000)
    await until(lambda: len(a.peer_ids()) == 2, what="raw peer's HELLO processed")
    await asyncio.sleep(0.05)  # let the node read the partial frame before the RST
    raw.reset()
    await until(lambda: reports, what="bad frame reported")
    assert "connection reset in the middle of a message" in reports[0].reason
    assert any("connection reset" in r.getMessage() for r in caplog.records)
    await until(lambda: a.peer_ids() == [b.id], what="the reset peer is gone")
    await assert_still_working(a, b)


async def test_peer_that_stops_reading_blocks_the_sender_with_bounded_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Back-pressure, then the heartbeat gives up on the silent peer; publish fails clearly."""
    high_water, chunk = 64 * 1024, 256 * 1024
    async with tcp_nodes(
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:0?peers={0}",
        high_water=high_water,
        low_water=16 * 1024,
        heartbeat=0.3,
    ) as (a, b):
        raw = await RawPeer.connect(a.address, rcvbuf=32 * 1024)
        await raw.hello(window_msgs=1_000_000, window_bytes=1 << 40)  # credit never stops it
        await raw.subscribe("bulk.>")
        await until(lambda: a.peer_interest("raw-peer"), what="raw peer's interest known")
        link = a._peers["raw-peer"].links[0].link
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for _ in range(2000):
                await a.publish("bulk.data", [b"e" * chunk])
                sent += 1

        task = asyncio.ensure_future(flood())
        last = -1
        while sent != last:  # wait until the publisher is stuck
            last = sent
            await asyncio.sleep(0.1)
        assert not task.done(), "publish must block while the peer does not read"
        assert sent < 200, f"{sent} messages of 256 KiB left the node: nothing held it back"
        assert link.write_buffer_size() <= high_water + chunk + 1024
        with pytest.raises(TransportClosed, match=r"raw-peer.*no heartbeat"):
            await asyncio.wait_for(task, 3.0)
        raw.close()
        await assert_still_working(a, b)


# -- dialing ----------------------------------------------------------------------------------


async def test_unreachable_peer_is_redialled_until_it_appears() -> None:
    with socket.socket() as probe:  # a port nobody listens on, yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with tcp_nodes(f"tcp://127.0.0.1:0?peers=127.0.0.1:{port}", connect_timeout=0.2) as [a]:
        assert a.peer_ids() == []
        up: list[str] = []
        a.on_peer_up.append(up.append)
        async with tcp_nodes(f"tcp://127.0.0.1:{port}") as [late]:
            await until(lambda: up == [late.id], what="redialled once the peer listens")
            got = Collector()
            await late.subscribe("hello.late", got)
            await a.publish("hello.late", [b"found you"])
            await until(lambda: got.payloads == [b"found you"])


async def test_dialing_itself_is_refused_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with tcp_nodes(f"tcp://127.0.0.1:{port}?peers=127.0.0.1:{port}", connect_timeout=0.2):
        await until(lambda: any("leads back" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.2)
        refusals = [r for r in caplog.records if "leads back" in r.getMessage()]
        assert len(refusals) == 1, "a node must not keep dialing itself"


async def test_silent_connection_is_dropped_within_the_heartbeat_window(healthy_pair) -> None:
    a, b, _reports = healthy_pair
    raw = await RawPeer.connect(a.address)
    await raw.send(PREAMBLE)  # then nothing: no HELLO ever comes
    started = asyncio.get_running_loop().time()
    assert await raw.wait_closed(timeout=3.0)
    assert asyncio.get_running_loop().time() - started < a.settings.dead_after + 0.5
    raw.close()
    await assert_still_working(a, b)
