"""Links over ZeroMQ ROUTER-DEALER sockets, for the shared subject router.

A listener is one ROUTER socket: every DEALER that connects is told apart by
its ZeroMQ routing id and becomes one :class:`RouterSideLink`. A dial is one
DEALER socket of its own (:class:`DealerLink`). A link message is one ZeroMQ
multipart message, frame for frame; nothing is added on the wire, except the
one-frame empty message ``[b""]`` that says "this link is closed" (the
router's frames are never empty, so it cannot be mistaken for data).

Why these socket options:

* ``RECONNECT_IVL = -1`` on the DEALER: a link is one connection. ZeroMQ's own
  reconnect would give the peer's ROUTER a new routing id mid-link (a new link
  that never said HELLO); instead the router redials with its backoff.
* ``IMMEDIATE = 1``: nothing is queued on a connection that is not complete.
* ``ROUTER_MANDATORY = 1``: a send to a routing id that is gone raises
  (``EHOSTUNREACH`` becomes :class:`LinkClosed`) and a send at the high-water
  mark waits instead of being dropped silently.
* High-water marks (``SNDHWM``/``RCVHWM``, :data:`HWM` messages): ``send``
  waits while the peer's pipe is full (the Link contract), and the router's
  credit window keeps a link's traffic well below it.
* ``MAXMSGSIZE`` = the largest frame: libzmq drops a connection sending a
  bigger frame before it is buffered.
* ``LINGER`` (:data:`LINGER_MS`): what is queued when a link closes is still
  sent for that long, so a goodbye gets out, and closing a node whose peer
  stopped reading never waits longer.

Sockets are driven by :class:`~synaptic_mesh.transports.zmq_io.SocketIO`
(the socket's file descriptor on the event loop, messages handed over as they
arrive) rather than ``zmq.asyncio``, whose futures cost several times
libzmq's own latency per message.

Receiving is zero-copy for large frames: a frame of :data:`COPY_BELOW` bytes
or more is handed on as a ``memoryview`` over libzmq's own buffer (kept alive
by the view); smaller ones are copied into ``bytes``, which is cheaper than a
view for a few dozen bytes. Sending passes ``bytes`` frames of that size
without a copy (immutable, so safe); other buffers are copied by libzmq.

Dead peers: a DEALER notices its connection drop through a socket monitor
(``EVENT_DISCONNECTED``). A ROUTER maps each connection's file descriptor
(``SRCFD`` of its first message) to its routing id and closes that link on
the monitor's ``EVENT_DISCONNECTED``. A peer that hangs without closing is
found by the router's heartbeats.

Receive-side back-pressure: a DEALER link stops reading when
:data:`RECV_QUEUE` messages wait for ``recv`` (the peer's sends then block at
the high-water mark). The links of one ROUTER share its socket, so one of
them cannot stop reading alone; the router reads every link continuously and
its credit window bounds what a peer may send, so the queue stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from synaptic_mesh.transports.base import (
    Buffer,
    Link,
    LinkClosed,
    LinkConnector,
    LinkEnd,
    LinkListener,
    LinkProtocolError,
)
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.zmq_io import SocketIO

log = logging.getLogger("synaptic_mesh.zmq")

HWM = 1000
"""High-water mark of every link socket, in messages (ZeroMQ's unit)."""
LINGER_MS = 250
"""How long a closed link socket keeps sending what is queued."""
COPY_BELOW = 64 * 1024
"""Received frames smaller than this are copied to ``bytes``; larger ones are views."""
RECV_QUEUE = 256
"""Messages a DEALER link buffers for ``recv`` before it stops reading its socket."""
CONTROL_BACKLOG = 1024
"""Control messages (``send_nowait``) that may wait behind data before the link is aborted."""
CLOSED_IDS = 4096
"""Routing ids of closed links a ROUTER remembers, to drop their stragglers quietly."""
CLOSE_FRAMES: list[Buffer] = [b""]
"""The link-level "closed" message; the router's own frames are never empty."""
_DOWN_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
_DIAL_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | _DOWN_EVENTS
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


def endpoint(address: str) -> str:
    """``"host:port"`` (``"[v6]:port"``) -> ``"tcp://host:port"``; port 0 picks a free one."""
    from synaptic_mesh.transports.tcp import split_address

    host, port = split_address(address)
    host = f"[{host}]" if ":" in host else host
    return f"tcp://{host}:{'*' if port == 0 else port}"


def address_of(bound: str) -> str:
    """A socket's ``LAST_ENDPOINT`` (``tcp://h:p``) -> ``"h:p"``."""
    return bound.removeprefix("tcp://")


def configure(sock: zmq.Socket[Any], limits: LinkLimits, address: str) -> None:
    """The options every link socket gets (see module docstring); IPv6 for a v6 ``address``."""
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_frame)
    if address.startswith("["):
        sock.setsockopt(zmq.IPV6, 1)


