"""Interest of a ``zmq+pubsub`` node: what it subscribes, and what its XPUB learns the mesh wants.

A mixin of :class:`~synaptic_mesh.transports.zmq_pubsub.ZmqPubSubTransport`,
kept apart so that the transport module holds lifecycle and publishing only;
it uses the transport's sockets and settings.

**Interest as ZeroMQ subscriptions.** A subscription on a pattern subscribes
the SUB socket to

* ``\\x01`` + the pattern's literal tokens (``tot.*.x`` -> ``\\x01tot.``; a
  literal pattern ``a.b`` -> ``\\x01a.b\\x00``): the ZeroMQ prefix that makes the
  proxy forward plain messages (topic ``\\x01`` + subject + ``\\x00``); the exact
  pattern is then applied locally; and
* ``\\x03`` + the pattern: an announcement no message ever matches, so every
  publisher learns the exact pattern (``knows_interest``).

**Queue groups** give each message to exactly one member: a member subscribes
to its own topic ``\\x02 queue \\x00 pattern \\x00 member-id \\x00``. Publishers'
XPUB sockets (``XPUB_VERBOSE``) see every subscription, forwarded by the
proxy (``XPUB_VERBOSER``), so each publisher knows the members of each group
and their patterns; it picks one member round-robin and publishes a copy on
that member's topic only. Members on several nodes share one group.

**Knowing interest.** ``subscribe`` returns once this node's own XPUB has seen
its subscription come back from the proxy: the proxy then filters for it and
has forwarded it to every publisher. A publish with ``reply_to`` that matches
nothing this node knows first runs a barrier (a probe subscription through
the proxy; what the proxy forwarded before it has then arrived here) and
only then publishes the "no responders" status. A queue-group publish with no
member known runs the same barrier before it gives up.

**Foreign input.** Any XSUB connected to the proxy may also send other
messages upstream, which the proxy passes to every publisher's XPUB as they
are. Only a one-frame message starting with ``\x01`` or ``\x00`` is a
(un)subscription; any other is refused through ``on_bad_frame`` and changes
no interest. A subscription whose topic is none of ours is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from synaptic_mesh.runtime.subjects import SubjectTable, validate_pattern
from synaptic_mesh.transports.base import Handler, HandlerSubscription, Subscription
from synaptic_mesh.transports.zmq_io import SocketIO
from synaptic_mesh.transports.zmq_pubsub_options import PubSubSettings
from synaptic_mesh.transports.zmq_pubsub_stats import Sequences
from synaptic_mesh.transports.zmq_pubsub_wire import (
    ANNOUNCE,
    MEMBER,
    PLAIN,
    announce_topic,
    member_parts,
    member_topic,
    plain_prefix,
    probe_topic,
)

log = logging.getLogger("synaptic_mesh.zmq.pubsub")


class PubSubInterest:
    """Subscriptions of this node and the mesh's, as this node's XPUB learned them."""

    id: str
    address: str | None
    settings: PubSubSettings
    _pub: SocketIO | None
    _sub: SocketIO | None
    _connected: bool
    _proxy_seen: asyncio.Event | None
    _sequences: Sequences
    # what this node subscribed
    _local: SubjectTable[HandlerSubscription]
    _members: dict[bytes, HandlerSubscription]
    _topic_of: dict[HandlerSubscription, list[bytes]]
    _refs: dict[bytes, int]
    _seen: dict[bytes, asyncio.Future[None]]
    # what the mesh subscribed, as this node's XPUB learned it
    _interest: SubjectTable[Any]
    _patterns: set[str]
    _known_members: set[bytes]
    _bad: Callable[[str, bytes, list[zmq.Frame]], None]  # refuse input (PubSubReceive)

    def _check_open(self) -> None:
        raise NotImplementedError

    async def _barrier(self, subject: str | None) -> None:
        """Wait until what the proxy forwarded before now has reached this node's XPUB."""
        topic = probe_topic()
        future = self._seen[topic] = asyncio.get_running_loop().create_future()
        self._subscription(zmq.SUBSCRIBE, topic)
        try:
            await asyncio.wait_for(future, self.settings.flush_timeout)
        except TimeoutError:
            if subject is not None:
                log.warning(
                    "%s: proxy barrier timed out before the verdict on %s", self.id, subject
                )
            else:
                raise
        finally:
            self._seen.pop(topic, None)
            self._subscription(zmq.UNSUBSCRIBE, topic)

    # -- subscribe ---------------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        """Subscribe; returns once the proxy has this node's subscription (``flush_timeout``)."""
        self._check_open()
        validate_pattern(pattern)
        sub = HandlerSubscription(self, pattern, handler, queue)
        if queue is None:
            self._local.add(pattern, sub)
            topics = [plain_prefix(pattern), announce_topic(pattern)]
        else:
            SubjectTable().add(pattern, None, queue)  # validates the queue name
            topic = member_topic(queue, pattern, os.urandom(6).hex())
            self._members[topic] = sub
            topics = [topic]
        self._topic_of[sub] = topics
        waits = [self._add_topic(t) for t in topics]
        pending = [w for w in waits if w is not None and not w.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.settings.flush_timeout)
            if late:
                log.warning("%s: the proxy did not confirm %s in time", self.id, pattern)
        return sub

    def _add_topic(self, topic: bytes) -> asyncio.Future[None] | None:
        count = self._refs.get(topic, 0)
        self._refs[topic] = count + 1
        if count:
            return self._seen.get(topic)
        assert self._sub is not None
        future = None
        if topic[0] != PLAIN:  # announcements and members come back through the XPUB
            future = self._seen[topic] = asyncio.get_running_loop().create_future()
        self._subscription(zmq.SUBSCRIBE, topic)
        return future

    def _forget(self, sub: HandlerSubscription) -> None:
        topics = self._topic_of.pop(sub, None)
        if topics is None:
            return
        if sub.queue is None:
            self._local.remove(sub.pattern, sub)
        else:
            self._members.pop(topics[0], None)
        for topic in topics:
            count = self._refs.get(topic, 0) - 1
            if count > 0:
                self._refs[topic] = count
                continue
            self._refs.pop(topic, None)
            self._seen.pop(topic, None)
            self._subscription(zmq.UNSUBSCRIBE, topic)
            self._sequences.forget(topic)

    # -- what the mesh wants (this node's XPUB) ----------------------------------------

    def _subscription(self, option: int, topic: bytes) -> None:
        """(Un)subscribe the SUB socket; a socket option may eat an edge of its FD."""
        sub = self._sub
        if sub is not None and not sub.sock.closed:
            sub.sock.setsockopt(option, topic)
            sub.kick()
            if self._pub is not None:
                self._pub.kick()

    def _on_interest(self, parts: list[zmq.Frame]) -> None:
        message = parts[0].bytes
        if len(parts) == 1 and message[:1] in (b"\x00", b"\x01"):
            self._interest_changed(message[0] == 1, message[1:])
            return
        # An XSUB may send any message upstream; the proxy passes it to every publisher.
        self._bad(
            f"a message that is not a subscription came upstream through the proxy "
            f"({len(parts)} frame(s), first byte {message[:1].hex() or 'none'})",
            message,
            parts,
        )

    def _on_proxy_event(self, parts: list[zmq.Frame]) -> None:
        """Follow the XPUB's connection: publishes while it is down are counted."""
        event = parse_monitor_message([p.bytes for p in parts])["event"]
        up = event == zmq.EVENT_HANDSHAKE_SUCCEEDED
        if up != self._connected:
            log.log(
                logging.INFO if up else logging.WARNING,
                "%s: proxy %s %s",
                self.id,
                self.address,
                "connected" if up else "unreachable; publishes queue until it is back",
            )
        self._connected = up
        if not up:  # a restarted proxy forwards every live subscription anew
            self._interest.clear()
            self._patterns.clear()
            self._known_members.clear()

    def _interest_changed(self, on: bool, topic: bytes) -> None:
        if not topic:  # the proxy's own subscription to everything: it is there
            if on and self._proxy_seen is not None:
                self._proxy_seen.set()
            return
        kind = topic[0]
        try:
            if kind == ANNOUNCE:
                pattern = validate_pattern(topic[1:].decode())
                if on and pattern not in self._patterns:
                    self._patterns.add(pattern)
                    self._interest.add(pattern, pattern)
                elif not on and pattern in self._patterns:
                    self._patterns.discard(pattern)
                    self._interest.remove(pattern, pattern)
            elif kind == MEMBER:
                queue, pattern, _member = member_parts(topic)
                if on and topic not in self._known_members:
                    self._interest.add(validate_pattern(pattern), topic, queue)
                    self._known_members.add(topic)
                elif not on and topic in self._known_members:
                    self._known_members.discard(topic)
                    self._interest.remove(pattern, topic, queue)
        except (ValueError, UnicodeDecodeError) as exc:
            log.debug("%s: ignoring a foreign subscription %r: %s", self.id, topic[:64], exc)
            return
        if on:
            future = self._seen.get(topic)
            if future is not None and not future.done():
                future.set_result(None)
