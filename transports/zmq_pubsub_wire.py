"""Frame 0 of a ``zmq+pubsub`` message: the ZeroMQ topic and the meta after it.

Each message is a multipart ``[topic + meta, *frames]``: frame 0 is the topic
(what ZeroMQ matches prefixes against; it ends with a NUL) followed by
``meta``, msgpack ``[subject, reply_to, publisher id, seq]``, so a message
costs libzmq one frame more than its own. The first byte of a topic says what
it is (:data:`PLAIN`, :data:`MEMBER`, :data:`ANNOUNCE`, :data:`PROBE`); how
subscriptions use each kind is described in
:mod:`~synaptic_mesh.transports.zmq_pubsub_interest`.
"""

from __future__ import annotations

import os

import msgpack

from synaptic_mesh.runtime.subjects import FULL_WILDCARD, SINGLE_WILDCARD
from synaptic_mesh.transports.base import LinkProtocolError

PLAIN, MEMBER, ANNOUNCE, PROBE = 1, 2, 3, 5
"""First byte of a topic: plain message, queue member, pattern announcement, barrier probe."""


def plain_topic(subject: str) -> bytes:
    return b"\x01" + subject.encode() + b"\x00"


def plain_prefix(pattern: str) -> bytes:
    """The ZeroMQ prefix that covers every subject ``pattern`` matches."""
    tokens = pattern.split(".")
    literal: list[str] = []
    for token in tokens:
        if token in (SINGLE_WILDCARD, FULL_WILDCARD):
            return b"\x01" + "".join(t + "." for t in literal).encode()
        literal.append(token)
    return plain_topic(pattern)


def member_topic(queue: str, pattern: str, member: str) -> bytes:
    return b"\x02" + f"{queue}\x00{pattern}\x00{member}\x00".encode()


def member_parts(topic: bytes) -> list[str]:
    """``[queue, pattern, member]`` of a member topic; ``ValueError`` if it is not one."""
    return topic[1:-1].decode().split("\x00")


def announce_topic(pattern: str) -> bytes:
    """A subscription no message ever matches: it tells every publisher the exact pattern."""
    return bytes([ANNOUNCE]) + pattern.encode()


def probe_topic() -> bytes:
    """A fresh barrier probe, subscribed and unsubscribed once."""
    return bytes([PROBE]) + os.urandom(8)


def split_head(head: bytes) -> tuple[bytes, bytes]:
    """Frame 0 -> ``(topic, meta)``: a topic ends at its first (plain) or third (member) NUL."""
    end = -1
    for _ in range(3 if head[:1] == b"\x02" else 1):
        end = head.find(b"\x00", end + 1)
        if end < 0:
            raise LinkProtocolError(f"frame 0 holds no complete topic ({head[:24]!r})")
    return head[: end + 1], head[end + 1 :]


def pack_meta(subject: str, reply_to: str | None, publisher: str, seq: int) -> bytes:
    """The meta that follows the topic in frame 0."""
    return msgpack.packb([subject, reply_to, publisher, seq])


def unpack_meta(packed: bytes) -> tuple[str, str | None, str, int]:
    """``(subject, reply_to, publisher, seq)`` of a meta; ``LinkProtocolError`` if malformed."""
    try:
        subject, reply_to, publisher, seq = msgpack.unpackb(packed)[:4]
    except Exception:
        raise LinkProtocolError(
            "frame 0 has no msgpack meta [subject, reply_to, publisher, seq] after its topic"
        ) from None
    if not (
        isinstance(subject, str)
        and isinstance(publisher, str)
        and isinstance(seq, int)
        and (reply_to is None or isinstance(reply_to, str))
    ):
        raise LinkProtocolError("the meta frame has fields of the wrong type")
    return subject, reply_to, publisher, seq
