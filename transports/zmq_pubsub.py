"""``zmq+pubsub://host:port``: a broker transport through a ZeroMQ XPUB-XSUB proxy.

Every node connects an XPUB socket (publishing) to the proxy's XSUB at
``port`` and a SUB socket (receiving) to the proxy's XPUB at ``port + 1``
(:mod:`~synaptic_mesh.transports.zmq_proxy`). The proxy runs on its own
(``synaptic-mesh proxy zmq+pubsub://HOST:PORT``) or inside a node whose URL
says ``?proxy=1`` (port 0 then picks two free adjacent ports; read the
address back from ``transport.address``).

URL: ``zmq+pubsub://HOST:PORT[?proxy=1&connect_timeout=2&flush_timeout=3&max_message=N]``;
keyword options override query parameters; ``node_id`` names this node on the wire.

**Interest as ZeroMQ subscriptions.** Each message is a multipart
``[topic + meta, *frames]``: frame 0 is the topic (what ZeroMQ matches
prefixes against; it ends with a NUL) followed by ``meta``, msgpack
``[subject, reply_to, publisher id, seq]``, so a message costs libzmq one
frame more than its own. A subscription on a pattern subscribes the SUB socket to

* ``\\x01`` + the pattern's literal tokens (``tot.*.x`` -> ``\\x01tot.``; a
  literal pattern ``a.b`` -> ``\\x01a.b\\x00``): the ZeroMQ prefix that makes the
  proxy forward plain messages (topic ``\\x01`` + subject + ``\\x00``); the exact
  pattern is then applied locally; and
* ``\\x03`` + the pattern: an announcement no message ever matches, so every
  publisher learns the exact pattern (``knows_interest``).

**Queue groups** give each message to exactly one member: a member subscribes
to its own topic ``\\x02 queue \\x00 pattern \\x00 member-id \\x00``. Publishers'
XPUB sockets (``XPUB_VERBOSE``) see every subscription, forwarded by the
proxy (``XPUB_VERBOSER``), so each publisher knows the members of each group
and their patterns; it picks one member round-robin and publishes a copy on
that member's topic only. Members on several nodes share one group.

**Local delivery.** This node's own subscribers get its messages at once,
in the publishing task (a queue member chosen here is served here); the
copy the proxy forwards back to this node is skipped on arrival.

**Knowing interest.** ``subscribe`` returns once this node's own XPUB has seen
its subscription come back from the proxy: the proxy then filters for it and
has forwarded it to every publisher. A publish with ``reply_to`` that matches
nothing this node knows first runs a barrier (a probe subscription through
the proxy; what the proxy forwarded before it has then arrived here) and
only then publishes the "no responders" status. A queue-group publish with no
member known runs the same barrier before it gives up.

**Losses are at-most-once, and counted** (``transport.stats``): the
publisher's XPUB has ``XPUB_NODROP`` (``publish`` waits at the high-water
mark instead of dropping), but the proxy drops for a subscriber more than
``PROXY_HWM`` messages behind (a slow handler stops this node's reading).
Every message carries a sequence number per publisher and topic; a receiver
counts each gap (``stats.gaps``) and logs it. Not detectable: losses at the
end of a stream (no later message shows the gap), losses on a topic before
the first message this node received on it (messages published while the
proxy is unreachable are queued, counted in ``stats.unconnected``, and show as
gaps if they are lost and a later message arrives; a publish that waits for
an unreachable proxy behind a full queue raises ``ConnectionError`` after
``connect_timeout``), and
queue-group messages for a member that just left (``stats.orphaned`` counts
those that reached its node). Bad input (a foreign publisher's non-envelope
frames) is reported through ``on_bad_frame`` (the node dead-letters it) and
counted in ``stats.bad_frames``.

Capabilities: ordered (per publisher and topic, through the proxy's FIFO
pipes), at-most-once, not durable, cross-host, zero-copy receives for large
frames, ``knows_interest`` (as above), native ``pub-sub`` (the SPI here *is*
ZeroMQ pub-sub; the lowering adds nothing on top). ``on_peer_down`` exists
for the node's hooks and never fires: a broker transport has no peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import msgpack
import zmq
from zmq.utils.monitor import parse_monitor_message

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.runtime.subjects import (
    FULL_WILDCARD,
    SINGLE_WILDCARD,
    InvalidSubject,
    SubjectTable,
    validate_pattern,
    validate_subject,
)
from synaptic_mesh.transports.base import (
    NO_RESPONDERS,
    BadFrame,
    Capabilities,
    Frame,
    Handler,
    HandlerSubscription,
    LinkProtocolError,
    Subscription,
    Transport,
)
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.zmq_io import SocketIO
from synaptic_mesh.transports.zmq_link import LINGER_MS, check_outgoing, incoming
from synaptic_mesh.transports.zmq_proxy import Proxy

log = logging.getLogger("synaptic_mesh.zmq.pubsub")

PLAIN, MEMBER, ANNOUNCE, PROBE = 1, 2, 3, 5
"""First byte of a topic: plain message, queue member, pattern announcement, barrier probe."""
HWM = 10_000
"""High-water mark (messages) of the node's XPUB and SUB sockets."""
RECV_QUEUE = 1000
"""Messages read ahead of the handlers before the node stops reading its SUB socket."""
MAX_FRAMES = 255
SEND_RETRY = 0.0005
SEND_RETRY_MAX = 0.02
"""First and longest pause of a publish waiting at the high-water mark, in seconds."""
DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024
TRACKED = 100_000
"""Sequence counters kept per side before they are reset (a reset never reads as a gap)."""
_OPTIONS = ("proxy", "connect_timeout", "flush_timeout", "max_message", "node_id")


