"""``zmq+pair://host:port``: ZeroMQ PAIR sockets as the native lowering of PAIR hotlines.

Everything but hotlines is ``zmq://`` (ROUTER-DEALER links under the shared
subject router; same URL, options and topologies). A hotline
(:mod:`synaptic_mesh.patterns.hotline`) gets a dedicated pair of PAIR sockets,
one per line, so its traffic never queues behind the node's other messages:

1. The caller subscribes ``_line.<id>`` (``attach``) and asks ``_hotline.<peer>``
   as the generic lowering does.
2. The answering node's lowering sees the request first (``listen``): it binds a
   PAIR socket on an ephemeral port of ``pair_host`` and publishes the handshake
   ``[PAIR_HELLO, endpoint]`` on ``_line.<id>`` *before* the request reaches the
   hotline, so the handshake travels ahead of the accept reply on the same link.
3. The caller's ``_line.<id>`` handler connects its own PAIR socket to that
   endpoint; by the time the ask returns, both ends are set.
4. Each message on the line is one ZeroMQ multipart ``[tag, *frames]``: tag
   ``M`` a message, ``C`` the last one (the sender hung up or gave up). The
   end that reads ``C`` closes its socket; the sender closes when it sees
   that disconnect (or after :data:`LAST_GRACE`), never first, because a
   connection that ends before the reader has taken the message can drop it.
   Order is PAIR's FIFO; ``send`` waits at the high-water mark
   (:data:`PAIR_HWM`) and while the other end has not connected yet.

A line whose PAIR is not (or no longer) up falls back to the generic
subjects (``_lines.<peer>.<id>``, ``_line.<id>``), which the lowering keeps
subscribed; the hotline's sequence numbers still catch any gap. An answering
socket nobody connects to within :data:`CONNECT_WITHIN` seconds (the line was
refused, or the caller went away) is closed, and so is either end when its
connection drops (socket monitor).

Bad input: a foreign PAIR peer sending frames without a valid tag is reported
through ``on_bad_frame`` (the node dead-letters it) and its socket closed; a
tagged message whose envelope is garbage is dead-lettered by the node's
decoder as on every transport.

Options (query or keyword): ``pair_host``, the host PAIR sockets bind and
advertise (default: the listen host; ``127.0.0.1`` for a node without one or
bound to a wildcard address, so set it for nodes on other machines).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import zmq
from zmq.utils.monitor import parse_monitor_message

from synaptic_mesh.runtime.envelope import SYSTEM, Envelope
from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.transports.base import (
    BadFrame,
    Buffer,
    Capabilities,
    Handler,
    Subscription,
)
from synaptic_mesh.transports.tcp import split_address
from synaptic_mesh.transports.zmq import ZmqTransport, split_options
from synaptic_mesh.transports.zmq_io import SocketIO
from synaptic_mesh.transports.zmq_link import LINGER_MS, check_outgoing, incoming

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node

log = logging.getLogger("synaptic_mesh.zmq.pair")

HOTLINE_PREFIX = "_hotline"
LINE_PREFIX = "_line"
LINES_PREFIX = "_lines"
"""The hotline subjects of :mod:`synaptic_mesh.patterns.line` (transports import no pattern)."""
PAIR_HELLO = b"SMPAIR1"
"""Frame 0 of the handshake on ``_line.<id>``: frame 1 is the endpoint to connect to."""
MESSAGE, LAST = b"M", b"C"
PAIR_HWM = 1000
"""Messages a line's socket queues before ``send`` waits."""
CONNECT_WITHIN = 10.0
"""Seconds an answering socket waits for its caller before it is closed."""
LAST_GRACE = 0.5
"""Seconds the end that sent a line's last message keeps its socket for the other end to close
first (it does once it has read that message); then it closes its own."""


