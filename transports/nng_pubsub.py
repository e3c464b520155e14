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
from typing import TYPE_CHECKING, Any, Final

import pynng

from synaptic_mesh.runtime.envelope import PUBLISH
from synaptic_mesh.transports.base import Handler, Subscription
from synaptic_mesh.transports.nng_native import (
    NativePlumbing,
    NativeSocket,
    SequenceGaps,
    pack,
    queues_of,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.nng import _NngTransport

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
        self._gaps = SequenceGaps(transport, "native publish(es)", "Pub0")

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
        plumbing.spawn(self.subscriber.serve("native publish", self._publish_header, self._take))

    # -- PubSubLowering ------------------------------------------------------------------

    async def publish(self, node: Node, topic: str, message: Any, *, sender: str | None) -> None:
        t = self.transport
        publisher = t.native.usable(self.publisher, "publisher")
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

    def _publish_header(self, header: Any) -> tuple[str, str, int, list[str] | None]:
        """``(topic, sender, seq, queues here)`` of a native publish; ``ValueError`` otherwise."""
        kind, topic, targets, sender, seq = header
        if not (
            kind == PUB
            and isinstance(topic, str)
            and isinstance(targets, dict)
            and isinstance(sender, str)
            and type(seq) is int
        ):
            raise ValueError(f"not a native publish (header {header!r:.60})")
        return topic, sender, seq, queues_of(targets, self.transport.id)

    async def _take(
        self,
        _message: pynng.Message,
        publish: tuple[str, str, int, list[str] | None],
        frames: list[bytes],
    ) -> None:
        """A publish naming this node goes to its subscriptions."""
        t = self.transport
        topic, sender, seq, queues = publish
        self._gaps.saw(sender, seq)
        if queues is None:
            return  # for other nodes only
        t.stats.received += 1
        await t.native.deliver("native publish", topic, frames, None, queues)
