"""The ``shm://`` link: a framed Unix-socket link whose large frames travel in shared memory.

:class:`ShmLink` is a :class:`~synaptic_mesh.transports.stream_link.StreamLink`
(same framing, back-pressure and bad-input handling) that rewrites, on the
way out, every frame after the first of at least ``threshold`` bytes into a
reference to a shared-memory segment, and on the way in maps those segments
read-only (as soon as the message is complete, in the protocol callback) and
hands the router a ``memoryview`` of each mapping in place of the frame. The
router and the node never see the difference, except that the bytes were
not copied on the receiving side.

Link-level messages (never seen by the router), marked by a first frame that
starts with the byte ``0xC1`` (never the first byte of msgpack, so never a
router header)::

    SHM      0xC1 msgpack([1, [[index, name, length, generation], ...]])  frames...
    RELEASE  0xC1 msgpack([2, [[name, generation], ...]])

A SHM message is followed by the original message's frames, each frame sent
through a segment replaced by an empty placeholder; ``index`` is its place in
that list. RELEASE goes back to the sender once the receiver has dropped
every view of a frame (a ``weakref.finalize`` on the mapping, which may run
in any thread, so releases are queued and sent from the event loop). The
sender then writes the next frame into the same warm segment.

Bad input (an unknown op, a malformed reference, a segment that does not
exist, is too small or was not created by the peer's pid as the kernel
reports it through ``SO_PEERCRED``, a RELEASE for a segment not in use)
closes the link with a :class:`~synaptic_mesh.transports.base.LinkProtocolError`;
the router logs it and reports a ``BadFrame``.

Segments are unlinked when the link is done with them: at once when it is
aborted; after a graceful close with frames in flight, only once the peer
has closed its side (the link half-closes and waits for the peer's EOF, at
most ``LINGER`` seconds). The peer maps each segment when it reads the
message, before it can read the EOF that makes it close, so a frame in
flight is never unlinked before its receiver mapped it.

Why a subclass and not a wrapper: the link-level messages are handled in
``StreamLink._frame_done``, the callback that completes a message, so
RELEASEs free segments at once and SHM messages are mapped before the EOF
that follows them is seen; small messages pay one first-byte test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from synaptic_mesh.transports import shm_segments as segments
from synaptic_mesh.transports.base import Buffer, Link, LinkClosed
from synaptic_mesh.transports.stream_link import LinkLimits, StreamLink, StreamListener

MARK = 0xC1
_MARK = bytes([MARK])
SHM, RELEASE = 1, 2
LINGER = 2.0
"""Seconds a gracefully closing link waits for the peer to read what it sent."""
MAX_CONTROL = 64 * 1024
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True)
class ShmOptions:
    """``threshold``: frames of at least this many bytes go through shared memory.
    ``pool``: bytes of segments one link may hold (0: never use shared memory).
    ``idle``: seconds after which a free segment is unlinked."""

    threshold: int = 64 * 1024
    pool: int = 512 * 1024 * 1024
    idle: float = 30.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.pool < 0 or self.idle < 0:
            raise ValueError("threshold must be >= 1 byte, pool >= 0 bytes and idle >= 0 s")


def _nbytes(frame: Buffer) -> int:
    return len(frame) if type(frame) is bytes else memoryview(frame).nbytes


class ShmLink(StreamLink):
    """One side of an ``shm://`` link (see module docstring)."""

    def __init__(
        self,
        limits: LinkLimits,
        role: str,
        options: ShmOptions,
        on_connected: Callable[[Link], None] | None = None,
        live: set[ShmLink] | None = None,
    ) -> None:
        super().__init__(limits, role, on_connected)
        self.options = options
        self.pool = segments.SegmentPool(options.pool)
        self.peer_pid: int | None = None
        self.peer_uid: int | None = None
        self.use_shm = False
        self.frames_mapped = 0
        self._loop = asyncio.get_running_loop()
        self._live = live
        self._releases: deque[tuple[str, int]] = deque()
        self._release_scheduled = False
        self._trim_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    # -- connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        peercred = getattr(socket, "SO_PEERCRED", None)  # Linux; elsewhere no shared memory
        if sock is not None and sock.family == socket.AF_UNIX and peercred is not None:
            raw = sock.getsockopt(socket.SOL_SOCKET, peercred, _PEERCRED.size)
            self.peer_pid, self.peer_uid, _ = _PEERCRED.unpack(raw)
        self.use_shm = (
            self.options.pool > 0 and self.peer_uid == os.getuid() and segments.available()
        )
        if self._live is not None:
            self._live.add(self)
        super().connection_made(transport)
        where = transport.get_extra_info("sockname") or transport.get_extra_info("peername")
        self._label = f"{self._role} shm link {where or '?'} (peer pid {self.peer_pid})"

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._done_with_segments()

    def close(self) -> None:
        """Graceful: with frames in flight, half-close and unlink only after the peer's EOF."""
        transport = self._transport
        if self._closed or transport is None or not self.pool.busy or not transport.can_write_eof():
            super().close()
            if transport is None:
                self._done_with_segments()
            return
        self._uncork()
        self._set_closed("closed by this node")
        transport.write_eof()
        self._linger = self._loop.call_later(LINGER, transport.abort)

    def abort(self, reason: str) -> None:
        super().abort(reason)
        self._done_with_segments()

    def _done_with_segments(self) -> None:
        self.pool.close()
        for timer in (self._trim_timer, self._linger):
            if timer is not None:
                timer.cancel()
        if self._live is not None:
            self._live.discard(self)

    # -- sending ----------------------------------------------------------------------

    def send(self, frames: Sequence[Buffer]) -> Awaitable[None]:  # type: ignore[override]
        """``StreamLink.send``, with large frames through segments (see module docstring).

        A plain function returning the awaitable: small messages, the common
        case, pay no extra coroutine.
        """
        if self.use_shm:
            threshold = self.options.threshold
            for i in range(1, len(frames)):
                if _nbytes(frames[i]) >= threshold:
                    return self._send_shm(frames)
        return super().send(frames)

    def try_send(self, frames: Sequence[Buffer]) -> bool:
        """``StreamLink.try_send`` for a message with no frame for a segment."""
        if self.use_shm:
            threshold = self.options.threshold
            for i in range(1, len(frames)):
                if _nbytes(frames[i]) >= threshold:
                    return False
        return super().try_send(frames)

    async def _send_shm(self, frames: Sequence[Buffer]) -> None:
        """Copy the large frames into segments, then send the SHM message."""
        out: list[Buffer] = [b"", *frames]
        refs: list[list[Any]] = []
        used: list[segments.Segment] = []
        threshold = self.options.threshold
        for index in range(1, len(frames)):
            frame = frames[index]
            if _nbytes(frame) < threshold:
                continue
            view = memoryview(frame)
            try:
                if view.ndim != 1 or view.format != "B":
                    view = view.cast("B")
            except TypeError:
                continue  # not contiguous: the socket path copies it as it can
            size = view.nbytes
            segment = self.pool.acquire(size)
            if segment is None:
                continue  # pool exhausted or /dev/shm full: this frame goes over the socket
            segment.map[:size] = view  # the one copy: into the warm, already mapped segment
            used.append(segment)
            refs.append([index, segment.name, size, segment.generation])
            out[index + 1] = b""
        if refs:
            out[0] = _MARK + msgpack.packb([SHM, refs])
            self._schedule_trim()
        else:
            out = list(frames)
        try:
            await super().send(out)
        except ValueError:  # refused before anything was written
            for segment in used:
                self.pool.give_back(segment)
            raise

    # -- receiving ------------------------------------------------------------------------

    def _take(self, message: list[Buffer]) -> None:
        """A message is complete (a protocol callback): handle link-level messages here.

        Mapping segments in the callback, not in ``recv``, matters at close:
        the bytes of a SHM message come before the sender's EOF, so every
        segment it references is mapped before this side closes its socket,
        which is what the sender waits for before it unlinks (see ``close``).
        """
        if message[0][:1] != _MARK:
            super()._take(message)
            return
        mapped = self._control(message)
        if mapped is not None:
            super()._take(mapped)

    def _control(self, frames: list[Buffer]) -> list[Buffer] | None:
        """Handle a link-level message: the mapped frames of a SHM, ``None`` for RELEASE
        (or when bad input closed the link; ``recv`` then raises the error)."""
        try:
            items = msgpack.unpackb(
                memoryview(frames[0])[1:],
                raw=False,
                max_bin_len=0,
                max_ext_len=0,
                max_map_len=0,
                max_str_len=256,
                max_array_len=1024,
            )
            if type(items) is not list or len(items) != 2 or type(items[1]) is not list:
                raise ValueError(f"expected [op, [...]], got {items!r:.80}")
            if items[0] == RELEASE and len(frames) == 1:
                for name, generation in items[1]:
                    self.pool.release(name, generation)
                self._schedule_trim()
                return None
            if items[0] == SHM:
                return self._map(frames[1:], items[1])
            raise ValueError(f"unknown shm operation {items[0]!r} with {len(frames)} frames")
        except (ValueError, TypeError, segments.BadSegment, msgpack.UnpackException) as exc:
            self._fail(f"bad shared-memory message: {exc}")
            return None

    def _map(self, frames: list[Buffer], refs: list[Any]) -> list[Buffer]:
        total = sum(_nbytes(f) for f in frames)
        seen: set[int] = set()
        for ref in refs:
            if type(ref) is not list or len(ref) != 4:
                raise ValueError(f"a segment reference is [index, name, length, use], got {ref!r}")
            index, name, length, generation = ref
            if type(index) is not int or not 0 <= index < len(frames) or index in seen:
                raise ValueError(f"segment reference to frame {index!r} of {len(frames)}")
            if _nbytes(frames[index]):
                raise ValueError(f"frame {index} is sent through a segment but is not empty")
            if type(name) is not str or type(generation) is not int:
                raise ValueError(f"bad segment name or use in {ref!r}")
            if type(length) is not int or not 1 <= length <= self.limits.max_frame:
                raise ValueError(f"segment frame length {length!r} is outside 1..max_frame")
            total += length
            if total > self.limits.max_message:
                raise ValueError(f"message of {total} bytes exceeds max_message")
            seen.add(index)
            mapping = segments.map_received(name, length, self.peer_pid)
            finalizer = weakref.finalize(mapping, self._released, name, generation)
            finalizer.atexit = False
            frames[index] = memoryview(mapping)
            self.frames_mapped += 1
        return frames

    def _released(self, name: str, generation: int) -> None:
        """Every view of a received frame is gone (any thread, maybe inside the GC)."""
        self._releases.append((name, generation))
        if not self._release_scheduled:
            self._release_scheduled = True
            with contextlib.suppress(RuntimeError):  # a closed loop: the sender is gone too
                self._loop.call_soon_threadsafe(self._send_releases)

    def _send_releases(self) -> None:
        self._release_scheduled = False  # before draining: a release appended now reschedules
        batch: list[tuple[str, int]] = []
        while self._releases and len(batch) < 512:
            batch.append(self._releases.popleft())
        if self._releases:  # more than one message's worth: the rest on the next turn
            self._release_scheduled = True
            self._loop.call_soon(self._send_releases)
        if batch and not self._closed:
            with contextlib.suppress(LinkClosed):
                StreamLink.send_nowait(self, [_MARK + msgpack.packb([RELEASE, batch])])

    def _schedule_trim(self) -> None:
        if self._trim_timer is None and not self._closed:
            self._trim_timer = self._loop.call_later(self.options.idle, self._trim)

    def _trim(self) -> None:
        self._trim_timer = None
        if self.pool.trim(self.options.idle) or self.pool.busy:
            self._schedule_trim()


class ShmConnector:
    """Listens on and dials Unix sockets carrying :class:`ShmLink` framing.

    ``live`` holds every link not yet fully closed, so the transport can wait
    for them (and their segments) at close.
    """

    def __init__(self, limits: LinkLimits, options: ShmOptions) -> None:
        self.limits = limits
        self.options = options
        self.live: set[ShmLink] = set()

    async def listen(self, address: str, accept: Callable[[Link], None]) -> StreamListener:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(
            lambda: ShmLink(self.limits, "accepted", self.options, accept, self.live), address
        )
        os.chmod(address, 0o600)  # only this user's processes may connect
        return StreamListener(server, address)

    async def dial(self, address: str, timeout: float) -> Link:
        loop = asyncio.get_running_loop()
        _, link = await asyncio.wait_for(
            loop.create_unix_connection(
                lambda: ShmLink(self.limits, "dialed", self.options, None, self.live), address
            ),
            timeout or None,
        )
        return link