class PairChannel:
    """One end of a line's PAIR socket pair: sends, delivers to the line's handler, closes."""

    def __init__(
        self,
        transport: ZmqPairTransport,
        line: str,
        subject: str,
        deliver: Handler,
    ) -> None:
        assert transport.ctx is not None
        self.transport = transport
        self.line = line
        self.subject = subject  # the subject incoming messages are delivered on
        self.deliver = deliver
        sock = transport.ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.SNDHWM, PAIR_HWM)
        sock.setsockopt(zmq.RCVHWM, PAIR_HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
        )
        self.up = False
        self.closed = False
        self.finishing = False  # the last message is sent: waiting for the other end to close
        self.endpoint = ""
        self._inbox: deque[list[zmq.Frame]] = deque()
        self._delivering = False
        self._wake = asyncio.Event()
        self._io = SocketIO(sock, self._on_message)
        self._monitor = SocketIO(monitor, self._on_event)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read())]

    @property
    def sock(self) -> zmq.Socket[Any]:
        return self._io.sock

    def bind(self, host: str, advertise: str) -> str:
        bracket = f"[{host}]" if ":" in host else host
        if ":" in host:
            self.sock.setsockopt(zmq.IPV6, 1)
        self.sock.bind(f"tcp://{bracket}:*")
        port = self.sock.getsockopt_string(zmq.LAST_ENDPOINT).rpartition(":")[2]
        shown = f"[{advertise}]" if ":" in advertise else advertise
        self.endpoint = f"tcp://{shown}:{port}"
        self._tasks.append(asyncio.get_running_loop().create_task(self._expire()))
        return self.endpoint

    def connect(self, endpoint: str) -> None:
        if endpoint.startswith("tcp://["):
            self.sock.setsockopt(zmq.IPV6, 1)
        self.endpoint = endpoint
        self.sock.connect(endpoint)

    async def send(self, frames: Sequence[Buffer], last: bool) -> None:
        parts = check_outgoing(frames, self.transport.pair_limits)
        if self.closed or self.finishing:
            raise TransportClosed(f"line {self.line}: its PAIR socket is closed")
        try:
            await self._io.send([LAST if last else MESSAGE, *parts])
        except zmq.ZMQError as exc:
            raise TransportClosed(f"line {self.line}: send failed: {exc}") from None
        if last:
            # Closing now could take the message with it: if the connection ends before
            # the other end has read it, its socket drops the pipe and what is left in
            # it. The reader closes first instead (on the last message), and this end
            # follows when it sees the disconnect, or after LAST_GRACE.
            self.finishing = True
            self._tasks.append(asyncio.get_running_loop().create_task(self._close_later()))

    def _on_message(self, parts: list[zmq.Frame]) -> None:
        self._inbox.append(parts)
        self._wake.set()
        if len(self._inbox) >= PAIR_HWM:
            self._io.pause()

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while not self.closed:
                if not self._inbox:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                parts = self._inbox.popleft()
                if self._io.paused and len(self._inbox) < PAIR_HWM // 2:
                    self._io.resume()
                tag = parts[0].bytes
                if tag not in (MESSAGE, LAST) or len(parts) < 2:
                    self._bad(f"not a line message (tag {tag[:8]!r}, {len(parts)} frames)", parts)
                    return
                try:
                    frames = incoming(parts[1:], self.transport.pair_limits)
                except Exception as exc:
                    self._bad(str(exc), parts)
                    return
                self._delivering = True
                try:
                    await self.deliver(self.subject, frames, None)
                except Exception:
                    log.exception("line %s: delivery failed", self.line)
                finally:
                    self._delivering = False
                del parts, frames
                if tag == LAST:
                    self.close()
                    return

    def _on_event(self, parts: list[zmq.Frame]) -> None:
        event = parse_monitor_message([p.bytes for p in parts])["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up = True
        elif not self.closed:
            log.debug("line %s: PAIR connection to %s gone", self.line, self.endpoint)
            self._io._ready()  # take what arrived before; the reader delivers it, then ends
            self._tasks.append(asyncio.get_running_loop().create_task(self._close_when_read()))

    async def _close_when_read(self) -> None:
        # wait for the reader to hand on everything, the message in its hands included:
        # closing cancels the reader, which must not cut the line's last message short
        while (self._inbox or self._delivering) and not self.closed:
            await asyncio.sleep(0.001)
        self.close()

    async def _close_later(self) -> None:
        await asyncio.sleep(LAST_GRACE)
        self.close()

    async def _expire(self) -> None:
        await asyncio.sleep(CONNECT_WITHIN)
        if not self.up:
            log.debug("line %s: nobody connected to %s; closing it", self.line, self.endpoint)
            self.close()

    def _bad(self, reason: str, parts: list[zmq.Frame]) -> None:
        t = self.transport
        t.bad_frames += 1
        log.error("line %s: PAIR socket %s closed: %s", self.line, self.endpoint, reason)
        report = BadFrame(
            f"PAIR peer of line {self.line}", reason, None, (), parts[0].bytes[:32].hex()
        )
        t._fire(t.on_bad_frame, report)
        self.close()

    def close(self) -> None:
        """Close the socket (what is queued is sent for ``LINGER_MS``); idempotent."""
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self._monitor.close(0)
        self._io.close()
        self.transport.lowering._drop(self)


class _LineSubscription(Subscription):
    """The caller's ``_line.<id>`` subscription; ending it closes the line's socket."""

    def __init__(self, inner: Subscription, lowering: ZmqPairLowering, line: str) -> None:
        self._inner = inner
        self._lowering = lowering
        self._line = line
        self.pattern = inner.pattern
        self.queue = inner.queue

    async def unsubscribe(self) -> None:
        channel = self._lowering.calling.pop(self._line, None)
        if channel is not None:
            channel.close()
        await self._inner.unsubscribe()


class ZmqPairLowering:
    """The native PAIR lowering (``patterns.line.PairLowering``) of one transport."""

    def __init__(self, transport: ZmqPairTransport) -> None:
        self.transport = transport
        self.calling: dict[str, PairChannel] = {}  # line id -> the caller's end
        self.answering: dict[str, PairChannel] = {}  # line id -> the answering end
        self.serving: dict[str, Handler] = {}  # actor -> its ``serve`` handler

    async def listen(self, node: Node, peer: str, handler: Handler) -> Subscription:
        subject = f"{HOTLINE_PREFIX}.{peer}"

        async def on_request(subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
            env = node.open_envelope(subject, frames)
            if env is None:
                return  # dead-lettered by the node
            line = getattr(env.body, "line", None)
            serve = self.serving.get(peer)
            if isinstance(line, str) and serve is not None and line not in self.answering:
                await self._answer(line, peer, serve)
            await handler(subject, frames, reply_to)

        return await node.transport.subscribe(subject, on_request, subject)

    async def _answer(self, line: str, peer: str, serve: Handler) -> str | None:
        """Bind the answering socket of ``line`` and send the caller the handshake."""
        t = self.transport
        try:
            channel = PairChannel(t, line, f"{LINES_PREFIX}.{peer}.{line}", serve)
        except zmq.ZMQError as exc:
            log.warning("line %s: no PAIR socket (%s); the line uses subjects", line, exc)
            return None
        try:
            endpoint = channel.bind(t.pair_host, t.pair_advertise)
        except zmq.ZMQError as exc:
            log.warning(
                "line %s: cannot bind on %s (%s); the line uses subjects", line, t.pair_host, exc
            )
            channel.close()
            return None
        self.answering[line] = channel
        await t.publish(f"{LINE_PREFIX}.{line}", [PAIR_HELLO, endpoint.encode()])
        return endpoint

    async def serve(self, node: Node, peer: str, handler: Handler) -> Subscription:
        self.serving[peer] = handler
        inner = await node.transport.subscribe(f"{LINES_PREFIX}.{peer}.*", handler)
        lowering = self

        class Serving(Subscription):
            pattern, queue = inner.pattern, inner.queue

            async def unsubscribe(self) -> None:
                if lowering.serving.get(peer) is handler:
                    del lowering.serving[peer]
                await inner.unsubscribe()

        return Serving()

    async def attach(self, node: Node, line: str, handler: Handler) -> Subscription:
        async def on_line(subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
            if len(frames) == 2 and bytes(frames[0]) == PAIR_HELLO:
                if line not in self.calling:
                    channel = PairChannel(self.transport, line, subject, handler)
                    self.calling[line] = channel
                    try:
                        channel.connect(bytes(frames[1]).decode())
                    except (zmq.ZMQError, UnicodeDecodeError) as exc:
                        log.warning("line %s: bad PAIR endpoint (%s); using subjects", line, exc)
                        channel.close()
                return
            await handler(subject, frames, reply_to)

        inner = await node.transport.subscribe(f"{LINE_PREFIX}.{line}", on_line)
        return _LineSubscription(inner, self, line)

    def send(self, node: Node, env: Envelope) -> Awaitable[None]:
        subject = env.subject
        line = subject.rpartition(".")[2]
        ends = self.calling if subject.startswith(f"{LINES_PREFIX}.") else self.answering
        channel = ends.get(line)
        if channel is None or channel.closed or channel.finishing:
            return node.send_frames(subject, node.encode(env))  # not (or no longer) on PAIR
        body = env.body
        last = env.kind == SYSTEM and getattr(body, "op", None) == "close"
        return channel.send(node.encode(env), last)

    def _drop(self, channel: PairChannel) -> None:
        for ends in (self.calling, self.answering):
            if ends.get(channel.line) is channel:
                del ends[channel.line]

    async def close_all(self) -> None:
        """Close every line's socket, giving those that just sent their last message up to
        ``LAST_GRACE`` seconds for the other end to read it and close first."""
        channels = [*self.calling.values(), *self.answering.values()]
        deadline = asyncio.get_running_loop().time() + LAST_GRACE
        while any(c.finishing and not c.closed for c in channels):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.005)
        for channel in channels:
            channel.close()


class ZmqPairTransport(ZmqTransport):
    """``zmq://`` plus PAIR sockets for hotlines (see module docstring)."""

    scheme: ClassVar[str] = "zmq+pair"
    capabilities: ClassVar[Capabilities] = dataclasses.replace(
        ZmqTransport.capabilities, native=frozenset({"pair"})
    )

    def __init__(self, url: str = "zmq+pair://127.0.0.1:0", **options: Any) -> None:
        url, own = split_options(url, ("pair_host",))
        host = options.pop("pair_host", None) or own.get("pair_host")
        super().__init__(url, **options)
        listen = self.settings.listen
        listen_host = split_address(listen)[0] if listen else "127.0.0.1"
        if host:
            self.pair_host = self.pair_advertise = host
        elif listen_host in ("0.0.0.0", "::", "*"):
            self.pair_host, self.pair_advertise = listen_host, "127.0.0.1"
        else:
            self.pair_host = self.pair_advertise = listen_host
        self.lowering = ZmqPairLowering(self)
        self.pair_limits = self.link_limits()

    def native_lowering(self, pattern: str) -> object | None:
        return self.lowering if pattern == "pair" else None

    async def _close_context(self) -> None:
        await self.lowering.close_all()
        await super()._close_context()
