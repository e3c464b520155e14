"""Dead letters: messages that could not be delivered or handled, with why.

Nothing is dropped silently: a full mailbox under a drop policy, a message
nobody handles, an ask nobody serves, a frame that fails to decode, a message
an actor crashed on, each becomes a :class:`DeadLetter` published on
``_mesh.dead`` (subscribe to it to watch) and is counted in ``Node.stats``.
"""

from __future__ import annotations

from typing import Any, Final

from synaptic_mesh.runtime.messages import message, name_of

DEAD_LETTER_SUBJECT: Final = "_mesh.dead"

_PREVIEW = 120


@message(name="_mesh.DeadLetter")
class DeadLetter:
    """Why a message was lost, where it was going, what it was.

    ``detail`` is a short preview (the message's repr, or the first bytes of
    an undecodable frame in hex); the original object, when there is one,
    stays in process in ``Node.recent_dead_letters``.
    """

    reason: str
    subject: str
    type: str = ""
    sender: str | None = None
    detail: str = ""


def describe(message: Any) -> tuple[str, str]:
    """The wire type name (or Python class name) and a short preview of ``message``."""
    if message is None:
        return "", ""
    cls = type(message)
    type_name = name_of(cls) or cls.__qualname__
    if isinstance(message, bytes | bytearray | memoryview):
        preview = bytes(message[:48]).hex()
    else:
        preview = repr(message)
    if len(preview) > _PREVIEW:
        preview = preview[: _PREVIEW - 3] + "..."
    return type_name, preview
