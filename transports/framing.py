"""Framing of link messages on a byte stream, and the limits both ends enforce.

Wire format, all integers unsigned 32-bit big-endian::

    connection := PREAMBLE message*
    PREAMBLE   := b"SMLINK1\\n"                 (8 bytes, each side sends it first)
    message    := count  length[count]  payload[0] ... payload[count-1]

Kept apart from :mod:`~synaptic_mesh.transports.stream_link` so that tests
and other stream transports (Unix sockets) can build and check frames
without a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from synaptic_mesh.transports.base import Buffer

PREAMBLE = b"SMLINK1\n"
JOIN_BELOW = 16 * 1024
"""Messages smaller than this are written with one ``write`` call (one syscall)."""


@dataclass(frozen=True)
class LinkLimits:
    """Bounds of one link, checked on both sides.

    ``max_frame``: bytes of one frame. ``max_message``: bytes of all frames of
    one message together. ``max_frames``: frames per message. ``high_water``
    and ``low_water``: the write buffer marks between which a sender waits.
    """

    max_frame: int = 256 * 1024 * 1024
    max_message: int = 256 * 1024 * 1024
    max_frames: int = 256
    high_water: int = 1024 * 1024
    low_water: int = 256 * 1024
    pair_frame: int = field(init=False, repr=False, compare=False, default=-1)
    pair_joined: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if not 0 < self.max_frame <= 0xFFFFFFFF:
            raise ValueError(f"max_frame must be in 1..2**32-1, got {self.max_frame}")
        if self.max_message < 1 or not 1 <= self.max_frames <= 0xFFFF:
            raise ValueError("max_message and max_frames must be positive (max_frames < 65536)")
        if not 0 <= self.low_water <= self.high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        # The bounds of the common two-frame message, folded for the hot paths: the
        # largest frame of one (-1 if a message may not have two frames), and the
        # largest total written with one join.
        object.__setattr__(self, "pair_frame", self.max_frame if self.max_frames >= 2 else -1)
        object.__setattr__(self, "pair_joined", min(JOIN_BELOW - 1, self.max_message))


def _as_buffer(frame: Buffer) -> memoryview | bytes:
    if type(frame) is bytes:
        return frame
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


_PREFIXES = [struct.Struct(f">{n + 1}I") for n in range(9)]
"""The count-and-lengths prefix of messages of 0 to 8 frames, compiled once."""
_PREFIX_2 = _PREFIXES[2]


def encode_message(frames: Sequence[Buffer], limits: LinkLimits) -> tuple[list[Buffer], int]:
    """The byte pieces of one message on the wire and its payload size.

    Raises ``ValueError`` when the message breaks ``limits`` (a sender bug:
    the peer would refuse it and close the link).
    """
    n = len(frames)
    if n == 2:  # the common small message (a header and an envelope): one join, no lists
        head, body = frames
        if type(head) is bytes and type(body) is bytes:
            a, b = len(head), len(body)
            total = a + b
            pair = limits.pair_frame
            if total <= limits.pair_joined and a <= pair and b <= pair:
                return [b"".join((_PREFIX_2.pack(2, a, b), head, body))], total
    if not 1 <= n <= limits.max_frames:
        raise ValueError(f"a message has 1 to {limits.max_frames} frames, got {n}")
    views: list[Buffer] = []
    lengths: list[int] = []
    for frame in frames:
        if type(frame) is bytes:
            views.append(frame)
            lengths.append(len(frame))
        else:
            view = _as_buffer(frame)
            views.append(view)
            lengths.append(view.nbytes if type(view) is memoryview else len(view))
    total = sum(lengths)
    if total > limits.max_message or max(lengths) > limits.max_frame:
        raise ValueError(
            f"message of {total} bytes (largest frame {max(lengths)}) exceeds the link's "
            f"max_message {limits.max_message} / max_frame {limits.max_frame}"
        )
    if n < len(_PREFIXES):
        prefix = _PREFIXES[n].pack(n, *lengths)
    else:
        prefix = struct.pack(f">{n + 1}I", n, *lengths)
    if total < JOIN_BELOW:
        views.insert(0, prefix)
        return [b"".join(views)], total
    views.insert(0, prefix)
    return views, total
