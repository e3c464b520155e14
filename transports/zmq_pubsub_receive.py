"""Receiving side of a ``zmq+pubsub`` node: from its SUB socket to the handlers.

A mixin of :class:`~synaptic_mesh.transports.zmq_pubsub.ZmqPubSubTransport`.
Messages are read ahead into an inbox of at most :data:`RECV_QUEUE`; beyond
it the node stops reading its SUB socket, whose high-water mark then fills
and the proxy drops (counted as gaps, see
:mod:`~synaptic_mesh.transports.zmq_pubsub_stats`). One task delivers them in
order. A message this node published itself was delivered when it was
published and is skipped here; one that is not an envelope from a
``zmq+pubsub`` publisher, or is larger than this node's ``max_message``, is
refused through ``on_bad_frame``, and the next one is read as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from synaptic_mesh.runtime.subjects import InvalidSubject, SubjectTable, validate_subject
from synaptic_mesh.transports.base import BadFrame, HandlerSubscription, LinkProtocolError
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.zmq_io import SocketIO
from synaptic_mesh.transports.zmq_link import incoming
from synaptic_mesh.transports.zmq_pubsub_stats import PubSubStats, Sequences
from synaptic_mesh.transports.zmq_pubsub_wire import MEMBER, plain_topic, split_head, unpack_meta

log = logging.getLogger("synaptic_mesh.zmq.pubsub")

RECV_QUEUE = 1000
"""Messages read ahead of the handlers before the node stops reading its SUB socket."""


class PubSubReceive:
    """Read the SUB socket into an inbox, and deliver each message to its subscriptions."""

    id: str
    address: str | None
    stats: PubSubStats
    on_bad_frame: list[Callable[[BadFrame], Any]]
    _state: str
    _sub: SocketIO | None
    _limits: LinkLimits
    _inbox: deque[list[zmq.Frame]]
    _arrived: asyncio.Event
    _delivering: bool
    _idle: asyncio.Event
    _sequences: Sequences
    _local: SubjectTable[HandlerSubscription]
    _members: dict[bytes, HandlerSubscription]

    def _on_message(self, parts: list[zmq.Frame]) -> None:
        self._inbox.append(parts)
        self._arrived.set()
        if len(self._inbox) >= RECV_QUEUE and self._sub is not None:
            self._sub.pause()  # the SUB's high-water mark then fills; the proxy drops

    async def _read(self) -> None:
        inbox = self._inbox
        with contextlib.suppress(asyncio.CancelledError):
            while self._state == "running":
                if not inbox:
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                parts = inbox.popleft()
                sub = self._sub
                if sub is not None and sub.paused and len(inbox) <= RECV_QUEUE // 2:
                    sub.resume()
                self._delivering = True
                self._idle.clear()
                try:
                    await self._dispatch(parts)
                except Exception:  # a bug, not the peer's fault: keep receiving
                    log.exception("%s: delivering a message failed", self.id)
                finally:
                    self._delivering = False
                    self._idle.set()
                del parts

    async def _dispatch(self, parts: list[zmq.Frame]) -> None:
        head = parts[0].bytes
        topic = head
        try:
            if len(head) > self._limits.max_message:
                raise LinkProtocolError(
                    f"frame 0 of {len(head)} bytes exceeds max_message {self._limits.max_message}"
                )
            topic, packed = split_head(head)
            subject, reply_to, publisher, seq = unpack_meta(packed)
        except LinkProtocolError as exc:
            self._bad(str(exc), topic, parts)
            return
        if publisher == self.id:
            return  # delivered here when it was published
        self._count_gap(publisher, topic, seq)  # a message refused below was not lost
        try:
            frames = incoming(parts[1:], self._limits)
        except LinkProtocolError as exc:
            self._bad(str(exc), topic, parts)
            return
        if topic[0] == MEMBER:
            member = self._members.get(topic)
            if member is None or not member.active:
                self.stats.orphaned += 1
                return
            targets: Sequence[HandlerSubscription] = (member,)
        else:
            if topic != plain_topic(subject):
                self._bad(f"subject {subject!r} does not match its topic", topic, parts)
                return
            try:
                validate_subject(subject)
            except InvalidSubject as exc:
                self._bad(f"invalid subject: {exc}", topic, parts)
                return
            targets = self._local.match(subject).plain
        await self._deliver(targets, subject, frames, reply_to)

    async def _deliver(
        self,
        targets: Sequence[HandlerSubscription],
        subject: str,
        frames: Sequence[Any],
        reply_to: str | None,
    ) -> None:
        """Hand a message to each of ``targets`` still active, in order; log a handler's error.

        Also how a publish reaches this node's own subscribers, at once.
        """
        for target in targets:
            if target.active:
                self.stats.delivered += 1
                try:
                    await target.handler(subject, frames, reply_to)
                except Exception:
                    log.exception(
                        "%s: handler of %s failed on %s", self.id, target.pattern, subject
                    )

    def _count_gap(self, publisher: str, topic: bytes, seq: int) -> None:
        lost = self._sequences.lost(publisher, topic, seq)
        if lost:
            self.stats.gaps += lost
            log.warning(
                "%s: %d message(s) from %s on %r lost between the proxy and this node "
                "(its high-water mark: this node reads too slowly)",
                self.id,
                lost,
                publisher,
                topic[1:].split(b"\x00")[0].decode(errors="replace"),
            )

    def _bad(self, reason: str, topic: bytes, parts: list[zmq.Frame]) -> None:
        self.stats.bad_frames += 1
        log.error("%s: refused a message from the proxy %s: %s", self.id, self.address, reason)
        preview = topic[:32].hex()
        frames = tuple(p.bytes for p in parts[1:])
        report = BadFrame(f"zmq+pubsub proxy {self.address}", reason, None, frames, preview)
        for hook in list(self.on_bad_frame):
            try:
                hook(report)
            except Exception:
                log.exception("%s: on_bad_frame hook failed", self.id)
