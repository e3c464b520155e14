"""The native pub-sub lowering of ``nng+tcp``/``nng+ipc`` (opt-in): Pub0 sends, Sub0 receives.

Implements ``patterns.pubsub.PubSubLowering`` structurally. Opt-in only
(``native=survey,bus,pair,pub-sub``): it gives up one promise the generic
lowering keeps, see *Order* below.

Each node of a full mesh has two sockets
(:mod:`~synaptic_mesh.transports.nng_native`):

* a ``Sub0`` listening on its own ``sub`` endpoint, subscribed to everything
  (NNG filters by prefix only; subjects are matched by the router's table);
* a ``Pub0`` dialing the ``sub`` endpoint of every peer, so each dialed pipe
  names the peer it reaches (one pipe per ordered pair of nodes).

Subscriptions are router subscriptions, as in the generic lowering: they are
the interest a publisher resolves and where a received message is delivered.
A publish:

1. resolves the topic in the router's interest table (every node with a plain
   subscription, and per queue group one member node, round-robin, as the
   router chooses); nobody: the message is dropped (at-most-once);
2. waits (at most ``READY_WAIT`` s) until the Pub0 reaches every remote one of
   those nodes; one it cannot reach makes this publish take the generic path
   (``transport.stats.fallbacks``);
3. sends ``[PUB, topic, {node: [queues]}, node id, seq]`` plus the envelope
   once on Pub0 (NNG copies it to every pipe), then delivers it to this node's
   own subscriptions. A receiving node not named in the header drops it; a
   named one delivers it to its plain subscriptions and the queue groups the
   header assigned to it, as a forwarded publish would be.

Order: per publisher and topic, subscribers see messages in publish order
while the Pub0 pipe stays up (one pipe per pair of nodes, FIFO). **Given up**:
order between a native publish and the publisher's other traffic to the same
node, which travels on the router's link (tells, asks, replies, and publishes
that fell back). A publish followed by an ask on the same link may be
overtaken by the ask, which the generic lowering never allows; this is why
the lowering is opt-in (the conformance test
``test_dynamic_subscription_until_unsubscribed`` relies on that order).

Losses: Pub0 drops a message for a pipe whose queue is full, silently. The
queues are deep (:data:`PUB_BUFFER` messages), every message carries a
sequence number per publishing node, and each loss a later message reveals
is counted in ``transport.stats.gaps`` and logged at WARNING (losses at the
very end of a publisher's stream are not detectable).

Bad input: anyone may dial the ``sub`` endpoint with a Pub0. A message that
is not a native publish is logged at ERROR and dead-lettered
(``on_bad_frame``); a well-framed message whose envelope is garbage is
dead-lettered by the node's decoder.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any, Final

import pynng

from synaptic_mesh.runtime.envelope import PUBLISH
from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.transports.base import Handler, Subscription
from synaptic_mesh.transports.nng_native import (
    NativePlumbing,
    NativeSocket,
    pack,
    remote_of,
    unpack,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.pubsub")

PUB: Final = "P"
PUB_BUFFER: Final = 1024
"""Messages NNG queues per pipe (Pub0 ``send_buffer_size``) and on receive (Sub0)."""


class NngPubSub:
    """The native pub-sub lowering of one NNG transport (see module docstring)."""

    def __init__(self, transport: _NngTransport) -> None:
        self.transport = transport
        self.publisher: NativeSocket | None = None
        self.subscriber: NativeSocket | None = None
        self._seq = itertools.count(1)
        self._last: dict[str, int] = {}  # publishing node -> last sequence number seen

    async def start(self, plumbing: NativePlumbing) -> None:
        """Open the two sockets and read the Sub0."""
        size = plumbing.recv_max
        sub = pynng.Sub0(recv_buffer_size=PUB_BUFFER, recv_max_size=size)
        sub.subscribe(b"")
        self.subscriber = NativeSocket(plumbing, sub, listen_as="sub")
        plumbing.add(self.subscriber, "sub")
        self.publisher = NativeSocket(
            plumbing, pynng.Pub0(send_buffer_size=PUB_BUFFER), dials="sub"
        )
        plumbing.add(self.publisher)
        plumbing.spawn(self._serve(plumbing))

    # -- PubSubLowering ------------------------------------------------------------------

    async def publish(self, node: Node, topic: str, message: Any, *, sender: str | None) -> None:
        t = self.transport
        t._check_open()
        publisher = self.publisher
        if publisher is None or publisher.closed:
            raise TransportClosed(f"transport {t.url}: the native publisher is closed")
        targets = await t.native_targets(topic)
        if not targets:
            return  # nobody subscribes: dropped, as a publish nobody wants
        remote = [peer for peer in targets if peer != t.id]
        if await publisher.falls_back(remote, f"publish on {topic}"):
            await node.publish(topic, message, sender=sender)
            return
        frames = node.encode(node.make_envelope(PUBLISH, topic, message, sender))
        if remote:
            header = [PUB, topic, {n: q for n, q in targets.items() if n != t.id}, t.id]
            data = pack([*header, next(self._seq)], frames, t.native.limits)
            publisher.send_now(data, f"publish on {topic}")
        here = targets.get(t.id)
        if here is not None:
            await t.deliver_here(topic, list(frames), None, here)

    async def subscribe(
        self, node: Node, pattern: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        return await node.transport.subscribe(pattern, handler, queue)

    # -- receiving -----------------------------------------------------------------------

    async def _serve(self, plumbing: NativePlumbing) -> None:
        """Read the Sub0: publishes naming this node go to its subscriptions."""
        t = self.transport
        assert self.subscriber is not None
        sock = self.subscriber.sock
        while True:
            try:
                message = await sock.arecv_msg()
            except pynng.NNGException:
                return  # closed
            data = message.bytes
            try:
                header, frames = unpack(data, plumbing.limits)
                kind, topic, targets, sender, seq = header
                if not (
                    kind == PUB
                    and isinstance(topic, str)
                    and isinstance(targets, dict)
                    and isinstance(sender, str)
                    and type(seq) is int
                ):
                    raise ValueError(f"not a native publish (header {header!r:.60})")
                queues = targets.get(t.id)
                if queues is not None and not (
                    isinstance(queues, list) and all(isinstance(q, str) for q in queues)
                ):
                    raise ValueError(f"bad queue list {queues!r:.40}")
            except (ValueError, TypeError) as exc:
                plumbing.bad_input(remote_of(message), f"native publish: {exc}", data)
                continue
            self._count_gap(sender, seq)
            if queues is None:
                continue  # for other nodes only
            t.stats.received += 1
            try:
                await t.deliver_here(topic, frames, None, queues)
            except Exception:
                log.exception("%s: delivering native publish on %s failed", t.id, topic)

    def _count_gap(self, sender: str, seq: int) -> None:
        last = self._last.get(sender)
        self._last[sender] = seq
        if last is not None and seq > last + 1:
            lost = seq - last - 1
            self.transport.stats.gaps += lost
            log.warning(
                "%s: %d native publish(es) from node %s lost (a full Pub0 queue dropped them)",
                self.transport.id,
                lost,
                sender,
            )
