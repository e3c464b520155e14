"""Subscriptions of a NATS transport: groups sharing one server subscription, and delivery.

A mixin of :class:`~synaptic_mesh.transports.nats.NatsTransport` (and so of
``nats+js://``), kept apart so that the transport module holds lifecycle,
publishing and the ``subscribe`` entry point; it uses the transport's client,
settings and subject map.

``subscribe`` returns once the server has the subscription (a PING/PONG
round trip after a new one), so an ask sent right after a remote ``spawn``
finds its actor. A node's subscriptions sharing a pattern and queue share one
server subscription; the transport hands each message to them in subscription
order (or in turn, for a queue group). ``settled()`` returns once what this
node published is back in its own subscriptions (a PING/PONG); the node's
``wait_idle`` calls it, so a node waiting for idleness sees what it sent
itself through the server, and a publish never waits for it.

Handlers run in each group's own task (nats-py's), in order; a slow
handler lets the client hold up to ``pending_msgs`` messages for it, after
which the client drops them (NATS' slow consumer rule), counted in
``stats.slow_consumer_drops``.

Any client may publish anything on any subject, ours included. A message
that cannot be read (a ``Mesh-Frames`` header that does not describe the
payload, a NATS status other than "no responders", or a message nats-py
itself fails on: see :class:`GuardedNatsClient`) is refused through
``on_bad_frame`` (the node dead-letters it), counted in ``stats.bad_frames``,
and the next message is read as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors
from nats.aio.client import PING_PROTO
from nats.aio.client import Client as NatsClient

from synaptic_mesh.runtime.subjects import SubjectTable
from synaptic_mesh.transports.base import NO_RESPONDERS, BadFrame, Handler, Subscription
from synaptic_mesh.transports.nats_frames import (
    FRAMES_HEADER,
    NO_RESPONDERS_STATUS,
    REPLY_HEADER,
    STATUS_HEADER,
    FrameError,
    unpack,
)
from synaptic_mesh.transports.nats_options import NatsSettings, SubjectMap
from synaptic_mesh.transports.nats_stats import NatsStats

log = logging.getLogger("synaptic_mesh.nats")


class GuardedNatsClient(NatsClient):
    """nats-py's client, refusing a message it cannot read instead of stopping its reader.

    nats-py decodes a message's subject, reply subject and header status line
    (and, for an ordered consumer, reads JetStream metadata from the reply
    subject) in the connection's read loop, where an exception ends the loop:
    one foreign publish with a reply subject that is not UTF-8, or a header
    block that is ``NATS/1.0`` alone, would leave every subscription of the
    connection deaf while the connection still looks up. Here such a message
    goes to ``on_unreadable(subject, payload, error)`` and the loop reads on.
    An ``OSError`` is the connection failing and still ends the loop, for
    nats-py to reconnect.
    """

    def __init__(self, on_unreadable: Callable[[bytes, bytes, Exception], None]) -> None:
        super().__init__()
        self._on_unreadable = on_unreadable
        self.echoes: dict[int, bytes] = {}
        """Per server subscription id, the wire subject none of its members wants: a bus
        member's own sends, which the server sends back to the sender's connection (NATS
        has no per-subscription "no echo"). Dropped here, before nats-py builds a message
        and queues it for the subscription's task."""
        self.echoes_dropped = 0

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        """Queue a PING behind the commands sent before it, as NATS clients do.

        nats-py 2.16 writes the PING of ``flush()`` straight to the socket,
        while the commands sent just before it (a SUB, a PUB) may still wait in
        its pending buffer for the flusher task. The server then answers the
        PING before it has seen them: ``flush`` returned, yet a request from
        another connection found nobody subscribed ("no responders" for an ask
        right after a remote ``spawn``, about one run in twenty on a private
        server). Queued here, the PING leaves after them, and the PONG means
        the server has applied them.
        """
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        await self._send_command(PING_PROTO)
        await self._flush_pending()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        echoes = self.echoes
        if echoes and echoes.get(sid) == subject:
            self.echoes_dropped += 1
            return
        try:
            await super()._process_msg(sid, subject, reply, data, headers)
        except OSError:
            raise
        except Exception as exc:
            self._on_unreadable(subject, data, exc)


