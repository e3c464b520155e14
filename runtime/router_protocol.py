"""The router's wire protocol: what two nodes say to each other over one link.

Every link message starts with a *header frame*, a msgpack array whose first
item is an operation code; only ``MSG`` and ``MSGS`` carry more frames. A
``MSG`` carries one message's own frames, passed through untouched (frame 0
the envelope the node encoded, then its attachments). A ``MSGS`` carries a
run of messages for one subject, each a single frame (an envelope without
attachments or reply subject): a sender streaming small messages to one
subject pays one header, one route and one link message for up to
``MAX_BATCH`` of them (see ``LinkState.try_send_one``). Each message of a
``MSGS`` counts as one against the receiver's window, as a ``MSG`` does. The
router never decodes an envelope.

======== =============================================== ============================
op       header                                          meaning
======== =============================================== ============================
HELLO    ``[1, version, node_id, topology, wmsgs, wbytes]`` first message on a link
SUB      ``[2, pattern, queue|nil]``                     interest appears
UNSUB    ``[3, pattern, queue|nil]``                     interest is gone
MSG      ``[4, subject, reply_to|nil, [queue...], hops]`` a message, frames follow
PING     ``[5]`` / PONG ``[6]``                          heartbeat
FLUSH    ``[7, token]`` / FLUSHED ``[8, token]``         barrier: all before it applied
CREDIT   ``[9, messages, bytes]``                        receiver consumed that much
BYE      ``[10, reason]``                                graceful goodbye
MSGS     ``[11, subject, nil, [queue...], hops]``        several messages, one frame each
======== =============================================== ============================

``topology`` is ``"mesh"`` or ``"tree"``; both ends must agree. ``wmsgs`` and
``wbytes`` are the sender's receive window: how much MSG traffic the peer may
have outstanding before it must wait for CREDIT. The ``queue`` list of a MSG
names the queue groups the receiver is responsible for (it delivers each to
exactly one member, its own or further along a tree). Decoders accept and
ignore trailing items a newer version may add, and reject everything else
with :class:`RouterProtocolError` (which closes that link only).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

import msgpack
import msgspec

from synaptic_mesh.runtime.subjects import InvalidSubject, validate_pattern
from synaptic_mesh.transports.base import Buffer, LinkProtocolError

PROTOCOL_VERSION: Final = 2

HELLO: Final = 1
SUB: Final = 2
UNSUB: Final = 3
MSG: Final = 4
PING: Final = 5
PONG: Final = 6
FLUSH: Final = 7
FLUSHED: Final = 8
CREDIT: Final = 9
BYE: Final = 10
MSGS: Final = 11

MAX_HEADER: Final = 64 * 1024
"""Largest header frame accepted, in bytes."""
MAX_QUEUES: Final = 1024
"""Most queue groups one MSG may assign."""
MAX_HOPS: Final = 32
"""A MSG relayed more often than this is dropped: only a misconfigured cycle does that."""
MAX_BATCH: Final = 255
"""Most messages one MSGS carries (a link message has at most 256 frames)."""
TOPOLOGIES: Final = ("mesh", "tree")

_NAMES: Final = {
    HELLO: "HELLO",
    SUB: "SUB",
    UNSUB: "UNSUB",
    MSG: "MSG",
    PING: "PING",
    PONG: "PONG",
    FLUSH: "FLUSH",
    FLUSHED: "FLUSHED",
    CREDIT: "CREDIT",
    BYE: "BYE",
    MSGS: "MSGS",
}
# minimum items per op (after the op code itself)
_ARITY: Final = {
    HELLO: 5,
    SUB: 2,
    UNSUB: 2,
    MSG: 4,
    PING: 0,
    PONG: 0,
    FLUSH: 1,
    FLUSHED: 1,
    CREDIT: 2,
    BYE: 1,
    MSGS: 4,
}

PING_FRAMES: Final = (msgpack.packb([PING]),)
PONG_FRAMES: Final = (msgpack.packb([PONG]),)


class RouterProtocolError(LinkProtocolError):
    """A peer broke the router protocol; the link to it is closed."""


def hello(node_id: str, topology: str, window_msgs: int, window_bytes: int) -> tuple[bytes]:
    return (msgpack.packb([HELLO, PROTOCOL_VERSION, node_id, topology, window_msgs, window_bytes]),)


def interest(op: int, pattern: str, queue: str | None) -> tuple[bytes]:
    return (msgpack.packb([op, pattern, queue]),)


_pack = msgspec.msgpack.Encoder().encode
"""msgspec's encoder: the same bytes as ``msgpack.packb`` for these headers, in half the time."""


