"""Per-link and per-peer state of the subject router.

A :class:`LinkState` wraps one :class:`~synaptic_mesh.transports.base.Link`
with what the router needs on top of it: the interest exchanged over it, the
credit window for MSG traffic, the queue of received messages waiting
behind a delivery in progress, FLUSH barriers in flight, heartbeat times and counters. A
:class:`Peer` is one remote node; it usually has one link, two for a moment
when both nodes of a full mesh dial each other (both are kept, the first one
carries the traffic, see ``router.py``).

Why credit and not only socket back-pressure: the router reads every link
continuously, so heartbeats and interest updates keep flowing while a slow
handler holds data back. Without a window that would buffer without bound;
with it a receiver holds at most ``window`` bytes and messages per link and
the sender waits for CREDIT, which the receiver returns as it delivers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.subjects import Match
from synaptic_mesh.transports.base import Buffer, Link, LinkClosed, LinkProtocolError

Key = tuple[str, "str | None"]
"""One unit of interest: ``(pattern, queue)``."""

BATCH_BYTES = 64 * 1024
"""A MSGS goes out once its messages reach this many bytes (or ``proto.MAX_BATCH`` messages)."""


@dataclass
class LinkStats:
    """MSG traffic over one link (control messages are not counted).

    ``messages_*`` count messages, each message of a MSGS included;
    ``batches_*`` count the MSGS that carried several of them.
    """

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    batches_sent: int = 0
    batches_received: int = 0

    def __iadd__(self, other: LinkStats) -> LinkStats:
        self.messages_sent += other.messages_sent
        self.bytes_sent += other.bytes_sent
        self.messages_received += other.messages_received
        self.bytes_received += other.bytes_received
        self.batches_sent += other.batches_sent
        self.batches_received += other.batches_received
        return self


class Peer:
    """A remote node with at least one link up; an item of the router's subject table."""

    __slots__ = ("announced", "id", "keys", "links")

    def __init__(self, peer_id: str) -> None:
        self.id = peer_id
        self.announced = False  # on_peer_up fired (once its first link synced)
        self.links: list[LinkState] = []
        self.keys: dict[Key, int] = {}  # interest -> number of this peer's links carrying it

    def __repr__(self) -> str:
        return f"<Peer {self.id} links={len(self.links)}>"

    async def send(
        self,
        subject: str,
        reply_to: str | None,
        queues: Sequence[str],
        hops: int,
        frames: Any,
        size: int,
    ) -> None:
        """Send one MSG over the peer's first live link (so order per peer holds).

        ``size`` is the bytes of ``frames``, which the caller has counted.
        """
        state = self._live_link()
        if state is None:
            raise LinkClosed(f"no open link to peer {self.id}")
        header = proto.msg_header(subject, reply_to, queues, hops)
        await state.send_msg(header, frames, len(header) + size)

    def send_now(
        self,
        subject: str,
        reply_to: str | None,
        queues: Sequence[str],
        hops: int,
        frames: Any,
        size: int,
    ) -> bool:
        """``send`` if it needs no waiting (credit and room on the link); else ``False``.

        ``size`` is the bytes of ``frames``, which the caller has counted.
        """
        state = self._live_link()
        if state is None:
            return False
        if reply_to is None and len(frames) == 1:
            return state.try_send_one(subject, queues, hops, frames[0], size)
        header = proto.msg_header(subject, reply_to, queues, hops)
        return state.try_send_msg(header, frames, len(header) + size)

    def _live_link(self) -> LinkState | None:
        """The first link not closed: every MSG to this peer takes it, so order per peer holds."""
        for state in self.links:
            if not state.link.closed:
                return state
        return None


