"""The native PAIR hotline lowering of ``nng+tcp``/``nng+ipc``: one ``Pair1`` socket pair per line.

Implements ``patterns.line.PairLowering`` structurally, as
:mod:`~synaptic_mesh.transports.zmq_pair` does for ZeroMQ. Without it a line's
messages share the router's ``Pair1`` link with everything else between the
two nodes; with it each line gets its own monogamous ``Pair1`` socket at each
end, so its traffic never queues behind the node's other messages:

1. The caller subscribes ``_line.<id>`` (``attach``) and asks ``_hotline.<peer>``
   as the generic lowering does.
2. The answering node's lowering sees the request first (``listen``). It
   resolves ``_line.<id>`` in the router's interest table to find the caller's
   node; if that node is another one and advertises the ``pair`` endpoint
   (its PAIR hotline is native too), it opens a ``Pair1`` socket listening on a
   free port of the listen host (``nng+tcp``) or on ``PATH.l<n>`` beside the
   node's socket (``nng+ipc``) and publishes the handshake
   ``[PAIR_HELLO, url]`` on ``_line.<id>`` *before* the request reaches the
   hotline, so the handshake travels ahead of the accept reply on the same
   link. Otherwise (same node, a caller on the generic lowering) the line runs
   on the subjects, and no handshake is sent that the caller could not read.
3. The caller's ``_line.<id>`` handler opens its own ``Pair1`` and dials that
   URL; by the time the ask returns, both ends are set.
4. Each message on the line is one NNG message in the native wire format
   (:mod:`~synaptic_mesh.transports.nng_native`) with header ``["M"]``, or
   ``["C"]`` for the last one (the sender hung up or gave up). The end that
   reads ``C`` closes its socket; the sender keeps its own until it sees that
   disconnect (or after :data:`LAST_GRACE`), never first: NNG discards what a
   closing socket still queues, so closing first could lose the last message.
   Order is Pair1's FIFO; ``send`` waits while the queue (:data:`LINE_BUFFER`
   messages) is full and while the other end has not connected yet, at most
   :data:`CONNECT_WITHIN` seconds (then ``TransportClosed``).

A line whose socket is not (or no longer) up falls back to the generic
subjects (``_lines.<peer>.<id>``, ``_line.<id>``), which the lowering keeps
subscribed; a send made while a line's socket is down (its pipe dropped,
before it closes) is counted in ``transport.stats.fallbacks``. The
hotline's sequence numbers still catch any gap: a message sent on the socket
in the instant its pipe dropped is lost with it, and the line then closes
abnormally (at-most-once, like the rest). An answering socket nobody dials
is closed once the caller's ``_line.<id>`` interest is gone (the line was
refused, or the caller went away), at the latest after
:data:`CONNECT_WITHIN` seconds; either end closes :data:`LAST_GRACE`
seconds after its pipe drops without a last message (the other node died).

Bad input: anyone may dial an answering socket before the caller does. A
message that is not a line message is logged at ERROR and dead-lettered
(``on_bad_frame``), and that line's socket closed (the line goes on over the
subjects); a well-framed message whose envelope is garbage is dead-lettered
by the node's decoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final

import pynng

from synaptic_mesh.runtime.envelope import SYSTEM, Envelope
from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.transports.base import Handler, Subscription
from synaptic_mesh.transports.nng_native import NativePlumbing, pack, remote_of, unpack

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.pair")

HOTLINE_PREFIX: Final = "_hotline"
LINE_PREFIX: Final = "_line"
LINES_PREFIX: Final = "_lines"
"""The hotline subjects of :mod:`synaptic_mesh.patterns.line` (transports import no pattern)."""
PAIR_HELLO: Final = b"SMNNGPAIR1"
"""Frame 0 of the handshake on ``_line.<id>``: frame 1 is the URL to dial."""
PAIR_ENDPOINT: Final = "pair"
"""The name a node with native hotlines advertises in its endpoint table."""
MESSAGE: Final = "M"
LAST: Final = "C"
LINE_BUFFER: Final = 1000
"""Messages a line's socket queues each way before ``send`` waits."""
CONNECT_WITHIN: Final = 10.0
"""Seconds an answering socket waits for its caller, and a send for a pipe."""
EXPIRY_CHECK: Final = 0.1
"""Seconds between an undialed answering end's checks that its caller still wants the line."""
LAST_GRACE: Final = 0.5
"""Seconds the end that sent a line's last message keeps its socket for the other end to
close first (it does once it has read that message); also how long an end whose pipe
dropped keeps reading what arrived before."""


