"""``nats://`` and ``nats+js://``: URL, frames, interop with plain clients, bad input, limits.

Everything runs against the shared server under a random prefix per test
(other test runs use the same server); the broker-restart tests are in
``test_nats_restart.py`` with a private server.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import msgpack
import nats
import pytest

from synaptic_mesh import (
    AgentActor,
    Node,
    NoResponders,
    PublishRefused,
    TransportClosed,
    message,
    on,
)
from synaptic_mesh.runtime import codec
from synaptic_mesh.runtime.envelope import Envelope
from synaptic_mesh.runtime.transport_lookup import transport_class
from synaptic_mesh.transports.nats import NatsTransport
from synaptic_mesh.transports.nats_frames import envelope_id, pack, unpack
from synaptic_mesh.transports.nats_groups import GuardedNatsClient
from synaptic_mesh.transports.nats_js import NatsJsTransport, consumer_name, inside
from synaptic_mesh.transports.nats_options import SubjectMap, parse_url
from tests.transports.test_nats_helpers import (
    flushed,
    fresh_prefix,
    require_shared,
    shared_host,
    until,
)


@message(name="test.nats.Note")
class Note:
    text: str
    blob: bytes = b""


class Echo(AgentActor):
    """Answers a note with its text reversed and remembers what it heard."""

    def __init__(self, heard: list[Any] | None = None) -> None:
        self.heard = heard if heard is not None else []

    @on(Note)
    async def note(self, msg: Note) -> str:
        self.heard.append(msg)
        return msg.text[::-1]

    @on(str)
    async def text(self, msg: str) -> str:
        self.heard.append(msg)
        return msg.upper()


def url(scheme: str = "nats", query: str = "") -> tuple[str, str]:
    prefix = fresh_prefix()
    return f"{scheme}://{shared_host()}?prefix={prefix}{query}", prefix


# -- URL, options, capabilities, frames (no server) -----------------------------------


def test_entry_points_and_capabilities() -> None:
    assert transport_class("nats://x:1") is NatsTransport
    assert transport_class("nats+js://x:1") is NatsJsTransport
    core, js = NatsTransport.capabilities, NatsJsTransport.capabilities
    assert core.knows_interest and core.cross_host and core.ordered
    assert core.delivery == "at-most-once" and not (core.durable or core.replay)
    assert js.delivery == "at-least-once" and js.durable and js.replay
    assert core.native == js.native == frozenset()


def test_url_credentials_tls_and_options(tmp_path: Any) -> None:
    s = parse_url("nats://alice:s%40cret@h1:4222,h2:4333?prefix=abc&buffer=1024", {})
    assert s.servers == ["nats://h1:4222", "nats://h2:4333"]
    assert (s.user, s.password, s.prefix, s.buffer) == ("alice", "s@cret", "abc", 1024)
    options = s.connect_options()
    assert options["user"] == "alice" and options["pending_size"] == 1024
    assert options["max_reconnect_attempts"] == -1
    t = parse_url("nats://tok123@h1:4222?creds=/x/user.creds", {"reconnect_wait": 0.1})
    assert t.token == "tok123" and t.reconnect_wait == 0.1
    assert t.connect_options()["user_credentials"] == "/x/user.creds"
    secure = parse_url("nats://h1:4222?tls=1&tls_hostname=nats.example", {})
    context = secure.connect_options()["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert secure.connect_options()["tls_hostname"] == "nats.example"
    assert parse_url("nats://h1", {}).servers == ["nats://h1:4222"]
    assert parse_url("nats://h?prefix=@random", {}).prefix.startswith("r")
    js = parse_url("nats+js://h:1?durable=orders.>,audit.*&stream=S&ack_wait=3", {})
    assert js.jetstream and js.durable == ["orders.>", "audit.*"] and js.ack_wait == 3.0
    with pytest.raises(ValueError, match="unknown NATS transport option"):
        parse_url("nats://h:1?bogus=1", {})
    with pytest.raises(ValueError, match="must be a number"):
        parse_url("nats://h:1?buffer=lots", {})
    with pytest.raises(ValueError, match="not a NATS URL"):
        parse_url("tcp://h:1", {})
    with pytest.raises(ValueError, match="needs \\?durable"):
        NatsJsTransport("nats+js://h:1")
    with pytest.raises(ValueError, match="literal token"):
        NatsJsTransport("nats+js://h:1?durable=>")


def test_subject_map_prefix_and_escape() -> None:
    m = SubjectMap("p1")
    assert m.wire("core.echo") == "p1.core.echo" and m.mesh("p1.core.echo") == "core.echo"
    assert m.mesh("_INBOX.abc.1") == "_WIRE._INBOX.abc.1"
    assert m.wire(m.mesh("_INBOX.abc.1")) == "_INBOX.abc.1"
    plain = SubjectMap("")
    assert plain.wire("a.b") == "a.b" == plain.mesh("a.b")


def test_frames_pack_unpack_and_envelope_id() -> None:
    env = Envelope("node-1.42", "tell", "core.echo", Note("hi", b"x" * 70_000))
    frames = codec.encode(env)
    assert len(frames) == 2
    payload, headers = pack(frames)
    assert headers == {"Mesh-Frames": f"{len(frames[0])},{len(frames[1])}"}
    back = unpack(payload, headers["Mesh-Frames"])
    assert [bytes(f) for f in back] == [bytes(f) for f in frames]
    assert pack([b"one"]) == (b"one", None)
    assert envelope_id(frames[0]) == "node-1.42"
    assert envelope_id(b"\x00garbage") is None and envelope_id(b"") is None
    with pytest.raises(ValueError, match="add up"):
        unpack(b"abc", "1,1")
    with pytest.raises(ValueError, match="not a list"):
        unpack(b"abc", "1,x")
    assert inside("orders.eu.*", "orders.>") and inside("orders.*", "orders.*")
    assert not inside("orders.>", "orders.*") and not inside("other.x", "orders.>")
    assert not inside("orders", "orders.>")
    assert consumer_name("core.echo", "core.echo").startswith("core_echo_")


async def test_unreachable_server_fails_start_with_a_clear_error(no_leaks: Any) -> None:
    from tests.transports.test_nats_helpers import free_port

    node = Node(f"nats://127.0.0.1:{free_port()}?connect_timeout=0.5&reconnect_wait=0.01")
    with pytest.raises(TransportClosed, match="cannot connect to NATS at nats://"):
        await node.start()
    await no_leaks()


# -- against the shared server ----------------------------------------------------------------


async def test_max_message_from_server_and_oversize_refused() -> None:
    require_shared()
    address, _ = url()
    async with Node(address, name="a") as a:
        transport = a.transport
        assert isinstance(transport, NatsTransport)
        assert transport.capabilities.max_message == transport.client.max_payload - 4096
        with pytest.raises(ValueError, match="exceeds max_message"):
            await transport.publish("big.one", [b"x" * (transport.client.max_payload + 1)])
        got: list[bytes] = []

        async def keep(subject: str, frames: Any, reply_to: str | None) -> None:
            got.append(bytes(frames[1]))

        await transport.subscribe("big.*", keep)
        await transport.publish("big.two", [b"head", b"y" * 1000])  # still works after refusal
        await until(lambda: got == [b"y" * 1000])


async def test_no_responders_is_immediate_from_the_server_status() -> None:
    require_shared()
    address, _ = url()
    async with Node(address, name="a") as a:
        # A generous timeout: only the server's 503 status can end the ask before it.
        with pytest.raises(NoResponders):
            await a.ask("nobody.here", Note("anyone?"), timeout=30)
        assert a.recent_dead_letters[-1][0].reason == "no responders"


async def test_attachments_cross_between_nodes(no_leaks: Any) -> None:
    require_shared()
    address, _ = url()
    heard: list[Any] = []
    async with Node(address, name="a") as a, Node(address, name="b") as b:
        await b.spawn(Echo, "core.echo", heard)
        blob = bytes(range(256)) * 400  # above the attachment threshold: its own frame
        assert await a.ask("core.echo", Note("abc", blob), timeout=5) == "cba"
        assert heard[0].blob == blob
    await no_leaks()


async def test_plain_client_talks_to_an_actor_with_documented_envelopes() -> None:
    """A nats-py client with msgpack only: an ask in, the reply out (docs/wire-format.md)."""
    require_shared()
    address, prefix = url()
    heard: list[Any] = []
    async with Node(address, name="b") as b:
        await b.spawn(Echo, "core.echo", heard)
        nc = await nats.connect(f"nats://{shared_host()}")
        try:
            inbox = await nc.subscribe(f"{prefix}.foreign.inbox.1")
            frame0 = msgpack.packb(
                [1, "py.1", "ask", None, "core.echo", "foreign.inbox.1", "c1", 1,
                 time.time() + 5, None, "", "hello", 0],
                use_bin_type=True,
            )  # fmt: skip
            await nc.publish(f"{prefix}.core.echo", frame0)
            reply = await inbox.next_msg(timeout=5)
            env = msgpack.unpackb(reply.data, raw=False)
            assert env[0] == 1 and env[2] == "reply" and env[6] == "c1"
            assert env[3] == "core.echo" and env[11] == "HELLO"
            # A NATS request (reply subject outside the prefix) is answered there too.
            frame0 = msgpack.packb(
                [1, "py.2", "tell", None, "core.echo", None, None, 1, None, None, "", "req", 0],
                use_bin_type=True,
            )
            answer = await nc.request(f"{prefix}.core.echo", frame0, timeout=5)
            assert msgpack.unpackb(answer.data, raw=False)[11] == "REQ"
            # And what a node publishes is a documented envelope for a plain subscriber.
            news = await nc.subscribe(f"{prefix}.news.today")
            await flushed(nc)  # the server has the subscription before b publishes
            await b.publish("news.today", Note("extra"))
            published = msgpack.unpackb((await news.next_msg(timeout=5)).data, raw=False)
            assert published[2] == "publish" and published[10] == "test.nats.Note"
            assert published[11]["text"] == "extra"
        finally:
            await nc.close()
        assert heard == ["hello", "req"]


async def test_garbage_from_a_foreign_publisher_is_a_dead_letter_and_the_node_goes_on() -> None:
    require_shared()
    address, prefix = url()
    async with Node(address, name="b") as b, Node(address, name="a") as a:
        await b.spawn(Echo, "core.echo")
        dead = await a.transport.subscribe("_mesh.dead", _collect(letters := []))
        nc = await nats.connect(f"nats://{shared_host()}")
        try:
            await nc.publish(f"{prefix}.core.echo", b"\x00 not msgpack")
            await nc.publish(f"{prefix}.core.echo", b"abc", headers={"Mesh-Frames": "1,5"})
            await nc.flush()
        finally:
            await nc.close()
        await until(lambda: b.stats.dead_letters >= 2)
        reasons = [d.reason for d, _ in b.recent_dead_letters]
        assert any(r.startswith("decode error") for r in reasons), reasons
        assert any("Mesh-Frames" in r for r in reasons), reasons
        assert b.transport.stats.bad_frames == 1
        await until(lambda: len(letters) >= 2)  # published on _mesh.dead for everyone
        assert await a.ask("core.echo", "still here", timeout=5) == "STILL HERE"
        await dead.unsubscribe()


def _collect(into: list[Any]) -> Any:
    async def collect(subject: str, frames: Any, reply_to: str | None) -> None:
        into.append((subject, frames))

    return collect


async def test_queue_group_members_of_one_node_share_one_server_subscription() -> None:
    require_shared()
    address, _ = url()
    async with Node(address, name="a") as a:
        transport = a.transport
        got: list[str] = []

        def member(tag: str) -> Any:
            async def handle(subject: str, frames: Any, reply_to: str | None) -> None:
                got.append(tag)

            return handle

        subs = [await transport.subscribe("work.*", member(t), queue="w") for t in "xyz"]
        assert len(transport._groups) >= 1 and transport._groups[("work.*", "w")].nats_sub
        for n in range(6):
            await transport.publish(f"work.{n}", [b"job"])
        await until(lambda: len(got) == 6)
        assert sorted(got) == sorted("xyzxyz")  # in turn: each member twice
        for sub in subs:
            await sub.unsubscribe()
        assert ("work.*", "w") not in transport._groups


async def test_own_sends_coming_back_are_dropped_as_read_while_no_member_hears_them() -> None:
    require_shared()
    address, _ = url()
    async with Node(address, name="a") as a, Node(address, name="b") as b:
        heard_b: list[tuple[str, Any]] = []
        heard_c: list[tuple[str, Any]] = []
        await b.transport.subscribe_except("room.>", _collect(heard_b), "room.b")
        mine = await a.transport.subscribe_except("room.>", _collect([]), "room.a")
        client = a.transport.client
        for n in range(5):
            await a.transport.publish("room.a", [f"a{n}".encode()])
        await a.transport.publish("room.x", [b"x"])
        await until(lambda: len(heard_b) == 6)
        await a.transport.settled()
        assert client.echoes_dropped == 5, "a's own five came back and went no further"
        # A second local member that does hear room.a: nothing is dropped any more.
        other = await a.transport.subscribe_except("room.>", _collect(heard_c), "room.c")
        await a.transport.publish("room.a", [b"a5"])
        await until(lambda: len(heard_c) == 1 and len(heard_b) == 7)
        assert heard_c == [("room.a", (b"a5",))] and client.echoes_dropped == 5
        await other.unsubscribe()  # alone again: dropped again
        await a.transport.publish("room.a", [b"a6"])
        await until(lambda: len(heard_b) == 8)
        await a.transport.settled()
        assert client.echoes_dropped == 6
        await mine.unsubscribe()
        assert client.echoes == {}


async def test_jetstream_stores_for_an_actor_that_starts_later_and_replays(no_leaks: Any) -> None:
    require_shared()
    address, _ = url("nats+js", "&durable=orders.>&delete_stream=1")
    heard: list[Any] = []
    async with Node(address, name="a") as a:
        for n in range(5):
            await a.tell("orders.book", Note(f"n{n}"))  # nobody serves it yet: stored
        async with Node(address, name="b") as b:
            await b.spawn(Echo, "orders.book", heard)
            await until(lambda: len(heard) == 5)
            assert [m.text for m in heard] == [f"n{n}" for n in range(5)]
            assert await a.ask("orders.book", Note("ab"), timeout=5) == "ba"
            replayed: list[str] = []
            transport = a.transport
            assert isinstance(transport, NatsJsTransport)
            sub = await transport.replay("orders.>", _subjects(replayed), start_seq=2)
            await until(lambda: len(replayed) == 5)
            await sub.unsubscribe()
            with pytest.raises(ValueError, match="not inside a durable pattern"):
                await transport.replay("other.>", _subjects(replayed))
    await no_leaks()


def _subjects(into: list[str]) -> Any:
    async def keep(subject: str, frames: Any, reply_to: str | None) -> None:
        into.append(subject)

    return keep


async def test_jetstream_drops_a_republished_envelope_id() -> None:
    require_shared()
    address, _ = url("nats+js", "&durable=orders.>&delete_stream=1")
    async with Node(address, name="a") as a:
        transport = a.transport
        got: list[str] = []
        await transport.subscribe("orders.*", _subjects(got), queue="keepers")
        frames = codec.encode(Envelope("fixed-id.1", "tell", "orders.x", "once"))
        for _ in range(3):
            await transport.publish("orders.x", frames)
        await transport.publish(
            "orders.x", codec.encode(Envelope("other.2", "tell", "orders.x", 2))
        )
        await until(lambda: len(got) == 2)
        await asyncio.sleep(0.2)
        assert len(got) == 2


async def test_publish_refused_is_a_mesh_error_with_the_subject() -> None:
    error = PublishRefused("core.x", "buffer full")
    assert error.subject == "core.x" and "buffer full" in str(error)


async def test_a_stream_overlapping_another_is_refused_at_start() -> None:
    require_shared()
    address, _ = url("nats+js", "&durable=orders.>&stream=FIRST_{}&delete_stream=1")
    address = address.replace("{}", address.split("prefix=")[1].split("&")[0])
    async with Node(address, name="a"):
        clash = address.replace("stream=FIRST_", "stream=SECOND_")
        with pytest.raises(TransportClosed, match="cannot create stream SECOND_"):
            await Node(clash, name="b").start()


# -- foreign input: each bad message refused, the next one served ---------------------------------


async def _raw_publish(command: bytes) -> None:
    """Send one protocol command (``PUB``/``HPUB`` line and payload) as a foreign client."""
    host, _, port = shared_host().split(",")[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host.rpartition("@")[2], int(port))
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
        writer.write(command + b"PING\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


def _hpub(subject: str, header: bytes, payload: bytes) -> bytes:
    total = len(header) + len(payload)
    return f"HPUB {subject} {len(header)} {total}\r\n".encode() + header + payload + b"\r\n"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (lambda s: f"PUB {s}.x _R.".encode() + b"\xff\xfe 3\r\nabc\r\n", "UnicodeDecodeError"),
        (lambda s: f"PUB {s}.".encode() + b"\xff\xfe 3\r\nabc\r\n", "UnicodeDecodeError"),
        (lambda s: _hpub(f"{s}.x", b"NATS/1.0 \xff\xfe\xfd\r\n\r\n", b"abc"), "UnicodeDecode"),
        (lambda s: _hpub(f"{s}.x", b"NATS/1.0", b"abc"), "IndexError"),
        (lambda s: _hpub(f"{s}.x", b"NATS/1.0 404 Nope\r\n\r\n", b""), "NATS status '404'"),
    ],
    ids=["reply-not-utf8", "subject-not-utf8", "status-not-utf8", "header-cut-short", "status"],
)
async def test_a_message_nats_py_cannot_read_is_a_dead_letter_and_the_reader_goes_on(
    command: Any, reason: str
) -> None:
    # nats-py reads these in its connection's read loop, where an exception would end the
    # loop and leave every subscription of the node deaf while the connection looks up.
    require_shared()
    address, prefix = url()
    async with Node(address, name="b") as b, Node(address, name="a") as a:
        await b.spawn(Echo, "core.echo")
        heard: list[Any] = []
        await b.transport.subscribe("foreign.*", _collect(heard))
        await _raw_publish(command(f"{prefix}.foreign"))
        await a.transport.publish("foreign.ok", [b"next"])
        await until(lambda: len(heard) == 1)
        assert heard == [("foreign.ok", (b"next",))]
        letters = [d.reason for d, _ in b.recent_dead_letters]
        assert len(letters) == 1 and reason in letters[0], letters
        assert b.transport.stats.bad_frames == 1
        assert await a.ask("core.echo", "still here", timeout=5) == "STILL HERE"


@pytest.mark.parametrize(
    "lengths", ["1,\u00b2", "3" * 5000], ids=["superscript-two", "5000-digits"]
)
async def test_frame_lengths_int_cannot_read_are_a_dead_letter(lengths: str) -> None:
    # str.isdigit() takes "²" and a 5000-digit number, which int() then refuses.
    require_shared()
    address, prefix = url()
    async with Node(address, name="b") as b, Node(address, name="a") as a:
        await b.spawn(Echo, "core.echo")
        nc = await nats.connect(f"nats://{shared_host()}")
        try:
            await nc.publish(f"{prefix}.core.echo", b"abc", headers={"Mesh-Frames": lengths})
            await nc.flush()
        finally:
            await nc.close()
        await until(lambda: b.transport.stats.bad_frames == 1)
        (letter,) = [d.reason for d, _ in b.recent_dead_letters]
        assert "is not a list of lengths" in letter, letter
        assert await a.ask("core.echo", "still here", timeout=5) == "STILL HERE"


async def test_foreign_messages_on_stream_subscriptions_are_never_lost_silently() -> None:
    require_shared()
    address, prefix = url("nats+js", "&durable=orders.>&delete_stream=1")
    transport = NatsJsTransport(address)
    await transport.start()
    reports: list[Any] = []
    transport.on_bad_frame.append(reports.append)
    consumed: list[Any] = []
    replayed: list[Any] = []
    try:
        sub = await transport.subscribe("orders.new", _collect(consumed), queue="orders.new")
        again = await transport.replay("orders.>", _collect(replayed))
        nc = await nats.connect(f"nats://{shared_host()}")
        try:
            wire = f"{prefix}.orders.new"
            await nc.publish(wire, b"abc", headers={"Mesh-Frames": "1,\u00b2"})  # stored
            await nc.publish(wire, b"first")
            await nc.flush()
            await until(lambda: len(consumed) == 1 and len(replayed) == 1)
            refused = "Mesh-Frames value '1,²' is not a list of lengths"
            assert [r.reason for r in reports] == [refused, refused]  # consumer and replay
            # Published on the consumers' own deliver subjects, with no JetStream reply:
            await nc.publish(sub.nats_sub._sub.subject, b"not from the stream")
            await nc.publish(again.nats_sub._sub.subject, b"not from the stream", reply="x")
            await nc.publish(wire, b"second")
            await nc.flush()
            await until(lambda: len(consumed) == 3 and len(replayed) == 2)
        finally:
            await nc.close()
        assert [f[0] for _, f in consumed] == [b"first", b"not from the stream", b"second"]
        assert [f[0] for _, f in replayed] == [b"first", b"second"]
        assert "NotJSMessageError" in reports[2].reason and len(reports) == 3
    finally:
        await transport.close()


async def test_flush_waits_for_the_commands_sent_before_it() -> None:
    """``flush`` is how a spawn knows its subscription is on the server: its PING must
    leave after the SUB still waiting in the client's buffer, not overtake it (nats-py
    2.16 wrote it straight to the socket, and an ask right after a remote spawn now and
    then met "no responders")."""
    require_shared()
    nc = GuardedNatsClient(lambda subject, payload, error: None)
    await nc.connect(f"nats://{shared_host()}")
    try:
        written: list[bytes] = []
        transport = nc._transport
        write, writelines = transport.write, transport.writelines

        def record(payload: bytes) -> None:
            written.append(bytes(payload))
            write(payload)

        def record_lines(payloads: list[bytes]) -> None:
            written.extend(bytes(p) for p in payloads)
            writelines(payloads)

        transport.write, transport.writelines = record, record_lines
        await nc.subscribe(f"{fresh_prefix()}.confirmed")
        await nc.flush(timeout=5)
        wire = b"".join(written)
        assert wire.index(b"SUB ") < wire.index(b"PING\r\n"), wire
    finally:
        await nc.close()
