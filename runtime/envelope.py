"""The envelope: one per message, the unit every transport carries.

In process the envelope travels as this object (its ``body`` is the message
object itself); across processes :mod:`synaptic_mesh.runtime.codec` encodes it
as frame 0, a msgpack array documented in ``docs/wire-format.md``.
"""

from __future__ import annotations

from typing import Any, Final

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


class Envelope:
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
    """

    __slots__ = (
        "attachments",
        "body",
        "corr",
        "deadline",
        "headers",
        "id",
        "kind",
        "reply_to",
        "sender",
        "seq",
        "subject",
        "type",
    )

    def __init__(
        self,
        id: str,
        kind: str,
        subject: str,
        body: Any = None,
        *,
        type: str = "",
        sender: str | None = None,
        reply_to: str | None = None,
        corr: str | None = None,
        seq: int = 0,
        deadline: float | None = None,
        headers: dict[str, Any] | None = None,
        attachments: tuple[Any, ...] = (),
    ) -> None:
        self.id = id
        self.kind = kind
        self.subject = subject
        self.body = body
        self.type = type
        self.sender = sender
        self.reply_to = reply_to
        self.corr = corr
        self.seq = seq
        self.deadline = deadline
        self.headers = headers
        self.attachments = attachments

    def __repr__(self) -> str:
        return (
            f"Envelope(id={self.id!r}, kind={self.kind!r}, subject={self.subject!r}, "
            f"type={self.type!r}, sender={self.sender!r}, corr={self.corr!r}, seq={self.seq})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]