@dataclasses.dataclass
class PubSubStats:
    """Counters of one ``zmq+pubsub`` transport (see the module docstring for what each misses)."""

    published: int = 0
    delivered: int = 0
    gaps: int = 0
    """Messages found missing by a sequence gap: the proxy dropped them for this node."""
    orphaned: int = 0
    """Queue-group messages that reached this node for a member that had left."""
    unconnected: int = 0
    """Messages published while the proxy was unreachable: queued (up to the high-water
    mark) and sent when it is back, but lost if no subscriber has rejoined by then."""
    bad_frames: int = 0
    waits: int = 0
    """Times a publish waited because the proxy was a high-water mark behind (nothing lost)."""


def plain_topic(subject: str) -> bytes:
    return b"\x01" + subject.encode() + b"\x00"


def plain_prefix(pattern: str) -> bytes:
    """The ZeroMQ prefix that covers every subject ``pattern`` matches."""
    tokens = pattern.split(".")
    literal: list[str] = []
    for token in tokens:
        if token in (SINGLE_WILDCARD, FULL_WILDCARD):
            return b"\x01" + "".join(t + "." for t in literal).encode()
        literal.append(token)
    return plain_topic(pattern)


def member_topic(queue: str, pattern: str, member: str) -> bytes:
    return b"\x02" + f"{queue}\x00{pattern}\x00{member}\x00".encode()


def split_head(head: bytes) -> tuple[bytes, bytes]:
    """Frame 0 -> ``(topic, meta)``: a topic ends at its first (plain) or third (member) NUL."""
    end = -1
    for _ in range(3 if head[:1] == b"\x02" else 1):
        end = head.find(b"\x00", end + 1)
        if end < 0:
            raise LinkProtocolError(f"frame 0 holds no complete topic ({head[:24]!r})")
    return head[: end + 1], head[end + 1 :]


@dataclasses.dataclass(frozen=True)
class PubSubSettings:
    host: str
    port: int
    proxy: bool = False
    connect_timeout: float = 2.0
    flush_timeout: float = 3.0
    max_message: int = DEFAULT_MAX_MESSAGE
    node_id: str = ""