class NatsSubscription(Subscription):
    """One mesh subscription: a handler in a :class:`SubscriptionGroup`, or its own nats-py one."""

    __slots__ = ("_owner", "active", "group", "handler", "nats_sub", "pattern", "queue", "unless")

    def __init__(
        self, owner: NatsDelivery, pattern: str, handler: Handler, queue: str | None
    ) -> None:
        self._owner = owner
        self.pattern = pattern
        self.queue = queue
        self.handler = handler
        self.active = True
        self.group: SubscriptionGroup | None = None
        self.nats_sub: Any = None
        self.unless: str | None = None  # the subject it does not hear (subscribe_except)

    async def unsubscribe(self) -> None:
        if not self.active:
            return
        self.active = False
        await self._owner._detach(self)


class SubscriptionGroup:
    """The subscriptions of one transport sharing a ``(pattern, queue)``: one NATS subscription.

    The server sends each message once per connection and key; the group
    hands it to every member in subscription order, or, for a queue group,
    to one member in turn. So the server holds one subscription per key and
    node, and the members of a node hear a message in the order they
    subscribed (NATS' own fan-out order between subscriptions is not defined).
    """

    __slots__ = ("busy", "members", "nats_sub", "pattern", "queue", "turn")

    def __init__(self, pattern: str, queue: str | None) -> None:
        self.pattern = pattern
        self.queue = queue
        self.busy = False  # a message taken off the client's queue, still being handed on
        self.members: list[NatsSubscription] = []
        self.nats_sub: Any = None
        self.turn = 0