def msg_header(subject: str, reply_to: str | None, queues: Sequence[str], hops: int) -> bytes:
    return _pack((MSG, subject, reply_to, queues, hops))


def msgs_header(subject: str, queues: Sequence[str], hops: int) -> bytes:
    return _pack((MSGS, subject, None, queues, hops))


def control(op: int, *args: Any) -> tuple[bytes]:
    return (msgpack.packb([op, *args]),)


def name(op: int) -> str:
    return _NAMES.get(op, f"op {op}")


_unpack_header = functools.partial(
    msgpack.unpackb,
    raw=False,
    strict_map_key=True,
    max_bin_len=0,
    max_ext_len=0,
    max_map_len=0,
    max_array_len=MAX_QUEUES + 8,
)
"""``msgpack.unpackb`` with the header's limits bound once, not passed on every call."""

_usual_msg = msgspec.msgpack.Decoder(tuple[int, str, str | None, list[str], int]).decode
"""A MSG or MSGS header with its item types checked in C (see :func:`decode_header`)."""
_MSG_START: Final = (b"\x95\x04", b"\x95\x0b")
"""The first two bytes of a MSG or MSGS header: an array of 5, its op code."""


def decode_header(frames: Sequence[Buffer]) -> Sequence[Any]:
    """The validated header of one link message: ``[op, field, ...]``.

    A MSG or MSGS as routers write them (no queue group or one) is decoded
    and checked by msgspec; anything else, by msgpack and the checks below.
    Raises :class:`RouterProtocolError` saying exactly what is wrong.
    """
    if not frames:
        raise RouterProtocolError("empty message: a router message has a header frame")
    header = frames[0]
    size = len(header) if type(header) is bytes else memoryview(header).nbytes
    if size > MAX_HEADER:
        raise RouterProtocolError(f"header frame of {size} bytes exceeds {MAX_HEADER}")
    if header[:2] in _MSG_START:
        try:
            op, subject, reply_to, queues, hops = items = _usual_msg(header)
        except (msgspec.MsgspecError, RecursionError):
            pass  # the general path below says what is wrong
        else:
            if (  # the common MSG or MSGS (no queue group or one), checked inline
                (op == MSG or (reply_to is None and 1 < len(frames) <= MAX_BATCH + 1))
                and 0 < len(subject) <= 1024
                and (reply_to is None or 0 < len(reply_to) <= 1024)
                and hops >= 0
                and (not queues or (len(queues) == 1 and 0 < len(queues[0]) <= 1024))
            ):
                return items
    return decode_header_general(frames)