def check_outgoing(frames: Sequence[Buffer], limits: LinkLimits) -> list[Any]:
    """The frames as libzmq takes them; ``ValueError`` if they break ``limits``."""
    n = len(frames)
    if not 1 <= n <= limits.max_frames:
        raise ValueError(f"a message has 1 to {limits.max_frames} frames, got {n}")
    out: list[Any] = []
    total = 0
    for frame in frames:
        if type(frame) is bytes:
            size = len(frame)
            out.append(zmq.Frame(frame, copy=False) if size >= COPY_BELOW else frame)
        else:
            view = memoryview(frame)
            size = view.nbytes
            out.append(view if view.c_contiguous else view.tobytes())
        if size > limits.max_frame:
            raise ValueError(
                f"frame of {size} bytes exceeds the link's max_frame {limits.max_frame}"
            )
        total += size
    if total > limits.max_message:
        raise ValueError(f"message of {total} bytes exceeds the link's max_message")
    return out


def incoming(parts: list[zmq.Frame], limits: LinkLimits) -> list[Buffer]:
    """Received ZeroMQ frames -> link frames (views for large ones); checks ``limits``."""
    if len(parts) > limits.max_frames:
        raise LinkProtocolError(
            f"message of {len(parts)} frames (at most {limits.max_frames}); "
            "is the peer speaking this protocol?"
        )
    frames: list[Buffer] = []
    total = 0
    for part in parts:
        buf = part.buffer
        size = buf.nbytes
        total += size
        frames.append(buf if size >= COPY_BELOW else part.bytes)
    if total > limits.max_message:
        raise LinkProtocolError(
            f"message of {total} bytes exceeds max_message {limits.max_message}"
        )
    return frames


async def _send(link: _QueueLink, io: SocketIO, parts: list[Any]) -> None:
    """Send on ``io`` for ``link``, waiting at the high-water mark; errors become LinkClosed."""
    try:
        await io.send(parts)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EHOSTUNREACH:
            link.abort("the peer's connection is gone")
        if link.closed:
            raise link._closed_error() from None
        raise LinkClosed(f"{link.label}: send failed: {exc}") from exc