class NatsDelivery:
    """Join and leave groups, and hand each message of a group to its members."""

    url: str
    settings: NatsSettings
    subjects: SubjectMap
    stats: NatsStats
    on_bad_frame: list[Callable[[BadFrame], Any]]
    _nc: Any
    _state: str
    _subs: dict[NatsSubscription, None]
    _groups: dict[tuple[str, str | None], SubscriptionGroup]
    _local: SubjectTable[SubscriptionGroup]

    async def _join(self, sub: NatsSubscription) -> None:
        """Add ``sub`` to the group of its key, subscribing on the server for a new key."""
        key = (sub.pattern, sub.queue)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = SubscriptionGroup(sub.pattern, sub.queue)
            self._local.add(sub.pattern, group)
            try:
                group.nats_sub = await self._nc.subscribe(
                    self.subjects.wire(sub.pattern),
                    queue=sub.queue or "",
                    cb=self._callback(group),
                    pending_msgs_limit=self.settings.pending_msgs,
                    pending_bytes_limit=self.settings.pending_bytes,
                )
            except BaseException:
                self._drop_group(group)
                raise
            await self._confirm()
        group.members.append(sub)
        sub.group = group
        self._filter_echoes(group)

    async def _confirm(self) -> None:
        """Wait until the server has applied what was sent (a PING/PONG round trip).

        After a new subscription: a publish from any other connection made
        after ``subscribe`` returned then finds it (no "no responders" for an
        ask sent right after a remote ``spawn``). Skipped while disconnected:
        the client sends the subscription again on reconnect.
        """
        timeout = max(1, int(self.settings.connect_timeout))
        for _attempt in range(2):  # a loaded server may miss one round trip's timeout
            if not self._nc.is_connected:
                return
            try:
                await self._nc.flush(timeout=timeout)
                return
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                failure = exc
        log.warning(
            "%s: the server did not confirm a new subscription in %d s twice (%s): a publish "
            "from another connection may find nobody for a moment",
            self.url,
            timeout,
            type(failure).__name__,
        )

    def _drop_group(self, group: SubscriptionGroup) -> None:
        key = (group.pattern, group.queue)
        if self._groups.get(key) is group:
            del self._groups[key]
            self._local.remove(group.pattern, group)
        if group.nats_sub is not None and self._nc is not None:
            self._nc.echoes.pop(group.nats_sub._id, None)

    def _filter_echoes(self, group: SubscriptionGroup) -> None:
        """Have the client drop what no member of ``group`` hears: when every member leaves
        out the same subject (``subscribe_except``), messages on it go no further than the
        connection's reader. Members still filter themselves: this only saves the work."""
        if group.nats_sub is None:
            return
        left_out = {member.unless for member in group.members}
        unless = left_out.pop() if len(left_out) == 1 else None
        if unless is None:
            self._nc.echoes.pop(group.nats_sub._id, None)
        else:
            self._nc.echoes[group.nats_sub._id] = self.subjects.wire(unless).encode()

    async def _detach(self, sub: NatsSubscription) -> None:
        self._subs.pop(sub, None)
        group, sub.group = sub.group, None
        nats_sub = sub.nats_sub
        if group is not None:
            if sub in group.members:
                group.members.remove(sub)
            if group.members:
                self._filter_echoes(group)
                return
            self._drop_group(group)
            nats_sub = group.nats_sub
        sub.nats_sub = None
        if nats_sub is not None and self._state == "running":
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
                await nats_sub.unsubscribe()

    def _callback(self, group: SubscriptionGroup) -> Callable[[Any], Any]:
        """The nats-py callback of a group: the receive hot path."""
        members = group.members
        mesh = self.subjects.mesh
        read = self._read
        url = self.url

        async def on_message(msg: Any) -> None:
            if not members:
                return
            if msg.headers is None:
                frames: Sequence[Any] = (msg.data,)
                reply = msg.reply
            else:
                got = read(msg)
                if got is None:
                    return
                frames, reply = got
            subject = mesh(msg.subject)
            reply_to = mesh(reply) if reply else None
            if group.queue is None:
                chosen = members if len(members) == 1 else list(members)
            else:
                group.turn += 1
                chosen = [members[group.turn % len(members)]]
            group.busy = True
            try:
                for sub in chosen:
                    if sub.active:
                        try:
                            await sub.handler(subject, frames, reply_to)
                        except Exception:
                            log.exception(
                                "%s: handler of %s failed on %s", url, sub.pattern, subject
                            )
            finally:
                group.busy = False

        return on_message

    async def settled(self) -> None:
        """Return once what this node published has come back to its own subscriptions.

        ``Node.wait_idle`` calls it before it declares the node idle: a message
        a node sent to itself travels through the server, where the node
        cannot see it. A PING/PONG round trip: the server answers the PING
        after it sent us every message published before it, so they are in
        the subscriptions' queues; then let those queues be taken.
        """
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        try:
            await nc.flush(timeout=max(1, int(self.settings.drain_timeout)))
        except (TimeoutError, nats.errors.Error, OSError):
            return
        groups = [g for g in self._groups.values() if g.nats_sub is not None]
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout
        while any(g.busy or g.nats_sub.pending_msgs for g in groups):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    def _read(self, msg: Any) -> tuple[Sequence[Any], str | None] | None:
        """Frames and reply subject of a message with headers; ``None`` if refused."""
        headers = msg.headers
        status = headers.get(STATUS_HEADER)
        if status is not None:
            if status == NO_RESPONDERS_STATUS and not msg.data:
                return NO_RESPONDERS, None
            reason = f"NATS status {status[:16]!r}: only an empty 503 (no responders) is understood"
            self._bad_frame(msg.subject, msg.data, reason)
            return None
        reply = headers.get(REPLY_HEADER) or msg.reply
        lengths = headers.get(FRAMES_HEADER)
        if lengths is None:
            return (msg.data,), reply
        try:
            return unpack(msg.data, lengths), reply
        except FrameError as exc:
            self._bad_frame(msg.subject, msg.data, str(exc))
            return None

    def _unreadable(self, subject: bytes, data: bytes, error: Exception) -> None:
        """Refuse a message nats-py could not read (see :class:`GuardedNatsClient`)."""
        reason = f"nats-py could not read it: {type(error).__name__}: {error}"
        self._bad_frame(subject.decode(errors="replace"), data, reason)

    def _bad_frame(self, wire: str, data: Any, reason: str) -> None:
        """Report an unreadable message on wire subject ``wire``; the node dead-letters it."""
        self.stats.bad_frames += 1
        log.warning("%s: refused a message on %s: %s", self.url, wire, reason)
        bad = BadFrame(
            peer=f"nats publisher on {wire}",
            reason=reason,
            subject=self.subjects.mesh(wire),
            preview=bytes(data[:48]).hex(),
        )
        for hook in list(self.on_bad_frame):
            try:
                hook(bad)
            except Exception:
                log.exception("%s: bad-frame hook %r failed", self.url, hook)
