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
   that disconnect (or after
   :data:`~synaptic_mesh.transports.pair_lowering.LAST_GRACE`), never first,
   because a connection that ends before the reader has taken the message
   can drop it.
   Order is PAIR's FIFO; ``send`` waits at the high-water mark
   (:data:`PAIR_HWM`) and while the other end has not connected yet.

The handshake routing and the line tables are
:class:`~synaptic_mesh.transports.pair_lowering.NativePairLowering`, shared
with the NNG lowering; this module makes, reads and closes the sockets.

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
from collections.abc import Sequence
from typing import Any, ClassVar

import zmq
from zmq.utils.monitor import parse_monitor_message

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.transports.base import BadFrame, Buffer, Capabilities, Handler
from synaptic_mesh.transports.pair_lowering import LineEnd, NativePairLowering
from synaptic_mesh.transports.tcp import split_address
from synaptic_mesh.transports.zmq import ZmqTransport, split_options
from synaptic_mesh.transports.zmq_io import SocketIO
from synaptic_mesh.transports.zmq_link import LINGER_MS, check_outgoing, incoming

log = logging.getLogger("synaptic_mesh.zmq.pair")

PAIR_HELLO = b"SMPAIR1"
"""Frame 0 of the handshake on ``_line.<id>``: frame 1 is the endpoint to connect to."""
MESSAGE, LAST = b"M", b"C"
PAIR_HWM = 1000
"""Messages a line's socket queues before ``send`` waits."""
CONNECT_WITHIN = 10.0
"""Seconds an answering socket waits for its caller before it is closed."""


class PairChannel(LineEnd):
    """One end of a line's PAIR socket pair: sends, delivers to the line's handler, closes."""

    def __init__(
        self,
        lowering: ZmqPairLowering,
        line: str,
        subject: str,
        deliver: Handler,
    ) -> None:
        transport = lowering.transport
        assert transport.ctx is not None
        super().__init__(lowering, line, subject, deliver)
        self.transport = transport
        sock = transport.ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.SNDHWM, PAIR_HWM)
        sock.setsockopt(zmq.RCVHWM, PAIR_HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
        )
        self.endpoint = ""
        self._inbox: deque[list[zmq.Frame]] = deque()
        self._delivering = False
        self._wake = asyncio.Event()
        self._io = SocketIO(sock, self._on_message)
        self._monitor = SocketIO(monitor, self._on_event)
        self._start(self._read())

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
        self._start(self._expire())
        return self.endpoint

    def connect(self, endpoint: str) -> None:
        if endpoint.startswith("tcp://["):
            self.sock.setsockopt(zmq.IPV6, 1)
        self.endpoint = endpoint
        self.sock.connect(endpoint)

    async def send(self, frames: Sequence[Buffer], last: bool) -> None:
        parts = check_outgoing(frames, self.transport.pair_limits)
        if not self.usable:
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
            self._start(self._close_later())

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
            self._start(self._close_when_read())

    async def _close_when_read(self) -> None:
        # wait for the reader to hand on everything, the message in its hands included:
        # closing cancels the reader, which must not cut the line's last message short
        while (self._inbox or self._delivering) and not self.closed:
            await asyncio.sleep(0.001)
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

    def _close_socket(self) -> None:
        """Close the socket (what is queued is sent for ``LINGER_MS``) and its monitor."""
        self._wake.set()
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self._monitor.close(0)
        self._io.close()


class ZmqPairLowering(NativePairLowering[PairChannel]):
    """The native PAIR lowering (``patterns.line.PairLowering``) of one transport."""

    hello = PAIR_HELLO
    transport: ZmqPairTransport

    def _open_answering(
        self, line: str, subject: str, serve: Handler
    ) -> tuple[PairChannel, str] | None:
        """Bind the answering socket of ``line``; its endpoint is the handshake's address."""
        t = self.transport
        try:
            channel = PairChannel(self, line, subject, serve)
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
        return channel, endpoint

    def _call(self, line: str, subject: str, address: bytes, handler: Handler) -> None:
        channel = PairChannel(self, line, subject, handler)
        self.calling[line] = channel
        try:
            channel.connect(address.decode())
        except (zmq.ZMQError, UnicodeDecodeError) as exc:
            log.warning("line %s: bad PAIR endpoint (%s); using subjects", line, exc)
            channel.close()

    def _hang_up(self, line: str) -> None:
        channel = self.calling.pop(line, None)
        if channel is not None:
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
        await self.lowering.close()
        await super()._close_context()