class _QueueLink(LinkEnd):
    """The receive queue, control queue and closed state both kinds of ZeroMQ link share."""

    def __init__(self, label: str, limits: LinkLimits) -> None:
        self.limits = limits
        self._init_end(label)
        self._messages: deque[list[Buffer]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = asyncio.get_running_loop().create_future()
        self._control: deque[list[Any]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._receiver: Callable[[list[Buffer]], None] | None = None

    def set_receiver(self, receiver: Callable[[list[Buffer]], None]) -> bool:
        """Hand each message to ``receiver`` from the socket's read callback (see ``Link``)."""
        while self._messages and not self._closed:
            receiver(self._messages.popleft())
        self._receiver = receiver
        return True

    async def recv(self) -> list[Buffer]:
        while not self._messages:
            if self._closed:
                raise self._closed_error()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    def _deliver(self, parts: list[zmq.Frame]) -> None:
        """One received message: the peer's "closed", bad input, or data for ``recv``."""
        if self._closed:
            return
        if len(parts) == 1 and len(parts[0].buffer) == 0:
            self._set_closed("connection closed by the peer")
            self._release()
            return
        try:
            frames = incoming(parts, self.limits)
        except LinkProtocolError as exc:
            self._fail(str(exc))
            return
        if self._receiver is not None:
            self._receiver(frames)
            return
        self._messages.append(frames)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _send_control(self, io: SocketIO, parts: list[Any]) -> None:
        """Send now, or queue behind data held at the high-water mark (bounded)."""
        if self._closed:
            raise self._closed_error()
        if not self._control:
            try:
                io.send_nowait(parts)
                return
            except zmq.Again:
                pass
            except zmq.ZMQError as exc:
                self.abort(f"control message not sent: {exc}")
                raise self._closed_error() from None
        if len(self._control) >= CONTROL_BACKLOG:
            self._fail(f"peer stopped reading: {len(self._control)} control messages wait")
            raise self._closed_error()
        self._control.append(parts)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_control(io))

    async def _flush_control(self, io: SocketIO) -> None:
        with contextlib.suppress(LinkClosed):
            while self._control and not self._closed:
                await _send(self, io, self._control[0])
                self._control.popleft()

    def _on_closed(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._flusher is not None and self._flusher is not asyncio.current_task():
            self._flusher.cancel()

    def _fail(self, reason: str) -> None:
        """Malformed input or a stuck peer: log, close, make ``recv`` raise."""
        if self._closed:
            return
        self._protocol_error(reason)
        self._release()

    def _release(self) -> None:
        """Free this link's share of the socket; ``_done`` once nothing is left."""
        raise NotImplementedError

    def _finished(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


# -- dialing: one DEALER per link ---------------------------------------------------------


class DealerLink(_QueueLink):
    """A dialed link: a DEALER socket of its own, watched by a socket monitor."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        monitor: SocketIO,
        limits: LinkLimits,
        label: str,
    ) -> None:
        super().__init__(label, limits)
        self._io = SocketIO(sock, self._on_message)
        self._monitor = monitor
        monitor.on_message = self._on_event
        monitor.kick()

    async def send(self, frames: Sequence[Buffer]) -> None:
        parts = check_outgoing(frames, self.limits)
        if self._closed:
            raise self._closed_error()
        await _send(self, self._io, parts)

    def send_nowait(self, frames: Sequence[Buffer]) -> None:
        self._send_control(self._io, check_outgoing(frames, self.limits))

    def set_receiver(self, receiver: Callable[[list[Buffer]], None]) -> bool:
        super().set_receiver(receiver)
        if self._io.paused:
            self._io.resume()
        return True

    async def recv(self) -> list[Buffer]:
        message = await super().recv()
        if self._io.paused and len(self._messages) <= RECV_QUEUE // 2:
            self._io.resume()
        return message

    def _on_message(self, parts: list[zmq.Frame]) -> None:
        self._deliver(parts)
        if len(self._messages) >= RECV_QUEUE:
            self._io.pause()

    def _on_event(self, parts: list[zmq.Frame]) -> None:
        event = parse_monitor_message([p.bytes for p in parts])["event"]
        if event & _DOWN_EVENTS and not self._closed:
            self._io.paused = False
            self._io._ready()  # take what arrived before the connection dropped
            if not self._closed:
                self._set_closed("connection lost")
                self._release()

    def close(self) -> None:
        if not self._closed:
            self._set_closed("closed by this node")
            if not self._control:  # else the peer is not reading: its heartbeats tell it
                with contextlib.suppress(zmq.ZMQError):
                    self._io.send_nowait(CLOSE_FRAMES)
            self._release()

    def abort(self, reason: str) -> None:
        if not self._closed:
            self._set_closed(reason)
            self._release(linger=0)

    def _release(self, linger: int | None = None) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._io.sock.disable_monitor()
        self._monitor.close(0)
        self._io.close(linger)
        self._finished()


# -- listening: one ROUTER, one link per routing id ------------------------------------------


class RouterSideLink(_QueueLink):
    """An accepted link: the DEALER with one routing id on the listener's ROUTER."""

    def __init__(self, listener: ZmqListener, routing_id: bytes, label: str) -> None:
        super().__init__(label, listener.limits)
        self._listener = listener
        self.routing_id = routing_id

    async def send(self, frames: Sequence[Buffer]) -> None:
        parts = check_outgoing(frames, self.limits)
        if self._closed:
            raise self._closed_error()
        await _send(self, self._listener.io, [self.routing_id, *parts])

    def send_nowait(self, frames: Sequence[Buffer]) -> None:
        parts = check_outgoing(frames, self.limits)
        self._send_control(self._listener.io, [self.routing_id, *parts])

    def close(self) -> None:
        self.abort("closed by this node")

    def abort(self, reason: str) -> None:
        if not self._closed:
            self._set_closed(reason)
            with contextlib.suppress(zmq.ZMQError):  # tell the DEALER, if it can take it now
                self._listener.io.send_nowait([self.routing_id, *CLOSE_FRAMES])
            self._release()

    def _release(self) -> None:
        self._listener._forget(self)
        self._finished()


class ZmqListener(LinkListener):
    """A bound ROUTER socket handing each new routing id's link to ``accept``."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        limits: LinkLimits,
        address: str,
        accept: Callable[[Link], None],
    ) -> None:
        self.limits = limits
        self._accept = accept
        sock = ctx.socket(zmq.ROUTER)
        configure(sock, limits, address)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            sock.bind(endpoint(address))
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(exc.errno, f"cannot listen on {address}: {exc}") from None
        self._bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.address = address_of(self._bound)
        self._links: dict[bytes, RouterSideLink] = {}
        self._fds: dict[int, bytes] = {}
        self._closed_ids: OrderedDict[bytes, None] = OrderedDict()
        self._accepting = True
        self.stragglers = 0
        self._finished = asyncio.get_running_loop().create_future()
        self.io = SocketIO(sock, self._message)
        self._monitor = SocketIO(sock.get_monitor_socket(zmq.EVENT_DISCONNECTED), self._event)

    def _event(self, parts: list[zmq.Frame]) -> None:
        if self._finished.done():
            return
        fd = parse_monitor_message([p.bytes for p in parts])["value"]
        routing_id = self._fds.pop(fd, None)
        link = self._links.get(routing_id) if routing_id is not None else None
        if link is None or link.closed:
            return
        # What it sent before going is delivered first; the link then closes. The
        # routing id was resolved before reading on, so a reused descriptor cannot
        # close a newer link.
        for _ in range(64):
            if not self.io.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            self.io._ready()
        if not link.closed:
            link._set_closed("connection lost")
            link._release()

    def _message(self, parts: list[zmq.Frame]) -> None:
        routing_id = parts[0].bytes
        link = self._links.get(routing_id)
        if link is None:
            if routing_id in self._closed_ids or not self._accepting or len(parts) < 2:
                self.stragglers += 1
                log.debug("dropped a message from closed link %s", routing_id.hex())
                return
            if len(parts) == 2 and len(parts[1].buffer) == 0:
                return  # a "closed" from a link we never knew
            peer = parts[1].get("Peer-Address")
            link = RouterSideLink(
                self, routing_id, f"accepted link {self.address} <-> {peer} ({routing_id.hex()})"
            )
            self._links[routing_id] = link
            with contextlib.suppress(zmq.ZMQError):
                self._fds[parts[1].get(zmq.SRCFD)] = routing_id
            self._accept(link)
        link._deliver(parts[1:])

    def _forget(self, link: RouterSideLink) -> None:
        if self._links.get(link.routing_id) is link:
            del self._links[link.routing_id]
            self._closed_ids[link.routing_id] = None
            if len(self._closed_ids) > CLOSED_IDS:
                self._closed_ids.popitem(last=False)
        for fd, rid in list(self._fds.items()):
            if rid == link.routing_id:
                del self._fds[fd]
        if not self._accepting and not self._links:
            self._shut()

    def _shut(self) -> None:
        if self._finished.done():
            return
        for link in list(self._links.values()):
            link._set_closed("listener closed")
            link._finished()
        self._links.clear()
        with contextlib.suppress(zmq.ZMQError):
            self.io.sock.disable_monitor()
        self._monitor.close(0)
        self.io.close()
        self._finished.set_result(None)

    async def close(self) -> None:
        """Stop accepting (unbind); the socket closes with the last accepted link."""
        if not self._accepting:
            return
        self._accepting = False
        with contextlib.suppress(zmq.ZMQError):
            self.io.sock.unbind(self._bound)
        if not self._links:
            self._shut()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._finished)

    def shut(self) -> None:
        """Close the socket now, with whatever links are left (the transport is closing)."""
        self._accepting = False
        self._shut()


class ZmqConnector(LinkConnector):
    """Listens with a ROUTER and dials with DEALERs, all on one ZeroMQ context."""

    def __init__(self, ctx: zmq.Context[Any], limits: LinkLimits) -> None:
        self.ctx = ctx
        self.limits = limits

    async def listen(self, address: str, accept: Callable[[Link], None]) -> LinkListener:
        return ZmqListener(self.ctx, self.limits, address, accept)

    async def dial(self, address: str, timeout: float) -> Link:
        target = endpoint(address)
        sock = self.ctx.socket(zmq.DEALER)
        configure(sock, self.limits, address)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        monitor = sock.get_monitor_socket(_DIAL_EVENTS)
        outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_event(parts: list[zmq.Frame]) -> None:
            event = parse_monitor_message([p.bytes for p in parts])["event"]
            if event & _DIAL_EVENTS and not outcome.done():
                outcome.set_result(event)

        watch = SocketIO(monitor, on_event)
        try:
            sock.connect(target)
            async with asyncio.timeout(timeout or None):
                event = await outcome
            if event != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                raise ConnectionRefusedError(f"cannot reach {address} ({zmq.Event(event).name})")
        except BaseException:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            watch.close(0)
            sock.close(linger=0)
            raise
        return DealerLink(sock, watch, self.limits, f"dialed link -> {address}")
