"""``zmq+pubsub://host:port``: a broker transport through a ZeroMQ XPUB-XSUB proxy.

Every node connects an XPUB socket (publishing) to the proxy's XSUB at
``port`` and a SUB socket (receiving) to the proxy's XPUB at ``port + 1``
(:mod:`~synaptic_mesh.transports.zmq_proxy`). The proxy runs on its own
(``synaptic-mesh proxy zmq+pubsub://HOST:PORT``) or inside a node whose URL
says ``?proxy=1`` (port 0 then picks two free adjacent ports; read the
address back from ``transport.address``).

URL: ``zmq+pubsub://HOST:PORT[?proxy=1&connect_timeout=2&flush_timeout=3&max_message=N]``;
keyword options override query parameters; ``node_id`` names this node on the wire
(:mod:`~synaptic_mesh.transports.zmq_pubsub_options`).

This module holds the transport's lifecycle and publishing; the rest is in

* :mod:`~synaptic_mesh.transports.zmq_pubsub_wire`: each message is a multipart
  ``[topic + meta, *frames]``, the topic being what ZeroMQ matches prefixes against;
* :mod:`~synaptic_mesh.transports.zmq_pubsub_interest`: interest as ZeroMQ
  subscriptions, queue groups (a publisher picks one member round-robin from
  the subscriptions its XPUB sees) and knowing interest (``subscribe`` returns
  once the proxy has the subscription; a barrier before "no responders");
* :mod:`~synaptic_mesh.transports.zmq_pubsub_receive`: from the SUB socket to
  the handlers;
* :mod:`~synaptic_mesh.transports.zmq_pubsub_stats`: losses are at-most-once,
  and counted (``transport.stats``), with what the counters cannot see.

**Local delivery.** This node's own subscribers get its messages at once,
in the publishing task (a queue member chosen here is served here); the
copy the proxy forwards back to this node is skipped on arrival.

Capabilities: ordered (per publisher and topic, through the proxy's FIFO
pipes), at-most-once, not durable, cross-host, zero-copy receives for large
frames, ``knows_interest`` (as above), native ``pub-sub`` (the SPI here *is*
ZeroMQ pub-sub; the lowering adds nothing on top). ``on_peer_down`` exists
for the node's hooks and never fires: a broker transport has no peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import zmq

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.runtime.subjects import SubjectTable, validate_subject
from synaptic_mesh.transports.base import (
    NO_RESPONDERS,
    BadFrame,
    Capabilities,
    Frame,
    Handler,
    HandlerSubscription,
    Subscription,
    Transport,
)
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.zmq_io import SocketIO
from synaptic_mesh.transports.zmq_link import LINGER_MS, check_outgoing
from synaptic_mesh.transports.zmq_proxy import Proxy
from synaptic_mesh.transports.zmq_pubsub_interest import PubSubInterest
from synaptic_mesh.transports.zmq_pubsub_options import (
    DEFAULT_MAX_MESSAGE,
    PubSubSettings,
    parse_url,
)
from synaptic_mesh.transports.zmq_pubsub_receive import RECV_QUEUE, PubSubReceive
from synaptic_mesh.transports.zmq_pubsub_stats import TRACKED, PubSubStats, Sequences
from synaptic_mesh.transports.zmq_pubsub_wire import (
    ANNOUNCE,
    MEMBER,
    PLAIN,
    PROBE,
    member_topic,
    pack_meta,
    plain_prefix,
    plain_topic,
    split_head,
)

__all__ = [
    "ANNOUNCE",
    "DEFAULT_MAX_MESSAGE",
    "HWM",
    "MAX_FRAMES",
    "MEMBER",
    "PLAIN",
    "PROBE",
    "RECV_QUEUE",
    "SEND_RETRY",
    "SEND_RETRY_MAX",
    "TRACKED",
    "PubSubSettings",
    "PubSubStats",
    "ZmqPubSubLowering",
    "ZmqPubSubTransport",
    "member_topic",
    "parse_url",
    "plain_prefix",
    "plain_topic",
    "split_head",
]

HWM = 10_000
"""High-water mark (messages) of the node's XPUB and SUB sockets."""
MAX_FRAMES = 255
SEND_RETRY = 0.0005
SEND_RETRY_MAX = 0.02
"""First and longest pause of a publish waiting at the high-water mark, in seconds."""


class ZmqPubSubLowering:
    """Native pub-sub: the transport's publish and subscribe are ZeroMQ pub-sub already."""

    def publish(self, node: Any, topic: str, message: Any, *, sender: str | None) -> Any:
        return node.publish(topic, message, sender=sender)

    async def subscribe(
        self, node: Any, pattern: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        return await node.transport.subscribe(pattern, handler, queue)


class ZmqPubSubTransport(PubSubInterest, PubSubReceive, Transport):
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
        self.capabilities = type(self).capabilities.with_max_message(  # type: ignore[misc]
            self.settings.max_message
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
        self._sequences = Sequences()
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
        # No MAXMSGSIZE on the SUB: its one connection carries every publisher's
        # messages, and libzmq closes a connection for good on a frame over that
        # size. A message over max_message is refused once it has arrived instead.
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
        await self._deliver(local, subject, frames, reply_to)

    async def _send(
        self, topic: bytes, subject: str, reply_to: str | None, parts: Sequence[Any]
    ) -> None:
        pub = self._pub
        if pub is None:
            raise TransportClosed(f"transport {self.url} is {self._state}, not running")
        meta = pack_meta(subject, reply_to, self.id, self._sequences.next(topic))
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