class LinkState:
    """Everything the router keeps about one link (see module docstring)."""

    def __init__(
        self,
        link: Link,
        dialed: str | None,
        exports: tuple[str, ...] | None,
        window_msgs: int,
        window_bytes: int,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.link = link
        self.dialed = dialed  # the address we dialed, None for an accepted link
        self.exports = exports  # prefixes this link may learn of (a branch's parent link)
        self.peer: Peer | None = None
        self.up = False  # HELLO exchanged and our interest snapshot sent
        self.synced = loop.create_future()  # the peer applied our snapshot: FLUSHED(0) came
        self.counted = False  # taken off the router's count of unsynced links
        self.sent: set[Key] = set()  # interest we advertised on this link
        self.got: set[Key] = set()  # interest the peer advertised on this link
        self.last_rx = loop.time()
        self.last_ping = loop.time()
        self.bye: str | None = None
        self.stats = LinkStats()
        # sending: the peer's window, what is left of it
        self._peer_window_bytes = 0
        self._credit_msgs = 0
        self._credit_bytes = 0
        self._credit_waiters: list[asyncio.Future[None]] = []
        # sending: the MSGS being gathered, and what the turn's last one-frame MSG was for
        self.batch_bytes = batch_bytes
        self._batch: list[Buffer] | None = None  # its header, then one frame per message
        self._batch_limit = 0  # frames it may hold, its header included
        self._batch_room = 0  # bytes that may still join it
        self._batch_opened = 0  # _batch_room when it opened
        self._batch_cost = 0  # bytes of its header and first message
        self._last_subject: str | None = None
        self._last_queues: Sequence[str] = ()
        self._last_hops = 0
        self._turn_ends = False  # _end_turn is scheduled
        # receiving: our window, what waits for delivery, credit not yet returned
        self.window_msgs = window_msgs
        self.window_bytes = window_bytes
        # received MSG and MSGS waiting for delivery: header, frames, bytes, messages
        self.queue: deque[tuple[list[Any], list[Buffer], int, int]] = deque()
        self.busy = False  # a delivery is under way in a task; later MSGs queue behind it
        self._held_msgs = 0
        self._held_bytes = 0
        self._unreturned_msgs = 0
        self._unreturned_bytes = 0
        self.draining = False  # set by close: deliver nothing more
        self.failure: tuple[LinkProtocolError, list[Buffer]] | None = None  # what closed it
        # FLUSH barriers we sent
        self._tokens = itertools.count(1)
        self._flushes: dict[int, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"<LinkState {self.link.label} peer={self.peer.id if self.peer else None}>"

    @property
    def name(self) -> str:
        """The peer's id when known, else where the link goes; for logs and reports."""
        return self.peer.id if self.peer is not None else self.link.label

    # -- sending MSG under credit ---------------------------------------------

    def open_window(self, msgs: int, nbytes: int) -> None:
        """Start with the window the peer announced in its HELLO."""
        self._peer_window_bytes = nbytes
        self._credit_msgs, self._credit_bytes = msgs, nbytes

    def grant(self, msgs: int, nbytes: int) -> None:
        """CREDIT arrived: the peer consumed that much."""
        self._credit_msgs += msgs
        self._credit_bytes += nbytes
        for waiter in self._credit_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._credit_waiters.clear()

    async def send_msg(self, header: bytes, frames: Sequence[Buffer], size: int) -> None:
        """Send a MSG, waiting for credit first and then for the link's buffer.

        ``size`` is the bytes of the header and ``frames`` together. A message
        larger than the whole window is allowed once more than half of the
        window is free, so nothing is too big to ever be sent. Not the whole
        window: the receiver returns credit only once half a window is used up,
        so up to half of it may stay unreturned for as long as no other traffic
        comes, and a sender waiting for all of it would wait for ever.
        """
        if self._batch is not None:
            self._send_batch()
        window = self._peer_window_bytes
        while self._credit_msgs < 1 or (
            self._credit_bytes < size and (size <= window or self._credit_bytes * 2 <= window)
        ):
            if self.link.closed:
                raise LinkClosed(f"link to {self.name} closed: {self.link.close_reason}")
            waiter = asyncio.get_running_loop().create_future()
            self._credit_waiters.append(waiter)
            await waiter
        self._credit_msgs -= 1
        self._credit_bytes -= size
        try:
            await self.link.send([header, *frames])
        except ValueError:  # refused before anything was written: give the credit back
            self._credit_msgs += 1
            self._credit_bytes += size
            raise
        self.stats.messages_sent += 1
        self.stats.bytes_sent += size

    def try_send_msg(self, header: bytes, frames: Sequence[Buffer], size: int) -> bool:
        """``send_msg`` if credit and the link's buffer allow it now; else ``False``, nothing sent.

        ``size`` is the bytes of the header and ``frames`` together.
        """
        if self._batch is not None:  # first: it goes before, and takes its credit
            self._send_batch()
        if self._credit_msgs < 1 or self._credit_bytes < size:
            return False
        if not self.link.try_send([header, *frames]):
            return False
        self._credit_msgs -= 1
        self._credit_bytes -= size
        self.stats.messages_sent += 1
        self.stats.bytes_sent += size
        return True

    def try_send_one(
        self, subject: str, queues: Sequence[str], hops: int, frame: Buffer, size: int
    ) -> bool:
        """``try_send_msg`` for a message of one frame and no reply subject, gathered in a MSGS
        where that saves link messages.

        The first such message of a turn of the event loop goes at once as a
        MSG, so a lone message waits for nothing. Those that follow it to the
        same subject in the same turn (a burst of tells or replies) are
        gathered in a MSGS, sent when the turn ends, when it is full, or
        before anything else goes over this link, so the link's order holds.
        A MSGS takes credit for each of its messages and all its bytes (its
        header's too) when it is sent, and opens only with that much credit
        for what may join it; the receiver counts it alike. ``size`` is the
        bytes of ``frame``.
        """
        if (
            subject == self._last_subject
            and hops == self._last_hops
            and queues == self._last_queues
            and type(frame) is bytes
            and size <= self.batch_bytes
        ):
            batch = self._batch
            if batch is not None:
                if len(batch) < self._batch_limit and size <= self._batch_room:  # it joins
                    batch.append(frame)
                    self._batch_room -= size
                    return True
                self._send_batch()  # full, or its credit used up: it goes, another opens
            if not self.link.can_send_now():
                return False
            header = proto.msgs_header(subject, queues, hops)
            cost = len(header) + size
            if self._credit_msgs < 1 or self._credit_bytes < cost:
                return False
            self._batch = [header, frame]
            # What may still join: the MSGS's own bounds, and the credit left now
            # (taken when it is sent; every other send on the link sends it first).
            self._batch_limit = 1 + min(proto.MAX_BATCH, self._credit_msgs)
            self._batch_room = self._batch_opened = min(
                self.batch_bytes - size, self._credit_bytes - cost
            )
            self._batch_cost = cost
            return True
        header = proto.msg_header(subject, None, queues, hops)
        if not self.try_send_msg(header, (frame,), len(header) + size):
            return False
        self._last_subject, self._last_queues, self._last_hops = subject, queues, hops
        if not self._turn_ends:
            self._turn_ends = True
            self.link.at_turn_end(self._end_turn)
        return True

    def _end_turn(self) -> None:
        """The turn of the event loop is over: what was gathered goes, nothing more joins it."""
        self._turn_ends = False
        self._last_subject = None
        if self._batch is not None:
            self._send_batch()

    def _send_batch(self) -> None:
        """Send the MSGS being gathered, taking its credit: one per message, and its bytes."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        count = len(batch) - 1
        cost = self._batch_cost + self._batch_opened - self._batch_room
        self._credit_msgs -= count
        self._credit_bytes -= cost
        stats = self.stats
        stats.batches_sent += 1
        stats.messages_sent += count
        stats.bytes_sent += cost
        link = self.link
        try:
            if not link.try_send(batch):
                # The link's buffer passed its high-water mark since the MSGS opened: it
                # goes anyway (at most one MSGS over the mark: none opens while paused).
                link.send_nowait(batch)
        except LinkClosed:
            pass  # the link is gone, and with it what was on its way

    # -- receiving MSG --------------------------------------------------------------

    def admit(self, frames: list[Buffer], count: int = 1) -> int:
        """Count a received MSG (or a MSGS of ``count`` messages) against our window; its
        size in bytes.

        ``_held_*`` counts what the peer sent and we have not credited back
        yet; an honest sender never exceeds the window, except with a message
        larger than the whole window, which it sends only while less than half
        the window is held here (see ``send_msg``). Raises
        ``RouterProtocolError`` for a peer that overran it.
        """
        size = _size(frames)
        self.stats.messages_received += count
        self.stats.bytes_received += size
        self._held_msgs += count
        self._held_bytes += size
        if size > self.window_bytes:
            overrun = (self._held_bytes - size) * 2 >= self.window_bytes
        else:
            overrun = self._held_bytes > self.window_bytes
        if self._held_msgs > self.window_msgs or overrun:
            raise proto.RouterProtocolError(
                f"peer overran its window: {self._held_msgs} messages / {self._held_bytes} "
                f"bytes not yet credited, window {self.window_msgs} / {self.window_bytes}"
            )
        return size

    def delivered(self, size: int, count: int = 1) -> None:
        """One MSG (or a MSGS of ``count`` messages) was handled: return credit once half
        a window is used up."""
        self._unreturned_msgs += count
        self._unreturned_bytes += size
        if (
            self._unreturned_msgs * 2 >= self.window_msgs
            or self._unreturned_bytes * 2 >= self.window_bytes
        ):
            msgs, nbytes = self._unreturned_msgs, self._unreturned_bytes
            self._unreturned_msgs = self._unreturned_bytes = 0
            self._held_msgs -= msgs
            self._held_bytes -= nbytes
            self.send_control(proto.control(proto.CREDIT, msgs, nbytes))

    # -- control ----------------------------------------------------------------------

    def send_control(self, frames: Sequence[Buffer]) -> bool:
        """Send a control message now; False if the link is already closed."""
        if self._batch is not None:
            self._send_batch()
        try:
            self.link.send_nowait(frames)
        except LinkClosed:
            return False
        return True

    def flush(self) -> asyncio.Future[None]:
        """Send a FLUSH barrier; the future resolves at FLUSHED or when the link closes."""
        token = next(self._tokens)
        future = asyncio.get_running_loop().create_future()
        self._flushes[token] = future
        if not self.send_control(proto.control(proto.FLUSH, token)):
            future.set_result(None)
        return future

    def flushed(self, token: int) -> None:
        """FLUSHED arrived; token 0 answers the FLUSH that follows our interest snapshot."""
        future = self.synced if token == 0 else self._flushes.pop(token, None)
        if future is not None and not future.done():
            future.set_result(None)

    def wake(self) -> None:
        """The link closed: release every sender, barrier and the delivery task."""
        self._batch = None
        for waiter in self._credit_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._credit_waiters.clear()
        for future in self._flushes.values():
            if not future.done():
                future.set_result(None)
        self._flushes.clear()
        if not self.synced.done():
            self.synced.set_result(None)


def sole_recipient(
    match: Match[Any], assigned: Sequence[str] | None
) -> tuple[Any, tuple[str, ...]] | None:
    """The one recipient of a subject, with the queue groups to name when forwarding to it.

    That is the common case, worth a fast path: ``match.sole`` (one plain
    subscriber, or one queue group of one member), provided ``assigned``
    (the groups a received MSG makes us serve; ``None`` for our own publish)
    includes its group. ``None`` for anything else.
    """
    sole = match.sole
    if sole is not None and assigned is not None and sole[1] and sole[1][0] not in assigned:
        return None
    return sole


def _size(frames: Sequence[Buffer]) -> int:
    if len(frames) == 2:  # a header and an envelope, as a stream link hands them over: bytes
        head, body = frames
        if type(head) is bytes and type(body) is bytes:
            return len(head) + len(body)
    total = 0
    for f in frames:
        total += len(f) if type(f) is bytes else memoryview(f).nbytes
    return total


frames_size = _size
