"""A :class:`~synaptic_mesh.transports.base.Link` over one pynng ``Pair1`` socket with one pipe.

NNG messages are single-part, so a link message (a header frame and the
message's own frames) travels as one NNG message whose body is the framing of
:mod:`~synaptic_mesh.transports.framing` without the preamble (NNG's own SP
handshake already refuses a peer of another protocol)::

    body := count  length[count]  payload[0] ... payload[count-1]     (u32 big-endian)

An empty body is the link-level *end of stream*: the graceful close below.

Why one monogamous ``Pair1`` socket per link, not one polyamorous socket per
node: NNG's polyamorous mode drops a message when the chosen pipe's queue
(two messages) is full, "to avoid head-of-line blocking" (``pair1_poly.c``);
a link must neither lose nor reorder, and must push back on a fast sender.
A monogamous socket gives exactly that: ``nng_sendmsg`` waits (or, non
blocking, says ``EAGAIN``) while the pipe is behind. How a listening node
gets one socket per accepted link is :mod:`~synaptic_mesh.transports.nng_connector`'s job.

How it meets asyncio: not through pynng's AIO (``arecv``/``asend``), which
completes every operation in an NNG thread that must take the GIL and wake
the event loop through its self-pipe, once per message. Instead the data path
uses NNG's pollable descriptors (``NNG_OPT_RECVFD``/``NNG_OPT_SENDFD``,
readable while a message can be received / sent without blocking) with
``loop.add_reader``, and non-blocking ``nng_recvmsg``/``nng_sendmsg``: the
first send of a loop iteration goes straight into the socket's send buffer
(``SEND_BUFFER`` messages); later sends of the same iteration queue and are
handed over back to back when it ends, since NNG wakes its sending thread for
a message that finds it idle (one message at a time, with this process's work
in between, woke it once per message: a remote ``Feeder`` streamed 16,000
items/s on ``nng+ipc`` instead of 30,000). Only when the send buffer is full
does a writer task wait for the send descriptor, and later sends queue behind
it in order. A receive takes what NNG buffered and waits
on the receive descriptor only when nothing is, so a burst is read without a
wake-up per message and no Python code runs in NNG's threads on the data
path. Once the router sets a receiver (``set_receiver``), the receive
descriptor stays watched and its reader callback hands each message NNG
holds to the receiver: no reader task to wake, and no watch added and
removed (two ``epoll_ctl`` calls) per message. ``send`` waits while more
than ``high_water`` bytes queue in this process; ``send_nowait`` (control
messages) never waits, but a backlog beyond ``CONTROL_BACKLOG`` bytes means
the peer stopped reading and aborts the link.

Receiving: a message under ``BIG_MESSAGE`` bytes is copied out of the NNG
message, each frame a ``bytes`` of its own (at that size a copy is cheaper
than a view, and ``bytes`` is what the router and codec handle fastest). A
larger message is not copied: its frames of at least ``BIG_FRAME`` bytes are
``memoryview`` slices of the NNG message's own body (kept alive by a cffi
owner that frees the message when the last view is garbage-collected), so an
attachment reaches the codec straight from the buffer NNG received it into.

Close: ``close()`` sends what is queued, then the end-of-stream marker, and
waits (at most ``LINGER`` seconds) for the peer to close its side, which it
does on reading the marker; so everything sent before ``close`` was read by
the peer's router. NNG itself has no linger (``nng_close`` may discard
queued messages), hence the explicit marker. ``abort()`` closes the socket
at once. A pipe that goes away (peer died, connection reset) closes the link;
messages NNG had already received are still returned by ``recv`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pynng
from pynng import ffi, lib

from synaptic_mesh.transports.base import Buffer, LinkClosed, LinkEnd, LinkProtocolError
from synaptic_mesh.transports.framing import LinkLimits, encode_message

log = logging.getLogger("synaptic_mesh.link")

SEND_BUFFER = 128
"""Messages NNG buffers per socket each way (``NNG_OPT_SENDBUF`` / ``NNG_OPT_RECVBUF``)."""
BIG_MESSAGE = 64 * 1024
"""Messages at least this large are received without copying their large frames."""
BIG_FRAME = 16 * 1024
"""Within a big message, frames at least this large stay views of the NNG message."""
CONTROL_BACKLOG = 1024 * 1024
LINGER = 1.0
"""Seconds a graceful close waits for the peer to read what was sent and close its side."""
FRAME_OVERHEAD = 4
_U32 = struct.Struct(">I")


def recv_max_size(limits: LinkLimits) -> int:
    """The largest NNG message a link accepts: the payload limit plus the frame table."""
    return limits.max_message + FRAME_OVERHEAD * (limits.max_frames + 1)


def link_socket(limits: LinkLimits) -> pynng.Pair1:
    """A monogamous ``Pair1`` socket set up for one link (buffers, size limit, no redial)."""
    sock = pynng.Pair1(
        send_buffer_size=SEND_BUFFER,
        recv_buffer_size=SEND_BUFFER,
        recv_max_size=recv_max_size(limits),
    )
    return sock


# -- NNG messages ----------------------------------------------------------------------


def new_message(frames: Sequence[Buffer], limits: LinkLimits) -> tuple[Any, int]:
    """An ``nng_msg *`` holding ``frames`` in link framing, and its payload size.

    Raises ``ValueError`` when the message breaks ``limits``.
    """
    pieces, total = encode_message(frames, limits)
    size = sum(len(p) if type(p) is bytes else memoryview(p).nbytes for p in pieces)
    msg_p = ffi.new("nng_msg **")
    check(lib.nng_msg_alloc(msg_p, size))
    msg = msg_p[0]
    body = ffi.cast("char *", lib.nng_msg_body(msg))
    offset = 0
    for piece in pieces:
        n = len(piece) if type(piece) is bytes else memoryview(piece).nbytes
        if n:
            ffi.memmove(body + offset, piece, n)
        offset += n
    return msg, total


def end_of_stream() -> Any:
    """The link-level end-of-stream marker: an empty NNG message."""
    msg_p = ffi.new("nng_msg **")
    check(lib.nng_msg_alloc(msg_p, 0))
    return msg_p[0]


def decode(msg: Any, limits: LinkLimits) -> list[Buffer] | None:
    """The frames of a received ``nng_msg *`` (consumed); ``None`` for end of stream.

    Raises :class:`LinkProtocolError` (with a hex preview) on a malformed body.
    """
    size = lib.nng_msg_len(msg)
    if size == 0:
        lib.nng_msg_free(msg)
        return None
    body = ffi.cast("char *", lib.nng_msg_body(msg))
    if size < BIG_MESSAGE:
        data: Any = ffi.buffer(body, size)[:]
        lib.nng_msg_free(msg)
        big = False
    else:
        owner = ffi.gc(body, lambda _body, msg=msg: lib.nng_msg_free(msg))
        data = memoryview(ffi.buffer(owner, size))
        big = True
    if size < 4:
        raise _malformed(data, f"a message of {size} bytes has no frame count")
    (count,) = _U32.unpack_from(data, 0)
    if not 1 <= count <= limits.max_frames:
        raise _malformed(
            data,
            f"bad frame count {count} (a message has 1 to {limits.max_frames} frames); "
            "is the peer speaking this protocol?",
        )
    start = 4 + 4 * count
    if start > size:
        raise _malformed(data, f"{count} frame lengths do not fit in {size} bytes")
    lengths = struct.unpack_from(f">{count}I", data, 4)
    if max(lengths) > limits.max_frame:
        raise _malformed(data, f"frame length {max(lengths)} exceeds max_frame {limits.max_frame}")
    if start + sum(lengths) != size:
        raise _malformed(
            data, f"frame lengths add up to {sum(lengths)} bytes, the message has {size - start}"
        )
    frames: list[Buffer] = []
    for length in lengths:
        end = start + length
        frames.append(data[start:end] if not big or length >= BIG_FRAME else bytes(data[start:end]))
        start = end
    return frames


def _malformed(data: Any, reason: str) -> LinkProtocolError:
    preview = bytes(data[:16]).hex()
    return LinkProtocolError(f"{reason} (bytes: {preview})")


def check(rv: int) -> None:
    """Raise pynng's exception for an NNG error code."""
    if rv:
        pynng.exceptions.check_err(rv)