def decode_header_general(frames: Sequence[Buffer]) -> list[Any]:
    """:func:`decode_header` by msgpack and item-by-item checks: any header, every error."""
    if not frames:
        raise RouterProtocolError("empty message: a router message has a header frame")
    header = frames[0]
    size = len(header) if type(header) is bytes else memoryview(header).nbytes
    if size > MAX_HEADER:
        raise RouterProtocolError(f"header frame of {size} bytes exceeds {MAX_HEADER}")
    try:
        items = _unpack_header(header)
    except Exception as exc:
        preview = bytes(header[:16]).hex()
        raise RouterProtocolError(
            f"header frame is not valid msgpack ({exc}); starts {preview}"
        ) from None
    if not isinstance(items, list) or not items or type(items[0]) is not int:
        raise RouterProtocolError(f"header must be an array starting with an op code: {items!r}")
    op = items[0]
    arity = _ARITY.get(op)
    if arity is None:
        raise RouterProtocolError(f"unknown router operation {op}")
    if len(items) < arity + 1:
        raise RouterProtocolError(f"{name(op)} needs {arity} fields, got {len(items) - 1}")
    if op != MSG and op != MSGS and len(frames) != 1:
        raise RouterProtocolError(f"{name(op)} carries no frames, got {len(frames) - 1}")
    if op == MSGS and not 1 < len(frames) <= MAX_BATCH + 1:
        raise RouterProtocolError(f"MSGS carries 1 to {MAX_BATCH} messages, got {len(frames) - 1}")
    _CHECKS[op](items)
    return items


def _str(value: Any, what: str, limit: int = 1024) -> str:
    if type(value) is not str or not value or len(value) > limit:
        raise RouterProtocolError(f"{what} must be a non-empty str of at most {limit} chars")
    return value


def _count(value: Any, what: str, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise RouterProtocolError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _check_hello(items: list[Any]) -> None:
    _, version, node_id, topology, wmsgs, wbytes = items[:6]
    if version != PROTOCOL_VERSION:
        raise RouterProtocolError(
            f"peer speaks router protocol version {version!r}, this node speaks "
            f"{PROTOCOL_VERSION}; upgrade the older node"
        )
    _str(node_id, "HELLO node id", 256)
    if topology not in TOPOLOGIES:
        raise RouterProtocolError(f"HELLO topology must be one of {TOPOLOGIES}, got {topology!r}")
    _count(wmsgs, "HELLO window (messages)", 1)
    _count(wbytes, "HELLO window (bytes)", 1)


def _check_interest(items: list[Any]) -> None:
    pattern, queue = items[1], items[2]
    try:
        validate_pattern(_str(pattern, "SUB/UNSUB pattern"))
    except InvalidSubject as exc:
        raise RouterProtocolError(f"bad pattern in {name(items[0])}: {exc}") from None
    if queue is not None and (_str(queue, "queue name", 1024).split() != [queue]):
        raise RouterProtocolError(f"queue name {queue!r} must have no whitespace")


def _check_msg(items: list[Any]) -> None:
    _str(items[1], "MSG subject")
    if items[2] is not None:
        _str(items[2], "MSG reply_to")
    queues = items[3]
    if type(queues) is not list or len(queues) > MAX_QUEUES:
        raise RouterProtocolError(f"MSG queues must be a list of at most {MAX_QUEUES} names")
    for queue in queues:
        _str(queue, "MSG queue name")
    _count(items[4], "MSG hops")


def _check_msgs(items: list[Any]) -> None:
    if items[2] is not None:
        raise RouterProtocolError("MSGS reply_to must be nil (its messages carry no reply subject)")
    _check_msg(items)


def _check_none(items: list[Any]) -> None:
    return None


def _check_token(items: list[Any]) -> None:
    _count(items[1], f"{name(items[0])} token")


def _check_credit(items: list[Any]) -> None:
    _count(items[1], "CREDIT messages")
    _count(items[2], "CREDIT bytes")


def _check_bye(items: list[Any]) -> None:
    if type(items[1]) is not str:
        raise RouterProtocolError("BYE reason must be a str")


_CHECKS: Final = {
    HELLO: _check_hello,
    SUB: _check_interest,
    UNSUB: _check_interest,
    MSG: _check_msg,
    PING: _check_none,
    PONG: _check_none,
    FLUSH: _check_token,
    FLUSHED: _check_token,
    CREDIT: _check_credit,
    BYE: _check_bye,
    MSGS: _check_msgs,
}
