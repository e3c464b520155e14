"""What a ``zmq+pubsub`` transport counts, and the sequence numbers that find its losses.

**Losses are at-most-once, and counted** (``transport.stats``): the
publisher's XPUB has ``XPUB_NODROP`` (``publish`` waits at the high-water
mark instead of dropping), but the proxy drops for a subscriber more than
``PROXY_HWM`` messages behind (a slow handler stops this node's reading).
Every message carries a sequence number per publisher and topic; a receiver
counts each gap (``stats.gaps``) and logs it. Not detectable: losses at the
end of a stream (no later message shows the gap), losses on a topic before
the first message this node received on it (messages published while the
proxy is unreachable are queued, counted in ``stats.unconnected``, and show as
gaps if they are lost and a later message arrives; a publish that waits for
an unreachable proxy behind a full queue raises ``ConnectionError`` after
``connect_timeout``), and
queue-group messages for a member that just left (``stats.orphaned`` counts
those that reached its node). Bad input (a foreign publisher's non-envelope
frames) is reported through ``on_bad_frame`` (the node dead-letters it) and
counted in ``stats.bad_frames``.
"""

from __future__ import annotations

import dataclasses

TRACKED = 100_000
"""Sequence counters kept per side before they are reset (a reset never reads as a gap)."""


@dataclasses.dataclass
class PubSubStats:
    """Counters of one ``zmq+pubsub`` transport (see the module docstring for what each misses)."""

    published: int = 0
    delivered: int = 0
    gaps: int = 0
    """Messages found missing by a sequence gap: the proxy dropped them for this node."""
    orphaned: int = 0
    """Queue-group messages that reached this node for a member that had left."""
    unconnected: int = 0
    """Messages published while the proxy was unreachable: queued (up to the high-water
    mark) and sent when it is back, but lost if no subscriber has rejoined by then."""
    bad_frames: int = 0
    waits: int = 0
    """Times a publish waited because the proxy was a high-water mark behind (nothing lost)."""


class Sequences:
    """Sequence numbers: sent per topic, and last received per ``(publisher, topic)``."""

    __slots__ = ("last", "sent")

    def __init__(self) -> None:
        self.sent: dict[bytes, int] = {}
        self.last: dict[tuple[str, bytes], int] = {}

    def next(self, topic: bytes) -> int:
        """The number of the next message this node publishes on ``topic``."""
        seq = self.sent.get(topic, 0) + 1
        if seq == 1 and len(self.sent) > TRACKED:
            self.sent.clear()
        self.sent[topic] = seq
        return seq

    def lost(self, publisher: str, topic: bytes, seq: int) -> int:
        """How many messages before ``seq`` from ``publisher`` on ``topic`` never arrived."""
        key = (publisher, topic)
        last = self.last.get(key)
        if last is None and len(self.last) > TRACKED:
            self.last.clear()
        self.last[key] = seq
        if last is not None and seq > last + 1:
            return seq - last - 1
        return 0

    def forget(self, topic: bytes) -> None:
        """Drop what was received under ``topic``: no gap is counted across a resubscription."""
        for key in [k for k in self.last if k[1].startswith(topic)]:
            del self.last[key]
