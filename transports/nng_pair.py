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
   disconnect (or after :data:`~synaptic_mesh.transports.pair_lowering.LAST_GRACE`),
   never first: NNG discards what a
   closing socket still queues, so closing first could lose the last message.
   Order is Pair1's FIFO; ``send`` waits while the queue (:data:`LINE_BUFFER`
   messages) is full and while the other end has not connected yet, at most
   :data:`CONNECT_WITHIN` seconds (then ``TransportClosed``).

The handshake routing and the line tables are
:class:`~synaptic_mesh.transports.pair_lowering.NativePairLowering`, shared
with the ZeroMQ lowering; this module makes, reads and closes the sockets.

A line whose socket is not (or no longer) up falls back to the generic
subjects (``_lines.<peer>.<id>``, ``_line.<id>``), which the lowering keeps
subscribed; a send made while a line's socket is down (its pipe dropped,
before it closes) is counted in ``transport.stats.fallbacks``. The
hotline's sequence numbers still catch any gap: a message sent on the socket
in the instant its pipe dropped is lost with it, and the line then closes
abnormally (at-most-once, like the rest). An answering socket nobody dials
is closed once the caller's ``_line.<id>`` interest is gone (the line was
refused, or the caller went away), at the latest after
:data:`CONNECT_WITHIN` seconds; either end closes
:data:`~synaptic_mesh.transports.pair_lowering.LAST_GRACE` seconds after its
pipe drops without a last message (the other node died), reading meanwhile
what arrived before.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import pynng

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.transports.base import Handler
from synaptic_mesh.transports.nng_native import NativePlumbing, pack, remote_of, unpack
from synaptic_mesh.transports.pair_lowering import LINE_PREFIX, LineEnd, NativePairLowering

if TYPE_CHECKING:
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.pair")

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


class NngLine(LineEnd):
    """One end of a line's ``Pair1`` socket pair: sends, delivers to the line's handler, closes.

    ``up`` means a pipe to the other end is (or was) connected; ``down``, that pipe dropped.
    """

    lowering: NngPair

    def __init__(self, lowering: NngPair, line: str, subject: str, deliver: Handler) -> None:
        plumbing = lowering.plumbing
        assert plumbing is not None
        super().__init__(lowering, line, subject, deliver)
        self.plumbing = plumbing
        self.down = False
        self.url = ""
        self._pipe: int | None = None
        self._gone: set[int] = set()  # pipes whose removal was reported before their arrival
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
        self._start(self._expire())
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
        if last and not self.closed:  # the other end may have read it and hung up already
            self._start(self._close_later())

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
            self._start(self._close_later())  # what arrived before is read meanwhile

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

    def _close_socket(self) -> None:
        """Close the socket (its pending receive ends the reader)."""
        self.sock.close()


class NngPair(NativePairLowering[NngLine]):
    """The native PAIR lowering (``patterns.line.PairLowering``) of one NNG transport."""

    hello = PAIR_HELLO
    transport: _NngTransport

    def __init__(self, transport: _NngTransport) -> None:
        super().__init__(transport)
        self.plumbing: NativePlumbing | None = None
        self._paths = itertools.count(1)

    async def start(self, plumbing: NativePlumbing) -> None:
        """Advertise that this node's hotlines are native (sockets are made per line)."""
        self.plumbing = plumbing
        plumbing.endpoints[PAIR_ENDPOINT] = "per-line"

    def _open_answering(
        self, line: str, subject: str, serve: Handler
    ) -> tuple[NngLine, str] | None:
        """Listen for the caller of ``line`` if it can read a handshake; its URL is the address."""
        if not self._caller_is_native(line) or self.transport.closing_native:
            return None
        try:
            end = NngLine(self, line, subject, serve)
        except pynng.NNGException as exc:
            log.warning("line %s: no Pair1 socket (%s); the line uses subjects", line, exc)
            return None
        try:
            url = end.listen()
        except pynng.NNGException as exc:
            log.warning("line %s: cannot listen (%s); the line uses subjects", line, exc)
            end.close()
            return None
        return end, url

    def _caller_is_native(self, line: str) -> bool:
        """Whether the caller of ``line`` is on another node that can read a handshake."""
        t = self.transport
        plumbing = self.plumbing
        nodes = t.interested_nodes(f"{LINE_PREFIX}.{line}")
        if plumbing is None or len(nodes) != 1:
            return False
        (caller,) = nodes
        return caller != t.id and PAIR_ENDPOINT in plumbing.peers.get(caller, {})

    def _call(self, line: str, subject: str, address: bytes, handler: Handler) -> None:
        if self.transport.closing_native:
            return
        try:
            end = NngLine(self, line, subject, handler)
        except pynng.NNGException as exc:
            log.warning("line %s: no Pair1 socket (%s); the line uses subjects", line, exc)
            return
        self.calling[line] = end
        try:
            text = address.decode()
            if not text.startswith(("tcp://", "ipc://")):
                raise ValueError(f"not an NNG URL: {text[:60]!r}")
            end.dial(text)
        except (pynng.NNGException, ValueError) as exc:
            log.warning("line %s: bad Pair1 URL (%s); the line uses subjects", line, exc)
            end.close()

    def _hang_up(self, line: str) -> None:
        end = self.calling.get(line)
        if end is not None and not end.finishing:
            end.close()  # a finishing end closes by itself (the last message must get out)

    def _note_fallback(self, end: NngLine) -> None:
        self.transport.stats.fallbacks += 1