# -- the link ------------------------------------------------------------------------------


class NngLink(LinkEnd):
    """One side of a link over a ``Pair1`` socket with its one pipe (see module docstring)."""

    def __init__(self, sock: pynng.Socket, pipe_id: int, limits: LinkLimits, label: str) -> None:
        self.limits = limits
        self._pipe_id = pipe_id
        self._sock = sock
        self._init_end(label)
        self._loop = asyncio.get_running_loop()
        self._pending: deque[tuple[Any, int]] = deque()  # nng_msg * not yet taken by NNG
        self._pending_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._batching = False  # a message went to NNG this loop iteration: later ones queue
        self._closer: asyncio.Task[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._leftover: deque[Any] = deque()  # received before the pipe went away
        self._peer_gone = asyncio.Event()
        self._socket_closed = False
        self._done = self._loop.create_future()
        self._msg_p = ffi.new("nng_msg **")
        self._socket_id = sock.socket
        self._recv_fd: int = sock.recv_fd
        self._send_fd: int = sock.send_fd
        self._recv_waiter: asyncio.Future[None] | None = None
        self._send_waiter: asyncio.Future[None] | None = None
        self._receiver: Callable[[list[Buffer]], None] | None = None
        self._watching = False  # the receive descriptor is watched for the receiver
        sock.add_post_pipe_remove_cb(self._pipe_removed)
        if all(pipe.id != pipe_id for pipe in sock.pipes):  # gone before we listened for it
            self._pipe_gone()

    # -- Link API ---------------------------------------------------------------------

    @property
    def socket_closed(self) -> bool:
        """Whether the NNG socket is closed (all its file descriptors released)."""
        return self._socket_closed

    async def send(self, frames: Sequence[Buffer]) -> None:
        msg, size = new_message(frames, self.limits)
        self._push(msg, size)
        while self._pending_bytes > self.limits.high_water and not self._closed:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def send_nowait(self, frames: Sequence[Buffer]) -> None:
        msg, size = new_message(frames, self.limits)
        self._push(msg, size)
        if self._pending_bytes > self.limits.high_water + CONTROL_BACKLOG:
            self._fail(
                f"peer stopped reading: {self._pending_bytes} bytes wait in this process "
                f"beyond NNG's buffer of {SEND_BUFFER} messages"
            )

    def _push(self, msg: Any, size: int) -> None:
        """Send ``msg``: the first of a loop iteration at once, later ones in one go after it.

        Handing NNG one message at a time, with this process's work for the next
        in between, wakes NNG's sending thread once per message; a burst handed
        over back to back (:meth:`_end_batch`) wakes it about once.
        """
        if self._closed:
            lib.nng_msg_free(msg)
            raise self._closed_error()
        if not self._pending and not self._batching:
            rv = lib.nng_sendmsg(self._socket_id, msg, lib.NNG_FLAG_NONBLOCK)
            if rv == 0:
                self._batching = True
                self._loop.call_soon(self._end_batch)
                return
            if rv != lib.NNG_EAGAIN:
                lib.nng_msg_free(msg)
                self._gone(f"send failed: {_error_text(rv)}")
                raise self._closed_error()
        self._pending.append((msg, size))
        self._pending_bytes += size
        if self._writer is None and not self._batching:
            self._writer = self._loop.create_task(self._write_pending())

    def _end_batch(self) -> None:
        """Hand NNG what queued behind the iteration's first message; wait for room if need be."""
        self._batching = False
        if self._writer is None and self._pending and self._send_queued() == "full":
            self._writer = self._loop.create_task(self._write_pending())

    def _send_queued(self) -> str:
        """Hand queued messages to NNG until none is left (``"done"``), its buffer is full
        (``"full"``) or the socket fails (``"failed"``)."""
        pending = self._pending
        while pending:
            if self._socket_closed:
                return "failed"
            msg, size = pending[0]
            rv = lib.nng_sendmsg(self._socket_id, msg, lib.NNG_FLAG_NONBLOCK)
            if rv == lib.NNG_EAGAIN:
                return "full"
            if rv:
                self._gone(f"send failed: {_error_text(rv)}")
                return "failed"
            pending.popleft()
            self._pending_bytes -= size
            if self._pending_bytes <= self.limits.low_water:
                self._wake_senders()
        return "done"

    async def _write_pending(self) -> None:
        """Hand queued messages to NNG, waiting on the send descriptor while its buffer is full."""
        try:
            while self._send_queued() == "full":
                await self._wait_send()
        finally:
            self._writer = None
            self._wake_senders()

    async def _wait_send(self) -> None:
        waiter = self._send_waiter = self._loop.create_future()
        self._loop.add_reader(self._send_fd, _ready, waiter)
        try:
            await waiter
        finally:
            self._send_waiter = None
            if not self._socket_closed:
                self._loop.remove_reader(self._send_fd)

    async def _wait_recv(self) -> None:
        waiter = self._recv_waiter = self._loop.create_future()
        self._loop.add_reader(self._recv_fd, _ready, waiter)
        try:
            await waiter
        finally:
            self._recv_waiter = None
            if not self._socket_closed:
                self._loop.remove_reader(self._recv_fd)

    def set_receiver(self, receiver: Callable[[list[Buffer]], None]) -> bool:
        """Hand every message to ``receiver`` from the receive descriptor's reader callback.

        The descriptor stays watched from now on: no watch added and removed
        (two ``epoll_ctl`` calls) and no reader task woken per message. What
        NNG already holds is handed over first, here.
        """
        self._receiver = receiver
        if not self._socket_closed:
            self._loop.add_reader(self._recv_fd, self._readable)
            self._watching = True
        self._readable()
        return True

    def _readable(self) -> None:
        """Hand the receiver every message NNG holds (and those kept when the pipe went)."""
        receiver = self._receiver
        assert receiver is not None
        leftover, msg_p, socket_id = self._leftover, self._msg_p, self._socket_id
        while not self._closed or leftover:
            if leftover:
                msg = leftover.popleft()
            elif self._socket_closed:
                return
            else:
                rv = lib.nng_recvmsg(socket_id, msg_p, lib.NNG_FLAG_NONBLOCK)
                if rv == lib.NNG_EAGAIN:
                    return
                if rv:
                    self._gone(f"receive failed: {_error_text(rv)}")
                    return
                msg = msg_p[0]
            try:
                frames = decode(msg, self.limits)
            except LinkProtocolError as exc:
                self._fail(exc.reason)
                return
            if frames is None:
                self._gone("connection closed by the peer")
                self.abort("connection closed by the peer")
                return
            receiver(frames)
        if self._watching and not self._socket_closed:
            # closed by this node, lingering: nothing more is read (as recv would not), and
            # a readable descriptor left watched would call back on every loop iteration
            self._watching = False
            self._loop.remove_reader(self._recv_fd)

    async def recv(self) -> list[Buffer]:
        if self._receiver is not None:  # messages go to the receiver: only the end is left
            await asyncio.shield(self._done)
            raise self._closed_error()
        while True:
            if self._leftover:
                msg = self._leftover.popleft()
            elif self._closed:
                raise self._closed_error()
            else:
                rv = lib.nng_recvmsg(self._socket_id, self._msg_p, lib.NNG_FLAG_NONBLOCK)
                if rv == 0:
                    msg = self._msg_p[0]
                elif rv == lib.NNG_EAGAIN:
                    await self._wait_recv()
                    continue
                else:
                    self._gone(f"receive failed: {_error_text(rv)}")
                    continue
            try:
                frames = decode(msg, self.limits)
            except LinkProtocolError as exc:
                self._fail(exc.reason)
                raise self._closed_error() from None
            if frames is None:
                self._gone("connection closed by the peer")
                self.abort("connection closed by the peer")
                continue
            return frames

    def close(self) -> None:
        if self._closed:
            return
        if not self._peer_gone.is_set():
            with contextlib.suppress(LinkClosed):
                self._push(end_of_stream(), 0)
                self._end_batch()  # what is queued goes now: the linger waits for the writer
            if self._closed:  # sending found the socket broken: nothing to flush
                self.abort(self._reason or "closed")
                return
        self._set_closed("closed by this node")
        self._closer = self._loop.create_task(self._linger())

    def abort(self, reason: str) -> None:
        if not self._closed:
            self._set_closed(reason)
        if self._closer is None or self._closer.done():
            self._shutdown()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    # -- closing ----------------------------------------------------------------------

    async def _linger(self) -> None:
        """Graceful close: flush, send end of stream, wait for the peer to hang up."""
        try:
            async with asyncio.timeout(LINGER):
                while self._writer is not None and not self._socket_closed:
                    await asyncio.shield(self._writer)
                await self._peer_gone.wait()
        except TimeoutError:
            pass
        finally:
            self._closer = None
            self._shutdown()

    def _shutdown(self) -> None:
        """Close the socket now, drop what was not sent, and finish ``wait_closed``."""
        if self._closer is not None and not self._closer.done():
            self._closer.cancel()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        while self._pending:
            msg, _ = self._pending.popleft()
            lib.nng_msg_free(msg)
        self._pending_bytes = 0
        if not self._socket_closed:
            self._socket_closed = True
            if self._watching:  # stop watching before NNG closes the descriptor
                self._watching = False
                self._loop.remove_reader(self._recv_fd)
            for fd, waiter in (
                (self._recv_fd, self._recv_waiter),
                (self._send_fd, self._send_waiter),
            ):
                if waiter is not None:  # stop watching before NNG closes the descriptor
                    self._loop.remove_reader(fd)
                    if not waiter.done():
                        waiter.set_result(None)
            self._sock.close()
        self._wake_senders()
        if not self._done.done():
            tasks = [t for t in (self._writer, self._closer) if t is not None and not t.done()]
            if tasks:
                finish = self._loop.create_task(asyncio.wait(tasks))
                finish.add_done_callback(lambda _: self._finish())
            else:
                self._finish()

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _pipe_removed(self, pipe: pynng.Pipe) -> None:
        """pynng's callback, run in an NNG thread: hop onto the event loop.

        Only this link's pipe counts: a stranger's pipe that the monogamous
        socket refused is removed too, and must not end the link.
        """
        if pipe.id != self._pipe_id:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to tell
            self._loop.call_soon_threadsafe(self._pipe_gone)

    def _pipe_gone(self) -> None:
        """The pipe is gone: keep what NNG already received, then close the socket."""
        if self._peer_gone.is_set():
            return
        self._peer_gone.set()
        if not self._socket_closed and self._closer is None:  # after our own close: unread
            while lib.nng_recvmsg(self._socket_id, self._msg_p, lib.NNG_FLAG_NONBLOCK) == 0:
                self._leftover.append(self._msg_p[0])
            if self._receiver is not None:
                self._readable()
        self._gone(
            "connection closed: the peer hung up, or NNG refused a message over "
            f"recv_max_size ({recv_max_size(self.limits)} bytes) and dropped the pipe"
        )
        if self._closer is None:
            self._shutdown()

    def _gone(self, reason: str) -> None:
        if not self._closed:
            self._set_closed(reason)
        if self._receiver is not None and (self._closer is None or self._closer.done()):
            # no reader calls recv() to learn of it: close the socket, which ends wait_closed
            self._shutdown()

    def _fail(self, reason: str) -> None:
        """Malformed input or a stuck peer: log, abort, and make ``recv`` raise."""
        if self._error is None:
            self._protocol_error(reason)
        while self._leftover:
            lib.nng_msg_free(self._leftover.popleft())
        self.abort(reason)

    def _on_closed(self) -> None:
        self._wake_senders()

    def _wake_senders(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()


def _ready(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _error_text(rv: int) -> str:
    return ffi.string(lib.nng_strerror(rv)).decode(errors="replace")
