"""What travels in a mailbox besides plain messages, and how an incarnation ends.

A plain tell is queued bare. A :class:`Call` wraps a message that needs more
(a reply, or the handler its subscription chose). System messages go on the
system lane and overtake user messages: :class:`Stop`, :class:`Suspend`, and
:class:`Signal` (a ``Down`` for a monitor). :class:`Exit` says why one
incarnation of an actor ended; a supervisor decides from it what comes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal


class Call:
    """A mailbox item that needs more than type dispatch.

    Local asks carry ``future``; asks from other nodes carry ``reply_to`` and
    ``corr``; subscription deliveries carry the ``handler`` their subscription
    chose and the concrete ``subject``.
    """

    __slots__ = ("corr", "future", "handler", "message", "reply_to", "sender", "subject")

    def __init__(
        self,
        message: Any,
        *,
        handler: Callable[..., Any] | None = None,
        future: asyncio.Future[Any] | None = None,
        reply_to: str | None = None,
        corr: str | None = None,
        subject: str | None = None,
        sender: str | None = None,
    ) -> None:
        self.message = message
        self.handler = handler
        self.future = future
        self.reply_to = reply_to
        self.corr = corr
        self.subject = subject
        self.sender = sender

    @property
    def wants_reply(self) -> bool:
        return self.future is not None or self.reply_to is not None


class Stop:
    """System message: finish the current message, then stop.

    ``by_supervisor`` marks a stop the supervisor ordered (it needs no report
    back); any other stop is a normal exit the supervisor judges by the
    child's restart type.
    """

    __slots__ = ("by_supervisor", "reason")

    def __init__(self, reason: str = "stopped", *, by_supervisor: bool = False) -> None:
        self.reason = reason
        self.by_supervisor = by_supervisor


class Suspend:
    """System message from a supervisor: end this incarnation, keep the mailbox."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Signal:
    """System message carrying a user-visible message (``Down``) past a full mailbox."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


ExitKind = Literal["normal", "crash", "suspended", "killed", "shutdown"]


@dataclass(frozen=True)
class Exit:
    """Why an incarnation ended.

    ``normal``: the actor stopped (itself, or asked to from outside);
    ``crash``: a handler or ``on_restart`` raised ``error``;
    ``suspended``/``killed``: its supervisor ended it to restart it (killed:
    after the shutdown timeout); ``shutdown``: its supervisor or node stopped it.
    """

    kind: ExitKind
    reason: str
    error: BaseException | None = None
