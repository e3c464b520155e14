"""The envelope: one per message, the unit every transport carries.

In process the envelope travels as this object (its ``body`` is the message
object itself); across processes :mod:`synaptic_mesh.runtime.codec` encodes it
as frame 0, a msgpack array documented in ``docs/wire-format.md``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

TELL: Final = "tell"
ASK: Final = "ask"
REPLY: Final = "reply"
ERROR: Final = "error"
PUBLISH: Final = "publish"
SURVEY: Final = "survey"
VOTE: Final = "vote"
SYSTEM: Final = "system"

KINDS: Final = frozenset({TELL, ASK, REPLY, ERROR, PUBLISH, SURVEY, VOTE, SYSTEM})

WIRE_VERSION: Final = 1
"""Version of the frame-0 layout; a decoder rejects versions it does not know."""


class _Addressed(msgspec.Struct):
    """The envelope's positional fields (``Envelope(id, kind, subject, body)``)."""

    id: str
    kind: str
    subject: str
    body: Any = None


class Envelope(_Addressed, kw_only=True):
    """Addressing and metadata around one message.

    ``id``: unique per message (node id and a counter), the dedup key.
    ``kind``: one of :data:`KINDS`.
    ``sender``: subject of the sending actor, or ``None`` for code outside actors.
    ``subject``: where it is sent. ``reply_to``: where a reply goes (asks).
    ``corr``: correlation id tying a reply to its ask.
    ``seq``: per sender and subject, increasing from 1.
    ``deadline``: absolute ``time.time()`` after which nobody waits (ask, survey).
    ``headers``: str-keyed metadata (trace id, conversation id, token budget, ...).
    ``type``: registered message type name, ``""`` for a plain msgpack value.
    ``body``: the message object (decoded) or plain value.
    ``attachments``: buffers travelling as frames after frame 0.

    A ``msgspec.Struct``: one is made for every message sent and every one
    received, and a Struct is built in C, five times faster than a slotted
    class's ``__init__``. Nothing is checked when one is made (the codec
    checks what it encodes and what it decodes); equal when every field is;
    unhashable, since it is mutable.
    """

    type: str = ""
    sender: str | None = None
    reply_to: str | None = None
    corr: str | None = None
    seq: int = 0
    deadline: float | None = None
    headers: dict[str, Any] | None = None
    attachments: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Envelope(id={self.id!r}, kind={self.kind!r}, subject={self.subject!r}, "
            f"type={self.type!r}, sender={self.sender!r}, corr={self.corr!r}, seq={self.seq})"
        )


def as_nodes_make_it(env: Envelope) -> bool:
    """Whether ``env``'s id, kind, subject, sender, reply_to, corr, seq and deadline are
    what a node gives them: exact types, a known kind, a non-empty subject, a seq of at
    least 0. The codec then need not check them one by one (headers, type, body and
    attachments are for the caller to judge)."""
    sender, reply_to, corr, seq, deadline = (
        env.sender,
        env.reply_to,
        env.corr,
        env.seq,
        env.deadline,
    )
    return (
        type(env.id) is str
        and env.kind in KINDS
        and type(env.subject) is str
        and env.subject != ""
        and (sender is None or type(sender) is str)
        and (reply_to is None or type(reply_to) is str)
        and (corr is None or type(corr) is str)
        and type(seq) is int
        and seq >= 0
        and (deadline is None or type(deadline) is float)
    )


FIELDS: Final = Envelope.__struct_fields__
"""The envelope's field names, in order."""
