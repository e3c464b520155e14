"""The transport SPI: the one small contract every transport implements.

The model is NATS': ``publish`` a list of frames on a dotted subject,
``subscribe`` a pattern (``*`` one token, ``>`` the rest), optionally in a
queue group whose members share the work. Every pattern and every actor
address is lowered onto these calls, so a transport never learns about actors.

Contract, stated once for all transports (the conformance suite checks it):

- ``publish`` delivers to every matching subscription and to exactly one
  member of each matching queue group, including subscriptions made through
  this same transport instance (echo, as NATS does by default).
- Frame 0 is the encoded envelope; later frames are attachments. A transport
  whose ``capabilities.by_reference`` is true (in process) is handed the
  :class:`~synaptic_mesh.runtime.envelope.Envelope` object itself as frame 0
  and delivers it unchanged: nothing is encoded.
- When ``capabilities.knows_interest`` is true and a publish carrying
  ``reply_to`` matches no subscription, the transport publishes an empty frame
  sequence on ``reply_to``: the "no responders" status, so an ask fails at
  once instead of after its timeout.
- ``publish`` of a message larger than ``capabilities.max_message`` raises
  ``ValueError``; ``publish`` or ``subscribe`` after ``close`` raises
  :class:`~synaptic_mesh.runtime.errors.TransportClosed`.
- ``close`` stops taking new work, lets deliveries in progress finish, then
  releases every resource; calling it again does nothing.
- Handlers are coroutines; a transport awaits them in order per subscription,
  so a slow handler pushes back on its source instead of queueing without bound.

This module depends on nothing else in the project but the envelope types.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Frame = Any
"""A buffer (``bytes``, ``bytearray``, ``memoryview``) or, on a by-reference
transport, the envelope object itself."""

Handler = Callable[[str, Sequence[Frame], "str | None"], Awaitable[None]]
"""``await handler(subject, frames, reply_to)`` for each delivered message."""

NO_RESPONDERS: tuple[Frame, ...] = ()
"""The frames of a "no responders" status published on a request's reply_to."""

Delivery = Literal["at-most-once", "at-least-once"]


@dataclass(frozen=True)
class Capabilities:
    """What a transport promises; patterns and tests read it, nobody branches on class.

    ``ordered``: messages from one publisher on one subject arrive in publish order.
    ``delivery``: the guarantee without the reliable-delivery layer.
    ``durable``: messages survive a restart of the broker or a node.
    ``replay``: a subscriber can read again from an earlier offset.
    ``cross_host``: peers may live on other machines.
    ``zero_copy``: attachments reach the receiver without a copy.
    ``max_message``: the largest message, all frames together, in bytes.
    ``native``: patterns the transport lowers natively (``"request-reply"``, ...).
    ``by_reference``: frames are passed as objects in process, never encoded.
    ``knows_interest``: the transport reports "no responders" for a request.
    """

    ordered: bool
    delivery: Delivery
    durable: bool
    replay: bool
    cross_host: bool
    zero_copy: bool
    max_message: int
    native: frozenset[str] = field(default_factory=frozenset)
    by_reference: bool = False
    knows_interest: bool = False


class Subscription(abc.ABC):
    """A live subscription; ``await unsubscribe()`` ends it (idempotent)."""

    pattern: str
    queue: str | None

    @abc.abstractmethod
    async def unsubscribe(self) -> None:
        """Stop deliveries to this subscription's handler."""


class Transport(abc.ABC):
    """One node's connection to a mesh; chosen by URL scheme.

    Subclasses set ``scheme`` and ``capabilities`` and take the URL and
    keyword options in ``__init__``; they are registered as entry points in
    group ``synaptic_mesh.transports`` under their scheme.
    """

    scheme: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, bind or join; after it returns, publish and subscribe work."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Drain deliveries in progress, then release everything; idempotent."""

    @abc.abstractmethod
    async def publish(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> None:
        """Deliver ``frames`` to every subscription matching ``subject``.

        Raises ``TransportClosed`` after ``close`` and ``ValueError`` when the
        message exceeds ``capabilities.max_message``.
        """

    @abc.abstractmethod
    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        """Receive what is published on subjects matching ``pattern``.

        With ``queue``, each message goes to one member of the group.
        Raises ``TransportClosed`` after ``close``.
        """