class NngLine:
    """One end of a line's ``Pair1`` socket pair: sends, delivers to the line's handler, closes."""

    def __init__(self, lowering: NngPair, line: str, subject: str, deliver: Handler) -> None:
        plumbing = lowering.plumbing
        assert plumbing is not None
        self.lowering = lowering
        self.plumbing = plumbing
        self.line = line
        self.subject = subject  # the subject incoming messages are delivered on
        self.deliver = deliver
        self.up = False  # a pipe to the other end is (or was) connected
        self.down = False  # that pipe dropped
        self.closed = False
        self.finishing = False  # the last message is sent: waiting for the other end to close
        self.url = ""
        self._pipe: int | None = None
        self._gone: set[int] = set()  # pipes whose removal was reported before their arrival
        self._loop = asyncio.get_running_loop()
        self._timers: list[asyncio.Task[None]] = []
        self.sock = pynng.Pair1(
            send_buffer_size=LINE_BUFFER,
            recv_buffer_size=LINE_BUFFER,
            send_timeout=int(CONNECT_WITHIN * 1000),
            recv_max_size=plumbing.recv_max,
        )
        self.sock.add_post_pipe_connect_cb(self._pipe_connected)
        self.sock.add_post_pipe_remove_cb(self._pipe_removed)
        plumbing.spawn(self._read())

    # -- endpoints --------------------------------------------------------------------

    def listen(self) -> str:
        """Listen beside the node's address (see module docstring); returns the URL to dial."""
        t = self.lowering.transport
        listen = t.settings.listen
        assert listen is not None  # a mesh node always listens
        if t.nng_scheme == "tcp":
            host = listen.rpartition(":")[0].strip("[]")
            advertise = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            bracket = f"[{host}]" if ":" in host else host
            port = self.sock.listen(f"tcp://{bracket}:0").url.rpartition(":")[2]
            shown = f"[{advertise}]" if ":" in advertise else advertise
            self.url = f"tcp://{shown}:{port}"
        else:
            self.url = f"ipc://{listen}.l{next(self.lowering._paths)}"
            self.sock.listen(self.url)
        self._timers.append(self._loop.create_task(self._expire()))
        return self.url

    def dial(self, url: str) -> None:
        """Dial the answering end at ``url`` (NNG connects in the background)."""
        self.url = url
        self.sock.dial(url, block=False)

    # -- sending ----------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not (self.closed or self.finishing or self.down)

    async def send(self, frames: Sequence[Any], last: bool) -> None:
        """Send one line message (``last``: the line's final one; see module docstring)."""
        if not self.usable:
            raise TransportClosed(f"line {self.line}: its Pair1 socket is closed")
        data = pack([LAST if last else MESSAGE], frames, self.plumbing.limits)
        if last:
            # Closing now could take the message with it (NNG drops what a closing socket
            # queues): the reader closes first, on the last message, and this end
            # follows when it sees the disconnect, or after LAST_GRACE.
            self.finishing = True
        try:
            await self.sock.asend(data)
        except pynng.NNGException as exc:
            self.close()
            raise TransportClosed(f"line {self.line}: send failed: {exc}") from None
        self.lowering.transport.stats.sent += 1
        if last:
            self._timers.append(self._loop.create_task(self._close_later()))

    # -- receiving --------------------------------------------------------------------

    async def _read(self) -> None:
        """Deliver what the other end sends, in order; close after the last message."""
        t = self.lowering.transport
        while True:
            try:
                message = await self.sock.arecv_msg()
            except pynng.NNGException:
                return  # closed
            data = message.bytes
            try:
                header, frames = unpack(data, self.plumbing.limits)
                if header not in ([MESSAGE], [LAST]):
                    raise ValueError(f"not a line message (header {header!r:.40})")
            except ValueError as exc:
                self.plumbing.bad_input(
                    remote_of(message), f"line {self.line}: {exc}", data, self.subject
                )
                self.close()
                return
            t.stats.received += 1
            try:
                await self.deliver(self.subject, frames, None)
            except Exception:
                log.exception("line %s: delivery failed", self.line)
            if header == [LAST]:
                self.close()
                return

    # -- the pipe ---------------------------------------------------------------------

    def _pipe_connected(self, pipe: pynng.Pipe) -> None:  # an NNG thread
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._pipe_up, pipe.id)

    def _pipe_removed(self, pipe: pynng.Pipe) -> None:  # an NNG thread
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._pipe_down, pipe.id)

    def _pipe_up(self, pipe_id: int) -> None:
        # NNG reports a pipe's arrival and removal from different threads, so a pipe
        # that came and went at once (a refused caller) may be reported gone first
        if pipe_id in self._gone:
            self._gone.discard(pipe_id)
            return
        if self._pipe is None and not self.closed:
            self._pipe = pipe_id
            self.up = True

    def _pipe_down(self, pipe_id: int) -> None:
        if self._pipe is None and not self.closed:
            self._gone.add(pipe_id)
            return
        if pipe_id != self._pipe or self.closed:
            return  # a second dialer Pair1 refused, or already closed
        self.down = True
        if self.finishing:
            self.close()  # the other end read the last message and closed first
        else:
            log.debug("line %s: Pair1 pipe to %s gone", self.line, self.url)
            self._timers.append(self._loop.create_task(self._close_later()))

    async def _close_later(self) -> None:
        await asyncio.sleep(LAST_GRACE)
        self.close()

    async def _expire(self) -> None:
        """Close an answering end nobody dials: within ``CONNECT_WITHIN`` s, or as soon as the
        caller no longer subscribes its line (refused as busy, or it gave up)."""
        t = self.lowering.transport
        ends = self._loop.time() + CONNECT_WITHIN
        while not self.up and self._loop.time() < ends:
            await asyncio.sleep(EXPIRY_CHECK)
            if not self.up and not t.interested_nodes(f"{LINE_PREFIX}.{self.line}"):
                break
        if not self.up:
            log.debug("line %s: nobody dialed %s; closing it", self.line, self.url)
            self.close()

    def close(self) -> None:
        """Close the socket (its pending receive ends the reader); idempotent."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for timer in self._timers:
            if timer is not current:
                timer.cancel()
        self.sock.close()
        self.lowering._drop(self)


class _LineSubscription(Subscription):
    """The caller's ``_line.<id>`` subscription; ending it closes the line's socket."""

    def __init__(self, inner: Subscription, lowering: NngPair, line: str) -> None:
        self._inner = inner
        self._lowering = lowering
        self._line = line
        self.pattern = inner.pattern
        self.queue = inner.queue

    async def unsubscribe(self) -> None:
        end = self._lowering.calling.get(self._line)
        if end is not None and not end.finishing:
            end.close()  # a finishing end closes by itself (the last message must get out)
        await self._inner.unsubscribe()


class _Serving(Subscription):
    """The answering actor's ``_lines.<peer>.*`` subscription; ending it stops the handshakes."""

    def __init__(self, inner: Subscription, lowering: NngPair, peer: str, handler: Handler) -> None:
        self._inner = inner
        self._lowering = lowering
        self._peer = peer
        self._handler = handler
        self.pattern = inner.pattern
        self.queue = inner.queue

    async def unsubscribe(self) -> None:
        if self._lowering.serving.get(self._peer) is self._handler:
            del self._lowering.serving[self._peer]
        await self._inner.unsubscribe()


