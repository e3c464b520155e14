"""How a Synaptic Mesh message (a sequence of frames) travels as one NATS message.

* One frame (the common case: an envelope without attachments): the NATS
  payload is the frame's bytes, with no header. A plain NATS client that
  publishes a documented envelope is therefore understood, and one that
  subscribes reads envelopes directly.
* Several frames: the payload is the frames' bytes one after the other, and
  the NATS header ``Mesh-Frames`` lists their lengths in decimal, comma
  separated (``Mesh-Frames: 117,1200000``). The lengths must add up to the
  payload's length; a message whose header does not is refused as a bad
  frame (it becomes a dead letter), nothing else is affected.
* Zero frames is the "no responders" status. It is never sent as a message:
  the server's own status (``NATS/1.0 503``, an empty payload on the reply
  subject) is what a receiver turns into the empty frame sequence.
* ``Mesh-Reply`` carries ``reply_to`` on JetStream subjects, whose NATS reply
  subject is taken by the stream's publish acknowledgement.

See the "NATS" section of ``docs/wire-format.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FRAMES_HEADER = "Mesh-Frames"
REPLY_HEADER = "Mesh-Reply"
STATUS_HEADER = "Status"
NO_RESPONDERS_STATUS = "503"
MSG_ID_HEADER = "Nats-Msg-Id"

MAX_FRAMES = 128
"""Most frames one message may have (the envelope and its attachments)."""

HEADER_RESERVE = 4096
"""Bytes of ``max_payload`` kept for headers (frame lengths, message id, reply subject):
``max_message`` is the rest."""

MAX_LENGTH_DIGITS = 19
"""Most digits one length in ``Mesh-Frames`` may have: ample for any payload, and a
value of thousands of digits is refused before ``int()`` (which raises on those)."""


class FrameError(ValueError):
    """A NATS message whose ``Mesh-Frames`` header does not describe its payload."""


def pack(frames: Sequence[Any]) -> tuple[Any, dict[str, str] | None]:
    """``(payload, headers)`` for ``frames``; one frame travels as it is."""
    if len(frames) == 1:
        return frames[0], None
    if not frames:
        raise ValueError("a message has at least one frame")
    if len(frames) > MAX_FRAMES:
        raise ValueError(f"a message has at most {MAX_FRAMES} frames, got {len(frames)}")
    views = [memoryview(f).cast("B") if not isinstance(f, bytes) else f for f in frames]
    return b"".join(views), {FRAMES_HEADER: ",".join(str(len(v)) for v in views)}


def unpack(payload: bytes, lengths: str) -> tuple[memoryview, ...]:
    """The frames of ``payload`` split by a ``Mesh-Frames`` value; raises :class:`FrameError`."""
    parts = lengths.split(",")
    if len(parts) > MAX_FRAMES:
        raise FrameError(f"{FRAMES_HEADER} lists {len(parts)} frames, more than {MAX_FRAMES}")
    sizes = []
    for part in parts:
        part = part.strip()
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (part.isascii() and part.isdigit()) or len(part) > MAX_LENGTH_DIGITS:
            raise FrameError(f"{FRAMES_HEADER} value {lengths[:80]!r} is not a list of lengths")
        sizes.append(int(part))
    if sum(sizes) != len(payload):
        raise FrameError(
            f"{FRAMES_HEADER} lengths add up to {sum(sizes)} bytes, payload has {len(payload)}"
        )
    view = memoryview(payload)
    out = []
    offset = 0
    for size in sizes:
        out.append(view[offset : offset + size])
        offset += size
    return tuple(out)


def headers_size(headers: dict[str, str] | None) -> int:
    """Bytes the header block of ``headers`` takes on the wire (0 without headers)."""
    if not headers:
        return 0
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())


def envelope_id(frame0: Any) -> str | None:
    """The ``id`` (position 1) of an encoded envelope, read without decoding it.

    Frame 0 is a msgpack array whose item 0 is the version (a positive fixint)
    and item 1 the id (a str); ``None`` when the bytes are not shaped so.
    Used as ``Nats-Msg-Id``, the server's de-duplication key.
    """
    try:
        head = bytes(frame0[:3])
        first = head[0]
        if not (0x90 <= first <= 0x9F or first == 0xDC) or len(head) < 3:
            return None
        pos = 1 if first != 0xDC else 3
        data = bytes(frame0[pos : pos + 260])
        if not data or data[0] > 0x7F:
            return None
        marker = data[1]
        if 0xA0 <= marker <= 0xBF:
            start, size = 2, marker & 0x1F
        elif marker == 0xD9:
            start, size = 3, data[2]
        else:
            return None
        if size == 0 or start + size > len(data):
            return None
        return data[start : start + size].decode("utf-8")
    except (IndexError, TypeError, ValueError):
        return None
