"""A :class:`~synaptic_mesh.transports.base.Link` over a stream socket (TCP or Unix).

Wire format, all integers unsigned 32-bit big-endian::

    connection := PREAMBLE message*
    PREAMBLE   := b"SMLINK1\\n"                 (8 bytes, each side sends it first)
    message    := count  length[count]  payload[0] ... payload[count-1]

``count`` is the number of frames (1 to ``max_frames``), followed by the
length of every frame, then the frames' bytes back to back. All lengths come
before any payload so the receiver checks the whole message against
``max_frame`` and ``max_message`` before it buffers a byte of it. A length
prefix is unsigned, so a "negative" one (a peer writing a signed -1) reads as
4294967295 and is refused as oversized. The preamble makes a stray client (an
HTTP probe, a port scanner, a peer of another version) fail with a clear
error on its first bytes instead of being parsed as lengths.

Why a ``BufferedProtocol`` rather than asyncio streams: the socket is read
straight into a reusable scratch buffer (small frames are copied out once), and
a large frame gets its own ``bytearray`` that the kernel fills directly, so a
100 MB attachment is received without an intermediate copy or a ``readexactly``
call per frame.

Back-pressure: the transport's write buffer has high/low water marks; ``send``
waits while it is above the high mark (``StreamWriter.drain`` semantics), so
the buffer never holds more than the high mark plus one message. Control
messages (``send_nowait``) may pass while data waits, but at most
``CONTROL_BACKLOG`` bytes of them: beyond that the peer has stopped reading and
the link is aborted. The receive side stops reading from the socket when more
than ``RECV_QUEUE`` messages wait for ``recv``; the router's reader keeps up,
so that bound only bites a reader that stalls.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

from synaptic_mesh.transports.base import Buffer, Link, LinkEnd
from synaptic_mesh.transports.framing import PREAMBLE, LinkLimits, encode_message

__all__ = ["PREAMBLE", "LinkLimits", "StreamLink", "StreamListener", "encode_message"]

log = logging.getLogger("synaptic_mesh.link")

_U32 = struct.Struct(">I")
_LENGTHS: dict[int, struct.Struct] = {}
"""Formats of ``count`` frame lengths, for the whole-message fast path, made as needed."""
_LENGTHS_2 = struct.Struct(">2I")
SCRATCH = 256 * 1024
"""Size of the reusable receive buffer; frames at least ``BIG_FRAME`` bytes bypass it."""
BIG_FRAME = 64 * 1024
RECV_QUEUE = 256
CONTROL_BACKLOG = 1024 * 1024
CORK_BYTES = 64 * 1024
"""Small messages written in one turn of the event loop are gathered up to this
many bytes and handed to the socket together (see ``StreamLink._write``)."""


class StreamLink(LinkEnd, asyncio.BufferedProtocol):
    """One side of a framed stream connection (see module docstring)."""

    def __init__(
        self, limits: LinkLimits, role: str, on_connected: Callable[[Link], None] | None = None
    ) -> None:
        self.limits = limits
        # the largest frame of a two-frame message taken in one step (_whole_message)
        self._pair_frame = min(BIG_FRAME - 1, limits.pair_frame)
        self._on_connected = on_connected
        self._role = role  # "dialed" or "accepted", for logs
        self._init_end(f"{role} link")
        self._transport: asyncio.Transport | None = None
        self._done = asyncio.get_running_loop().create_future()
        self._messages: deque[list[Buffer]] = deque()
        self._recv_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._control_backlog = 0
        self._loop = asyncio.get_running_loop()
        self._corked: list[Buffer] = []
        self._corked_bytes = 0
        self._uncork_scheduled = False  # _turn_over is due: scheduled, or ending a read
        self._reading = False  # in buffer_updated: the turn's end is where it returns
        self._turn_end: list[Callable[[], None]] = []  # what at_turn_end asked for this turn
        self._receiver: Callable[[list[Buffer]], None] | None = None
        # parser state
        self._buf = bytearray(SCRATCH)
        self._start = 0
        self._end = 0
        self._state = 0  # 0 preamble, 1 count, 2 lengths, 3 payload
        self._count = 0
        self._lengths: tuple[int, ...] = ()
        self._frames: list[Buffer] = []
        self._big: bytearray | None = None
        self._big_pos = 0
        self._in_message = False
        self.bytes_received = 0

    # -- Link API ---------------------------------------------------------------

    def write_buffer_size(self) -> int:
        """Bytes waiting in this process to be written to the socket."""
        waiting = self._corked_bytes
        return (
            waiting
            if self._transport is None
            else waiting + self._transport.get_write_buffer_size()
        )

    async def send(self, frames: Sequence[Buffer]) -> None:
        pieces, size = encode_message(frames, self.limits)
        while self._write_paused and not self._closed:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        self._write(pieces, size)

    def try_send(self, frames: Sequence[Buffer]) -> bool:
        if self._write_paused or self._closed or self._transport is None:
            return False
        pieces, size = encode_message(frames, self.limits)
        self._write(pieces, size)
        return True

    def can_send_now(self) -> bool:
        return not (self._write_paused or self._closed or self._transport is None)

    def send_nowait(self, frames: Sequence[Buffer]) -> None:
        pieces, size = encode_message(frames, self.limits)
        if self._write_paused:
            self._control_backlog += size
            if self._control_backlog > CONTROL_BACKLOG:
                self._fail(
                    f"peer stopped reading: {self.write_buffer_size()} bytes are waiting to be "
                    f"sent, among them {self._control_backlog} bytes of control messages"
                )
        self._write(pieces, size)

    def _write(self, pieces: list[Buffer], size: int) -> None:
        """Write one message; later small ones in the same loop turn are corked.

        A socket write is a system call that costs more than encoding a small
        message. The first message of a turn of the event loop goes to the
        socket at once (a lone ask or reply gains no latency); the small
        messages that follow it in the same turn (a burst of tells, a batch
        of replies) are gathered and written together when the turn ends, or
        as soon as ``CORK_BYTES`` have gathered. A large message is written at
        once after what was gathered, without being joined (no copy).

        A read of this link is a turn of its own, which ends where
        ``buffer_updated`` returns: what it writes here (a reply, a credit)
        is written there, with no loop callback to mark the turn's end.
        """
        transport = self._transport
        if self._closed or transport is None:
            raise self._closed_error()
        if not self._uncork_scheduled:  # first write of this turn: through, and mark the turn
            self._schedule_turn_over()
            for piece in pieces:
                transport.write(piece)
            return
        if size >= CORK_BYTES:
            self._uncork()
            for piece in pieces:
                transport.write(piece)
            return
        self._corked.extend(pieces)
        self._corked_bytes += size
        if self._corked_bytes >= CORK_BYTES:
            self._uncork()

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this turn of the event loop is over, before what the turn
        corked is written: what it sends (the router's gathered MSGS) joins that write.
        One callback of the loop serves both, where two would cost a loop trip each."""
        self._turn_end.append(callback)
        if not self._uncork_scheduled:
            self._schedule_turn_over()

    def _schedule_turn_over(self) -> None:
        """Make ``_turn_over`` due: at the end of the read in progress, else by the loop."""
        self._uncork_scheduled = True
        if not self._reading:
            self._loop.call_soon(self._turn_over)

    def _turn_over(self) -> None:
        """The turn of the event loop is over: the ``at_turn_end`` callbacks, then the cork."""
        try:
            callbacks = self._turn_end
            if callbacks:
                self._turn_end = []
                for callback in callbacks:
                    callback()
        finally:
            self._uncork_scheduled = False
            self._uncork()

    def _uncork(self) -> None:
        """Hand what ``_write`` gathered to the socket, as one buffer."""
        corked = self._corked
        if not corked:
            return
        data = corked[0] if len(corked) == 1 else b"".join(corked)
        self._corked = []
        self._corked_bytes = 0
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def set_receiver(self, receiver: Callable[[list[Buffer]], None]) -> bool:
        """Hand every complete message to ``receiver`` from the protocol callback.

        Messages already queued for ``recv`` go first, in order. From then on
        ``recv`` only reports the link's end (it raises once the link closes).
        """
        while self._messages and not self._closed:
            receiver(self._messages.popleft())
        self._receiver = receiver
        if self._reading_paused and self._transport is not None and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()
        return True

    async def recv(self) -> list[Buffer]:
        while not self._messages:
            if self._closed:
                raise self._closed_error()
            self._recv_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        message = self._messages.popleft()
        if self._reading_paused and len(self._messages) <= RECV_QUEUE // 2:
            self._reading_paused = False
            if self._transport is not None and not self._closed:
                self._transport.resume_reading()
        return message

    def close(self) -> None:
        if not self._closed:
            self._uncork()
            self._set_closed("closed by this node")
            if self._transport is not None:
                self._transport.close()

    def abort(self, reason: str) -> None:
        if not self._closed:
            self._corked.clear()
            self._corked_bytes = 0
            self._set_closed(reason)
            if self._transport is not None:
                self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    def _on_closed(self) -> None:
        if self._recv_waiter is not None and not self._recv_waiter.done():
            self._recv_waiter.set_result(None)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def _fail(self, reason: str) -> None:
        """Malformed input or a stuck peer: log, abort, and make ``recv`` raise."""
        if self._closed:
            return
        self._protocol_error(reason)
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio protocol callbacks -------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        local, remote = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local, remote = f"{local[0]}:{local[1]}", f"{remote[0]}:{remote[1]}"
        elif sock is not None and sock.family == socket.AF_UNIX:
            # A Unix socket's kernel buffers default to about 200 KiB, where loopback
            # TCP grows its own: a burst of small messages then fills them and pauses
            # the writer every few hundred messages. As large as the link's high-water
            # mark, they hold what this side would otherwise hold in user space.
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, self.limits.high_water)
        self._label = f"{self._role} link {local} <-> {remote}"
        transport.set_write_buffer_limits(self.limits.high_water, self.limits.low_water)
        transport.write(PREAMBLE)
        if self._on_connected is not None:
            self._on_connected(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            if self._in_message or (self._state == 0 and self._end > self._start):
                what = "connection reset" if exc else "connection closed"
                self._fail(f"{what} in the middle of a message ({self._progress()})")
            elif exc is not None:
                self._set_closed(f"connection lost: {exc}")
            else:
                self._set_closed("connection closed by the peer")
        self._transport = None
        self._on_closed()
        if not self._done.done():
            self._done.set_result(None)

    def eof_received(self) -> bool:
        if self._in_message or (self._state == 0 and self._end > self._start):
            self._fail(f"truncated message: the peer closed the stream ({self._progress()})")
        elif not self._closed:
            self._set_closed("connection closed by the peer")
        return False

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._control_backlog = 0
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._big_pos :]
        if self._end == len(self._buf):
            self._compact()
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        if self._big is not None:
            self._big_pos += nbytes
            if self._big_pos < len(self._big):
                return
            self._frames.append(self._big)
            self._big = None
            self._frame_done()
        else:
            self._end += nbytes
        if self._closed:
            return
        if self._uncork_scheduled:  # a turn over is on its way: it ends this turn
            self._parse()
            return
        # This read is a turn of its own, which ends here: what it writes to this link
        # (a reply, a credit) is gathered and written on return, with no loop callback.
        self._reading = True
        try:
            self._parse()
        finally:
            self._reading = False
            if self._uncork_scheduled:
                self._turn_over()

    # -- parser -----------------------------------------------------------------

    def _compact(self) -> None:
        if self._start:
            left = self._end - self._start
            self._buf[:left] = self._buf[self._start : self._end]
            self._start, self._end = 0, left
        if self._end == len(self._buf):  # cannot happen within limits; stay safe
            self._buf.extend(bytes(len(self._buf)))

    def _progress(self) -> str:
        if self._state == 0:
            return f"{self._end - self._start} of {len(PREAMBLE)} preamble bytes"
        if self._state == 3:
            i = len(self._frames)
            got = self._big_pos if self._big is not None else self._end - self._start
            return f"frame {i + 1} of {self._count}: {got} of {self._lengths[i]} bytes"
        return f"header incomplete, {self._end - self._start} bytes"

    def _parse(self) -> None:
        buf, limits = self._buf, self.limits
        while True:
            avail = self._end - self._start
            state = self._state
            if state == 1 and avail >= 8 and self._whole_message(buf, avail):
                if self._closed:
                    return
                if self._start == self._end:  # all read is taken: the buffer starts over
                    self._start = self._end = 0
                    return
                continue
            if state == 3:
                length = self._lengths[len(self._frames)]
                if avail >= length:
                    start = self._start
                    self._frames.append(bytes(buf[start : start + length]))
                    self._start = start + length
                    self._frame_done()
                    if self._closed:
                        return
                    continue
                if length >= BIG_FRAME:
                    big = bytearray(length)
                    big[:avail] = buf[self._start : self._end]
                    self._big, self._big_pos = big, avail
                    self._start = self._end = 0
                    return
                if self._start + length > len(buf):
                    self._compact()
                return
            if state == 0:
                if avail < len(PREAMBLE):
                    if not PREAMBLE.startswith(bytes(buf[self._start : self._end])):
                        self._bad_preamble()
                    return
                if buf[self._start : self._start + len(PREAMBLE)] != PREAMBLE:
                    self._bad_preamble()
                    return
                self._start += len(PREAMBLE)
                self._state = 1
            elif state == 1:
                if avail < 4:
                    if self._end == len(buf):
                        self._compact()
                    return
                (count,) = _U32.unpack_from(buf, self._start)
                if not 1 <= count <= limits.max_frames:
                    self._fail(
                        f"bad frame count {count} (a message has 1 to {limits.max_frames} "
                        f"frames); is the peer speaking this protocol? {self._preview()}"
                    )
                    return
                self._start += 4
                self._count = count
                self._state = 2
                self._in_message = True
            else:
                need = 4 * self._count
                if avail < need:
                    if self._start + need > len(buf):
                        self._compact()
                    return
                lengths = struct.unpack_from(f">{self._count}I", buf, self._start)
                self._start += need
                biggest = max(lengths)
                if biggest > limits.max_frame:
                    self._fail(
                        f"frame length {biggest} exceeds max_frame {limits.max_frame} "
                        "(an oversized, negative or garbage length prefix)"
                    )
                    return
                if sum(lengths) > limits.max_message:
                    self._fail(
                        f"message of {sum(lengths)} bytes exceeds max_message {limits.max_message}"
                    )
                    return
                self._lengths = lengths
                self._state = 3

    def _whole_message(self, buf: bytearray, avail: int) -> bool:
        """Take a message that lies complete in the buffer in one step (the common case
        for small messages); False leaves it to the state machine, which checks and
        reports everything."""
        start = self._start
        (count,) = _U32.unpack_from(buf, start)
        limits = self.limits
        if count == 2 and avail >= 12:  # the common small message (a header and an envelope)
            a, b = _LENGTHS_2.unpack_from(buf, start + 4)
            total = a + b
            pair = self._pair_frame
            if avail >= 12 + total and a <= pair and b <= pair and total <= limits.max_message:
                first = start + 12
                second = first + a
                self._start = end = second + b
                self._take([bytes(buf[first:second]), bytes(buf[second:end])])
                return True
        head = 4 + 4 * count
        if not 1 <= count <= limits.max_frames or avail < head:
            return False
        lengths_format = _LENGTHS.get(count)
        if lengths_format is None:
            lengths_format = _LENGTHS[count] = struct.Struct(f">{count}I")
        lengths = lengths_format.unpack_from(buf, start + 4)
        total, biggest = sum(lengths), max(lengths)
        if avail < head + total or biggest >= BIG_FRAME or biggest > limits.max_frame:
            return False
        if total > limits.max_message:
            return False
        # One copy of the whole payload out of the scratch buffer, then each frame a
        # slice of it: half the allocations of copying frame by frame (a MSGS has many).
        pos = start + head
        payload = bytes(memoryview(buf)[pos : pos + total])
        frames: list[Buffer] = []
        pos = 0
        for length in lengths:
            frames.append(payload[pos : pos + length])
            pos += length
        self._start = start + head + total
        self._take(frames)
        return True

    def _frame_done(self) -> None:
        if len(self._frames) < self._count:
            return
        message, self._frames = self._frames, []
        self._state = 1
        self._in_message = False
        self._take(message)

    def _take(self, message: list[Buffer]) -> None:
        """A complete message: to the receiver when one is set, else queued for ``recv``."""
        receiver = self._receiver
        if receiver is not None:
            receiver(message)
            return
        self._messages.append(message)
        if self._recv_waiter is not None and not self._recv_waiter.done():
            self._recv_waiter.set_result(None)
        if len(self._messages) > RECV_QUEUE and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _preview(self) -> str:
        seen = bytes(self._buf[max(0, self._start - 4) : self._end][:16])
        return f"(bytes read: {seen.hex()})"

    def _bad_preamble(self) -> None:
        got = bytes(self._buf[self._start : self._end][: len(PREAMBLE)])
        self._fail(
            f"the peer did not open with the Synaptic Mesh link preamble {PREAMBLE!r}, "
            f"got {got!r}: not a Synaptic Mesh peer, or garbage on the wire"
        )


class StreamListener:
    """An ``asyncio.Server`` handing each accepted connection's :class:`StreamLink` on."""

    def __init__(self, server: asyncio.Server, address: str) -> None:
        self._server = server
        self.address = address

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