def parse_url(url: str, options: dict[str, Any]) -> PubSubSettings:
    """Settings from a ``zmq+pubsub://HOST:PORT?...`` URL, keyword ``options`` winning."""
    parts = urlsplit(url)
    if parts.scheme != "zmq+pubsub":
        raise ValueError(f"not a zmq+pubsub URL: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if not parts.hostname or port is None:
        raise ValueError(f"{url!r} needs host:port (the proxy's XSUB port; XPUB is port + 1)")
    values: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    values.update(options)
    for key in values:
        if key not in _OPTIONS:
            raise ValueError(f"unknown option {key!r}; known: {', '.join(_OPTIONS)}")
    try:
        settings = PubSubSettings(
            host=parts.hostname,
            port=port,
            proxy=str(values.get("proxy", "0")).lower() in ("1", "true", "yes"),
            connect_timeout=float(values.get("connect_timeout", 2.0)),
            flush_timeout=float(values.get("flush_timeout", 3.0)),
            max_message=int(values.get("max_message", DEFAULT_MAX_MESSAGE)),
            node_id=str(values.get("node_id") or ""),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad option in {url!r}: {exc}") from None
    if port == 0 and not settings.proxy:
        raise ValueError(f"{url!r}: port 0 only with proxy=1 (a node must find its proxy)")
    if settings.max_message < 1 or settings.connect_timeout < 0 or settings.flush_timeout < 0:
        raise ValueError(f"{url!r}: max_message must be positive and timeouts >= 0")
    return settings


class ZmqPubSubLowering:
    """Native pub-sub: the transport's publish and subscribe are ZeroMQ pub-sub already."""

    def publish(self, node: Any, topic: str, message: Any, *, sender: str | None) -> Any:
        return node.publish(topic, message, sender=sender)

    async def subscribe(
        self, node: Any, pattern: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        return await node.transport.subscribe(pattern, handler, queue)


class ZmqPubSubTransport(Transport):
    """Publish/subscribe through an XPUB-XSUB proxy (see module docstring)."""

    scheme: ClassVar[str] = "zmq+pubsub"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=True,
        zero_copy=True,
        max_message=DEFAULT_MAX_MESSAGE,
        native=frozenset({"pub-sub"}),
        by_reference=False,
        knows_interest=True,
    )

    def __init__(self, url: str = "zmq+pubsub://127.0.0.1:0?proxy=1", **options: Any) -> None:
        super().__init__(url, **options)
        self.settings = parse_url(url, options)
        if self.settings.max_message != DEFAULT_MAX_MESSAGE:
            self.capabilities = dataclasses.replace(  # type: ignore[misc]
                type(self).capabilities, max_message=self.settings.max_message
            )
        self.id = (
            self.settings.node_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        )
        self.stats = PubSubStats()
        self.on_peer_down: list[Callable[[str, str], Any]] = []
        self.on_bad_frame: list[Callable[[BadFrame], Any]] = []
        self.address: str | None = None
        self.proxy: Proxy | None = None
        self._limits = LinkLimits(
            max_frame=self.settings.max_message,
            max_message=self.settings.max_message,
            max_frames=MAX_FRAMES + 1,
        )
        self._state = "new"
        self._ctx: zmq.Context[Any] | None = None
        self._pub: SocketIO | None = None
        self._watch: SocketIO | None = None
        self._sub: SocketIO | None = None
        self._inbox: deque[list[zmq.Frame]] = deque()
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._connected = False
        self._proxy_seen: asyncio.Event | None = None
        # what this node subscribed
        self._local: SubjectTable[HandlerSubscription] = SubjectTable()
        self._members: dict[bytes, HandlerSubscription] = {}
        self._topic_of: dict[HandlerSubscription, list[bytes]] = {}
        self._refs: dict[bytes, int] = {}
        self._seen: dict[bytes, asyncio.Future[None]] = {}
        # what the mesh subscribed, as this node's XPUB learned it
        self._interest: SubjectTable[Any] = SubjectTable()
        self._patterns: set[str] = set()
        self._known_members: set[bytes] = set()
        self._turns: dict[str, int] = {}
        # sequence numbers: sent per topic, last received per (publisher, topic)
        self._seq: dict[bytes, int] = {}
        self._last: dict[tuple[str, bytes], int] = {}
        self._valid: set[str] = set()
        self._delivering = False
        self._idle = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the proxy if asked, connect, and wait (``connect_timeout``) for the proxy.

        Raises ``ConnectionError`` when no proxy answers in that time.
        """
        if self._state == "running":
            return
        if self._state != "new":
            raise TransportClosed(f"transport {self.url} was closed; open a new one")
        self._state = "running"
        s = self.settings
        try:
            port = s.port
            if s.proxy:
                self.proxy = Proxy(s.host, s.port)
                self.proxy.start()
                port = self.proxy.port
            host = f"[{s.host}]" if ":" in s.host else s.host
            self.address = f"{host}:{port}"
            self._ctx = zmq.Context()
            self._proxy_seen = asyncio.Event()
            pub = self._socket(zmq.XPUB)
            pub.setsockopt(zmq.XPUB_VERBOSE, 1)
            pub.setsockopt(zmq.XPUB_NODROP, 1)
            self._pub = SocketIO(pub, self._on_interest)
            self._watch = SocketIO(
                pub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED),
                self._on_proxy_event,
            )
            pub.connect(f"tcp://{host}:{port}")
            sub = self._socket(zmq.SUB)
            self._sub = SocketIO(sub, self._on_message)
            sub.connect(f"tcp://{host}:{port + 1}")
            self._tasks = [asyncio.get_running_loop().create_task(self._read())]
            try:
                async with asyncio.timeout(s.connect_timeout or None):
                    await self._proxy_seen.wait()
                    await self._barrier(None)
            except TimeoutError:
                raise ConnectionError(
                    f"no zmq+pubsub proxy answered at {self.address} (XSUB port {port}, "
                    f"XPUB port {port + 1}) within {s.connect_timeout} s; start one with "
                    f"'synaptic-mesh proxy zmq+pubsub://{self.address}' or add ?proxy=1"
                ) from None
        except BaseException:
            await self._shutdown()
            raise

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        assert self._ctx is not None
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        # data waits (XPUB) or is dropped by the proxy (SUB) beyond HWM messages;
        # subscriptions, the other direction, are never limited
        sock.setsockopt(zmq.SNDHWM, HWM if kind == zmq.XPUB else 0)
        sock.setsockopt(zmq.RCVHWM, HWM if kind == zmq.SUB else 0)
        if ":" in self.settings.host:
            sock.setsockopt(zmq.IPV6, 1)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message)
        return sock

    async def close(self) -> None:
        """Let the delivery in progress finish (1 s at most), then close every socket."""
        if self._state in ("closing", "closed"):
            while self._state != "closed":
                await asyncio.sleep(0.001)
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        if self._delivering:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 1.0)
        await self._shutdown()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for future in self._seen.values():
            if not future.done():
                future.cancel()
        self._seen.clear()
        for sub in list(self._topic_of):
            sub.active = False
        self._topic_of.clear()
        self._members.clear()
        self._local.clear()
        if self._watch is not None and self._pub is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._pub.sock.disable_monitor()
            self._watch.close(0)
        for io in (self._pub, self._sub):
            if io is not None:
                io.close()
        self._pub = self._sub = self._watch = None
        self._inbox.clear()
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.term()  # sockets linger LINGER_MS at most
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy.close()
        self._state = "closed"

    def _check_open(self) -> None:
        if self._state != "running":
            raise TransportClosed(f"transport {self.url} is {self._state}, not running")

    def native_lowering(self, pattern: str) -> object | None:
        return ZmqPubSubLowering() if pattern == "pub-sub" else None

    # -- publish ----------------------------------------------------------------------

    async def publish(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> None:
        self._check_open()
        if len(frames) > MAX_FRAMES:
            raise ValueError(f"a message has at most {MAX_FRAMES} frames, got {len(frames)}")
        parts = check_outgoing(frames, self._limits) if frames else []
        if subject not in self._valid:
            validate_subject(subject)
            if len(self._valid) > TRACKED:
                self._valid.clear()
            self._valid.add(subject)
        match = self._interest.match(subject)
        if not match and reply_to is not None and frames:
            await self._barrier(subject)
            match = self._interest.match(subject)
            if not match:
                await self.publish(reply_to, NO_RESPONDERS)
                return
        local: list[HandlerSubscription] = list(self._local.match(subject).plain)
        if match.plain or not match.groups:
            await self._send(plain_topic(subject), subject, reply_to, parts)
        for queue, members in zip(match.queues, match.groups, strict=True):
            turn = self._turns.get(queue, 0)
            self._turns[queue] = turn + 1
            chosen = members[turn % len(members)]
            member = self._members.get(chosen)
            if member is not None:
                local.append(member)
            else:
                await self._send(chosen, subject, reply_to, parts)
        if len(self._turns) > TRACKED:
            self._turns.clear()
        # This node's own subscribers get the message here, at once (as in process),
        # not back through the proxy: the copy the proxy echoes is skipped on arrival.
        for sub in local:
            if sub.active:
                self.stats.delivered += 1
                try:
                    await sub.handler(subject, frames, reply_to)
                except Exception:
                    log.exception("%s: handler of %s failed on %s", self.id, sub.pattern, subject)

    async def _send(
        self, topic: bytes, subject: str, reply_to: str | None, parts: Sequence[Any]
    ) -> None:
        pub = self._pub
        if pub is None:
            raise TransportClosed(f"transport {self.url} is {self._state}, not running")
        seq = self._seq.get(topic, 0) + 1
        if seq == 1 and len(self._seq) > TRACKED:
            self._seq.clear()
        self._seq[topic] = seq
        meta = msgpack.packb([subject, reply_to, self.id, seq])
        if not self._connected:
            self.stats.unconnected += 1
        self.stats.published += 1
        message = [topic + meta, *parts]
        delay = SEND_RETRY
        waited = 0.0
        while True:
            # XPUB_NODROP answers EAGAIN at the high-water mark, even while the socket
            # reports POLLOUT (another pipe has room), so waiting is a paced retry.
            try:
                pub.send_nowait(message)
                return
            except zmq.Again:
                self.stats.waits += 1
            except zmq.ZMQError as exc:
                raise TransportClosed(f"transport {self.url}: send failed: {exc}") from None
            if not self._connected:
                waited += delay
                if waited > self.settings.connect_timeout:
                    raise ConnectionError(
                        f"the zmq+pubsub proxy at {self.address} is unreachable and "
                        f"{HWM} messages already wait for it; {subject!r} was not sent"
                    )
            await asyncio.sleep(delay)
            delay = min(delay * 2, SEND_RETRY_MAX)
            if pub.sock.closed:
                raise TransportClosed(f"transport {self.url} closed while sending")

    async def _barrier(self, subject: str | None) -> None:
        """Wait until what the proxy forwarded before now has reached this node's XPUB."""
        topic = bytes([PROBE]) + os.urandom(8)
        future = self._seen[topic] = asyncio.get_running_loop().create_future()
        self._subscription(zmq.SUBSCRIBE, topic)
        try:
            await asyncio.wait_for(future, self.settings.flush_timeout)
        except TimeoutError:
            if subject is not None:
                log.warning(
                    "%s: proxy barrier timed out before the verdict on %s", self.id, subject
                )
            else:
                raise
        finally:
            self._seen.pop(topic, None)
            self._subscription(zmq.UNSUBSCRIBE, topic)

    # -- subscribe ---------------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        """Subscribe; returns once the proxy has this node's subscription (``flush_timeout``)."""
        self._check_open()
        validate_pattern(pattern)
        sub = HandlerSubscription(self, pattern, handler, queue)
        if queue is None:
            self._local.add(pattern, sub)
            topics = [plain_prefix(pattern), bytes([ANNOUNCE]) + pattern.encode()]
        else:
            SubjectTable().add(pattern, None, queue)  # validates the queue name
            topic = member_topic(queue, pattern, os.urandom(6).hex())
            self._members[topic] = sub
            topics = [topic]
        self._topic_of[sub] = topics
        waits = [self._add_topic(t) for t in topics]
        pending = [w for w in waits if w is not None and not w.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.settings.flush_timeout)
            if late:
                log.warning("%s: the proxy did not confirm %s in time", self.id, pattern)
        return sub

    def _add_topic(self, topic: bytes) -> asyncio.Future[None] | None:
        count = self._refs.get(topic, 0)
        self._refs[topic] = count + 1
        if count:
            return self._seen.get(topic)
        assert self._sub is not None
        future = None
        if topic[0] != PLAIN:  # announcements and members come back through the XPUB
            future = self._seen[topic] = asyncio.get_running_loop().create_future()
        self._subscription(zmq.SUBSCRIBE, topic)
        return future

    def _forget(self, sub: HandlerSubscription) -> None:
        topics = self._topic_of.pop(sub, None)
        if topics is None:
            return
        if sub.queue is None:
            self._local.remove(sub.pattern, sub)
        else:
            self._members.pop(topics[0], None)
        for topic in topics:
            count = self._refs.get(topic, 0) - 1
            if count > 0:
                self._refs[topic] = count
                continue
            self._refs.pop(topic, None)
            self._seen.pop(topic, None)
            self._subscription(zmq.UNSUBSCRIBE, topic)
            for key in [k for k in self._last if k[1].startswith(topic)]:
                del self._last[key]

    # -- what the mesh wants (this node's XPUB) ----------------------------------------

    def _subscription(self, option: int, topic: bytes) -> None:
        """(Un)subscribe the SUB socket; a socket option may eat an edge of its FD."""
        sub = self._sub
        if sub is not None and not sub.sock.closed:
            sub.sock.setsockopt(option, topic)
            sub.kick()
            if self._pub is not None:
                self._pub.kick()

    def _on_interest(self, parts: list[zmq.Frame]) -> None:
        message = parts[0].bytes
        if message:
            self._interest_changed(message[0] == 1, message[1:])

    def _on_proxy_event(self, parts: list[zmq.Frame]) -> None:
        """Follow the XPUB's connection: publishes while it is down are counted."""
        event = parse_monitor_message([p.bytes for p in parts])["event"]
        up = event == zmq.EVENT_HANDSHAKE_SUCCEEDED
        if up != self._connected:
            log.log(
                logging.INFO if up else logging.WARNING,
                "%s: proxy %s %s",
                self.id,
                self.address,
                "connected" if up else "unreachable; publishes queue until it is back",
            )
        self._connected = up
        if not up:  # a restarted proxy forwards every live subscription anew
            self._interest.clear()
            self._patterns.clear()
            self._known_members.clear()

    def _interest_changed(self, on: bool, topic: bytes) -> None:
        if not topic:  # the proxy's own subscription to everything: it is there
            if on and self._proxy_seen is not None:
                self._proxy_seen.set()
            return
        kind = topic[0]
        try:
            if kind == ANNOUNCE:
                pattern = validate_pattern(topic[1:].decode())
                if on and pattern not in self._patterns:
                    self._patterns.add(pattern)
                    self._interest.add(pattern, pattern)
                elif not on and pattern in self._patterns:
                    self._patterns.discard(pattern)
                    self._interest.remove(pattern, pattern)
            elif kind == MEMBER:
                queue, pattern, _member = topic[1:-1].decode().split("\x00")
                if on and topic not in self._known_members:
                    self._interest.add(validate_pattern(pattern), topic, queue)
                    self._known_members.add(topic)
                elif not on and topic in self._known_members:
                    self._known_members.discard(topic)
                    self._interest.remove(pattern, topic, queue)
        except (ValueError, UnicodeDecodeError) as exc:
            log.debug("%s: ignoring a foreign subscription %r: %s", self.id, topic[:64], exc)
            return
        if on:
            future = self._seen.get(topic)
            if future is not None and not future.done():
                future.set_result(None)

    # -- receiving -----------------------------------------------------------------------

    def _on_message(self, parts: list[zmq.Frame]) -> None:
        self._inbox.append(parts)
        self._arrived.set()
        if len(self._inbox) >= RECV_QUEUE and self._sub is not None:
            self._sub.pause()  # the SUB's high-water mark then fills; the proxy drops

    async def _read(self) -> None:
        inbox = self._inbox
        with contextlib.suppress(asyncio.CancelledError):
            while self._state == "running":
                if not inbox:
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                parts = inbox.popleft()
                sub = self._sub
                if sub is not None and sub.paused and len(inbox) <= RECV_QUEUE // 2:
                    sub.resume()
                self._delivering = True
                self._idle.clear()
                try:
                    await self._dispatch(parts)
                except Exception:  # a bug, not the peer's fault: keep receiving
                    log.exception("%s: delivering a message failed", self.id)
                finally:
                    self._delivering = False
                    self._idle.set()
                del parts

    async def _dispatch(self, parts: list[zmq.Frame]) -> None:
        head = parts[0].bytes
        topic = head
        try:
            topic, packed = split_head(head)
            try:
                subject, reply_to, publisher, seq = msgpack.unpackb(packed)[:4]
            except Exception:
                raise LinkProtocolError(
                    "frame 0 has no msgpack meta [subject, reply_to, publisher, seq] "
                    "after its topic"
                ) from None
            if not (
                isinstance(subject, str)
                and isinstance(publisher, str)
                and isinstance(seq, int)
                and (reply_to is None or isinstance(reply_to, str))
            ):
                raise LinkProtocolError("the meta frame has fields of the wrong type")
            frames = incoming(parts[1:], self._limits)
        except LinkProtocolError as exc:
            self._bad(str(exc), topic, parts)
            return
        if publisher == self.id:
            return  # delivered here when it was published
        self._count_gap(publisher, topic, seq)
        if topic[0] == MEMBER:
            member = self._members.get(topic)
            if member is None or not member.active:
                self.stats.orphaned += 1
                return
            targets: Sequence[HandlerSubscription] = (member,)
        else:
            if topic != plain_topic(subject):
                self._bad(f"subject {subject!r} does not match its topic", topic, parts)
                return
            try:
                validate_subject(subject)
            except InvalidSubject as exc:
                self._bad(f"invalid subject: {exc}", topic, parts)
                return
            targets = self._local.match(subject).plain
        for target in targets:
            if target.active:
                self.stats.delivered += 1
                try:
                    await target.handler(subject, frames, reply_to)
                except Exception:
                    log.exception(
                        "%s: handler of %s failed on %s", self.id, target.pattern, subject
                    )

    def _count_gap(self, publisher: str, topic: bytes, seq: int) -> None:
        key = (publisher, topic)
        last = self._last.get(key)
        if last is None and len(self._last) > TRACKED:
            self._last.clear()
        self._last[key] = seq
        if last is not None and seq > last + 1:
            lost = seq - last - 1
            self.stats.gaps += lost
            log.warning(
                "%s: %d message(s) from %s on %r lost between the proxy and this node "
                "(its high-water mark: this node reads too slowly)",
                self.id,
                lost,
                publisher,
                topic[1:].split(b"\x00")[0].decode(errors="replace"),
            )

    def _bad(self, reason: str, topic: bytes, parts: list[zmq.Frame]) -> None:
        self.stats.bad_frames += 1
        log.error("%s: refused a message from the proxy %s: %s", self.id, self.address, reason)
        preview = topic[:32].hex()
        frames = tuple(p.bytes for p in parts[1:])
        report = BadFrame(f"zmq+pubsub proxy {self.address}", reason, None, frames, preview)
        for hook in list(self.on_bad_frame):
            try:
                hook(report)
            except Exception:
                log.exception("%s: on_bad_frame hook failed", self.id)