class NngPair:
    """The native PAIR lowering (``patterns.line.PairLowering``) of one NNG transport."""

    def __init__(self, transport: _NngTransport) -> None:
        self.transport = transport
        self.plumbing: NativePlumbing | None = None
        self.calling: dict[str, NngLine] = {}  # line id -> the caller's end
        self.answering: dict[str, NngLine] = {}  # line id -> the answering end
        self.serving: dict[str, Handler] = {}  # actor -> its ``serve`` handler
        self._paths = itertools.count(1)

    async def start(self, plumbing: NativePlumbing) -> None:
        """Advertise that this node's hotlines are native (sockets are made per line)."""
        self.plumbing = plumbing
        plumbing.endpoints[PAIR_ENDPOINT] = "per-line"

    # -- PairLowering -------------------------------------------------------------------

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

    async def _answer(self, line: str, peer: str, serve: Handler) -> None:
        """Open the answering socket of ``line`` and send the caller the handshake."""
        t = self.transport
        if not self._caller_is_native(line) or t.closing_native:
            return
        try:
            end = NngLine(self, line, f"{LINES_PREFIX}.{peer}.{line}", serve)
        except pynng.NNGException as exc:
            log.warning("line %s: no Pair1 socket (%s); the line uses subjects", line, exc)
            return
        try:
            url = end.listen()
        except pynng.NNGException as exc:
            log.warning("line %s: cannot listen (%s); the line uses subjects", line, exc)
            end.close()
            return
        self.answering[line] = end
        await t.publish(f"{LINE_PREFIX}.{line}", [PAIR_HELLO, url.encode()])

    def _caller_is_native(self, line: str) -> bool:
        """Whether the caller of ``line`` is on another node that can read a handshake."""
        t = self.transport
        plumbing = self.plumbing
        nodes = t.interested_nodes(f"{LINE_PREFIX}.{line}")
        if plumbing is None or len(nodes) != 1:
            return False
        (caller,) = nodes
        return caller != t.id and PAIR_ENDPOINT in plumbing.peers.get(caller, {})

    async def serve(self, node: Node, peer: str, handler: Handler) -> Subscription:
        self.serving[peer] = handler
        inner = await node.transport.subscribe(f"{LINES_PREFIX}.{peer}.*", handler)
        return _Serving(inner, self, peer, handler)

    async def attach(self, node: Node, line: str, handler: Handler) -> Subscription:
        async def on_line(subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
            if len(frames) == 2 and bytes(frames[0]) == PAIR_HELLO:
                if line not in self.calling and not self.transport.closing_native:
                    self._call(line, subject, bytes(frames[1]), handler)
                return
            await handler(subject, frames, reply_to)

        inner = await node.transport.subscribe(f"{LINE_PREFIX}.{line}", on_line)
        return _LineSubscription(inner, self, line)

    def _call(self, line: str, subject: str, url: bytes, handler: Handler) -> None:
        try:
            end = NngLine(self, line, subject, handler)
        except pynng.NNGException as exc:
            log.warning("line %s: no Pair1 socket (%s); the line uses subjects", line, exc)
            return
        self.calling[line] = end
        try:
            text = url.decode()
            if not text.startswith(("tcp://", "ipc://")):
                raise ValueError(f"not an NNG URL: {text[:60]!r}")
            end.dial(text)
        except (pynng.NNGException, ValueError) as exc:
            log.warning("line %s: bad Pair1 URL (%s); the line uses subjects", line, exc)
            end.close()

    def send(self, node: Node, env: Envelope) -> Awaitable[None]:
        subject = env.subject
        line = subject.rpartition(".")[2]
        ends = self.calling if subject.startswith(f"{LINES_PREFIX}.") else self.answering
        end = ends.get(line)
        if end is None or not end.usable:
            if end is not None:
                self.transport.stats.fallbacks += 1
            return node.send_frames(subject, node.encode(env))  # not (or no longer) on Pair1
        last = env.kind == SYSTEM and getattr(env.body, "op", None) == "close"
        return end.send(node.encode(env), last)

    def _drop(self, end: NngLine) -> None:
        for ends in (self.calling, self.answering):
            if ends.get(end.line) is end:
                del ends[end.line]

    async def close(self) -> None:
        """Close every line's socket, giving those that just sent their last message up to
        ``LAST_GRACE`` seconds for the other end to read it and close first."""
        ends = [*self.calling.values(), *self.answering.values()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LAST_GRACE
        while any(e.finishing and not e.closed for e in ends) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for end in ends:
            end.close()
