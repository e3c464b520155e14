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

Native lowerings (optional): every pattern (request-reply, pub-sub,
pipeline, bus, survey, PAIR hotline) has a generic lowering onto the calls
above. A transport that can do better for a pattern names it in
``capabilities.native`` and returns an object for it from
:meth:`Transport.native_lowering`; the object implements the protocol the
pattern module states (``synaptic_mesh.patterns.survey.SurveyLowering``, ...).
The rule is strict both ways: a name in ``native`` must yield an object, and
the conformance suite checks it.

Link transports implement the smaller :class:`Link` contract instead and let
the shared router (``runtime/router.py``) provide everything above.

This module depends on nothing else in the project but the envelope types
and the error classes.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, TypeVar

from synaptic_mesh.runtime.errors import TransportClosed

Frame = Any
"""A buffer (``bytes``, ``bytearray``, ``memoryview``) or, on a by-reference
transport, the envelope object itself."""

Handler = Callable[[str, Sequence[Frame], "str | None"], Awaitable[None]]
"""``await handler(subject, frames, reply_to)`` for each delivered message."""

NO_RESPONDERS: tuple[Frame, ...] = ()
"""The frames of a "no responders" status published on a request's reply_to."""

Delivery = Literal["at-most-once", "at-least-once"]

F = TypeVar("F", bound=Callable[..., Any])


_log = logging.getLogger("synaptic_mesh.link")


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

    def with_max_message(self, max_message: int) -> Capabilities:
        """These capabilities for an instance configured with another ``max_message``."""
        return self if max_message == self.max_message else replace(self, max_message=max_message)


class Subscription(abc.ABC):
    """A live subscription; ``await unsubscribe()`` ends it (idempotent)."""

    pattern: str
    queue: str | None

    @abc.abstractmethod
    async def unsubscribe(self) -> None:
        """Stop deliveries to this subscription's handler."""


def eager_handler(fn: F) -> F:
    """Mark a handler as safe to start outside a task.

    A transport may then run its first step straight from the callback that
    received the message and create a task only if it has to wait (see
    ``runtime/eager.py``). The handler must not need a current task before
    its first ``await`` (no ``asyncio.timeout``, no AnyIO cancel scope).
    It is a coroutine function, or a plain function that returns
    ``runtime.eager.DONE`` when it finished at once and a coroutine with the
    rest otherwise (the node's own deliveries: no coroutine per message in
    the common case); either way callers may ``await`` what a call returns.
    Works on functions, methods (through their bound method) and
    ``functools.partial`` objects over them.
    """
    fn.eager_delivery = True  # type: ignore[attr-defined]
    return fn


def is_eager(handler: Handler) -> bool:
    """Whether ``handler`` was marked with :func:`eager_handler`."""
    return getattr(getattr(handler, "func", handler), "eager_delivery", False) is True


def eager_as(inner: Handler, wrapper: F) -> F:
    """``wrapper`` marked eager when the ``inner`` handler it calls is: for a wrapper that
    only checks something and awaits ``inner`` (it needs no task of its own)."""
    return eager_handler(wrapper) if is_eager(inner) else wrapper


class HandlerSubscription(Subscription):
    """A subscription whose messages go to a handler in this process.

    Kept by the transport that made it (in process or over links alike):
    ``unsubscribe`` marks it inactive, so a delivery already picked skips it,
    and asks the owner to ``_forget`` it. ``eager``: the handler may be started
    outside a task (:func:`eager_handler`).
    """

    __slots__ = ("_owner", "active", "eager", "handler", "pattern", "queue")

    def __init__(self, owner: Any, pattern: str, handler: Handler, queue: str | None) -> None:
        self._owner = owner
        self.pattern = pattern
        self.handler = handler
        self.queue = queue
        self.active = True
        self.eager = is_eager(handler)

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            self._owner._forget(self)


class Transport(abc.ABC):
    """One node's connection to a mesh; chosen by URL scheme.

    Subclasses set ``scheme`` and ``capabilities`` and take the URL and
    keyword options in ``__init__``; they are registered as entry points in
    group ``synaptic_mesh.transports`` under their scheme.
    """

    scheme: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    sends_now: ClassVar[bool] = False
    """Whether ``publish_now`` can succeed: the node's outbox only tries it then."""

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

    async def subscribe_except(self, pattern: str, handler: Handler, unless: str) -> Subscription:
        """``subscribe(pattern, handler)``, but never for messages published on ``unless``.

        A bus member hears the bus but not its own sends. A transport whose
        subject table can leave ``unless`` out of the match overrides this, so
        that a publish there does not count the member among its recipients;
        the default filters in the handler.
        """

        async def others_only(subject: str, frames: Sequence[Frame], reply_to: str | None) -> None:
            if subject != unless:
                await handler(subject, frames, reply_to)

        return await self.subscribe(pattern, eager_as(handler, others_only))

    def publish_now(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> bool:
        """Publish at once if that needs no waiting; ``False`` (nothing sent) otherwise.

        The node tries this before ``publish``: a small message to one remote
        recipient with room on its link then costs no coroutine at all. A
        transport that cannot tell without waiting keeps the default, which
        always declines. It never raises for a message ``publish`` would
        refuse: it declines, and ``publish`` raises.
        """
        return False

    async def settled(self) -> None:
        """Return once what this node published has reached this node's own subscriptions.

        ``Node.wait_idle`` awaits it before it declares the node idle. A
        transport that delivers its own echo before ``publish`` returns (in
        process, the link router) has nothing to wait for: the default. A
        broker, where a message to oneself travels through the server,
        overrides it (``nats://``: a PING/PONG round trip).
        """
        return None

    def native_lowering(self, pattern: str) -> object | None:
        """This transport's own lowering of ``pattern``, or ``None`` to use the generic one.

        ``pattern`` is one of the names in ``synaptic_mesh.patterns.lowering.PATTERNS``
        (``"request-reply"``, ``"pub-sub"``, ``"pipeline"``, ``"bus"``,
        ``"survey"``, ``"pair"``). A transport that lists ``pattern`` in
        ``capabilities.native`` must return an object implementing that
        pattern's protocol; the default returns ``None`` for every pattern, which
        is right for a transport whose ``native`` is empty.
        """
        return None


# --------------------------------------------------------------------------- links
#
# Link transports (raw TCP, Unix sockets, ZeroMQ PAIR, WebSocket, ...) do not
# route subjects: they only move multipart messages between two nodes. The
# shared router (``synaptic_mesh.runtime.router.RoutedTransport``) builds the
# whole Transport contract above on top of them. A link transport therefore
# implements only the three small classes below.

Buffer = bytes | bytearray | memoryview
"""One frame on a link: any contiguous byte buffer."""


class LinkClosed(TransportClosed):
    """The link is closed; ``reason`` says why (EOF, reset, protocol error, ``close``).

    A :class:`~synaptic_mesh.runtime.errors.TransportClosed`, so a send that
    fails because its link went away is reported like any closed transport.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkProtocolError(LinkClosed):
    """The peer sent bytes that break the link's framing or the router protocol.

    The link is aborted when this is raised; the node and its other links go on.
    """


class Link(abc.ABC):
    """A bidirectional, ordered pipe of multipart messages between two nodes.

    Contract:

    - Messages arrive in the order they were sent, each with the same frames
      (lengths and bytes) it was sent with; no message is split or merged.
    - ``await send(frames)`` waits while the outgoing buffer is above the
      link's high-water mark, so a peer that reads slowly slows its senders
      instead of making this process buffer without bound. ``send_nowait``
      never waits: it is for the router's small control messages (heartbeats,
      interest updates), which must flow even while data is held back.
    - ``await recv()`` returns the next message; once the link is closed it
      first returns what was already received, then raises :class:`LinkClosed`
      (or :class:`LinkProtocolError` when malformed input closed it).
    - ``close()`` is graceful (what is buffered is still sent), ``abort()``
      drops the buffer at once; both are idempotent and wake blocked senders
      and receivers with :class:`LinkClosed`.
    - ``peer_id`` is ``None`` until the router's handshake names the peer.
    """

    peer_id: str | None = None

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """Where the link goes, for logs (``"127.0.0.1:7001 -> 127.0.0.1:7002"``)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether the link is closed or closing (no further sends are accepted)."""

    @property
    @abc.abstractmethod
    def close_reason(self) -> str | None:
        """Why the link closed, once it has."""

    @abc.abstractmethod
    async def send(self, frames: Sequence[Buffer]) -> None:
        """Send one message, waiting while the peer is behind (see class docstring).

        Raises :class:`LinkClosed` if the link is or becomes closed, and
        ``ValueError`` if the message breaks the link's size limits.
        """

    @abc.abstractmethod
    def send_nowait(self, frames: Sequence[Buffer]) -> None:
        """Send one small message without waiting; raises :class:`LinkClosed` when closed."""

    def try_send(self, frames: Sequence[Buffer]) -> bool:
        """Send one message if it can go without waiting; ``False`` (nothing sent) otherwise.

        The router's fast path (see ``Transport.publish_now``). Raises
        ``ValueError`` as ``send`` does, before anything is written. The
        default declines, so the router falls back to ``send``.
        """
        return False

    def can_send_now(self) -> bool:
        """Whether ``try_send`` would take a message of its limits now (the router
        gathers messages only then). The default, like ``try_send``, says no."""
        return False

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this turn of the event loop is over (the router sends
        what it gathered then). A link that writes at the end of a turn anyway runs it
        from there; the default schedules it on its own."""
        asyncio.get_running_loop().call_soon(callback)

    def set_receiver(self, receiver: Callable[[list[Buffer]], None]) -> bool:
        """Optionally push messages instead of queueing them for ``recv``.

        A link that can call ``receiver(frames)`` for each complete message
        from the callback that completed it (saving the reader a task wake-up
        per message) does so from now on, after first handing over what was
        already queued, and returns True; ``recv`` then only raises once the
        link has closed. The default returns False: the router keeps calling
        ``recv``.
        """
        return False

    @abc.abstractmethod
    async def recv(self) -> list[Buffer]:
        """The next message's frames; raises :class:`LinkClosed` after the last one."""

    @abc.abstractmethod
    def close(self) -> None:
        """Send what is buffered, then close; idempotent."""

    @abc.abstractmethod
    def abort(self, reason: str) -> None:
        """Close at once, dropping the buffer, recording ``reason``; idempotent."""

    @abc.abstractmethod
    async def wait_closed(self) -> None:
        """Return once the link is fully closed."""


class LinkEnd(Link):
    """How a link's end is kept: its label, whether and why it closed, the error to raise.

    The three kinds of link (stream sockets, ZeroMQ, NNG) keep the same
    state and report it the same way; each says in :meth:`_on_closed` whom
    to wake when its link ends, and releases its own socket.
    """

    _label: str
    _closed: bool
    _reason: str | None
    _error: LinkClosed | None

    def _init_end(self, label: str) -> None:
        self._label = label
        self._closed = False
        self._reason = None
        self._error = None

    @property
    def label(self) -> str:
        return self._label

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str | None:
        return self._reason

    def _closed_error(self) -> LinkClosed:
        """What a send or ``recv`` on the closed link raises."""
        return self._error or LinkClosed(f"{self._label}: {self._reason or 'closed'}")

    def _set_closed(self, reason: str, error: LinkClosed | None = None) -> None:
        self._closed = True
        self._reason = reason
        self._error = error
        self._on_closed()

    def _on_closed(self) -> None:
        """Wake whoever waits on the link (senders, a receiver); nothing by default."""

    def _protocol_error(self, reason: str) -> None:
        """Malformed input or a stuck peer: log it and close with a ``LinkProtocolError``."""
        _log.error("%s closed: %s", self._label, reason)
        self._set_closed(reason, LinkProtocolError(f"{self._label}: {reason}"))


class LinkListener(abc.ABC):
    """A bound endpoint accepting links; ``address`` is the address actually bound."""

    address: str

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop accepting links (links already accepted stay open); idempotent."""


class LinkConnector(abc.ABC):
    """Opens links: ``listen`` for incoming ones, ``dial`` to reach a peer.

    The router owns every link it is handed and closes it; a connector keeps
    no state of its own beyond its configuration (limits, socket options).
    """

    @abc.abstractmethod
    async def listen(self, address: str, accept: Callable[[Link], None]) -> LinkListener:
        """Bind ``address`` and call ``accept(link)`` for each incoming link."""

    @abc.abstractmethod
    async def dial(self, address: str, timeout: float) -> Link:
        """Connect to ``address``; raises ``OSError`` (or ``TimeoutError``) on failure."""


@dataclass(frozen=True)
class BadFrame:
    """Input a link had to refuse, reported to ``transport.on_bad_frame`` hooks.

    ``peer``: the peer's id, or its address when the handshake had not named
    it. ``reason``: what was wrong. ``subject``: the message's subject when it
    could be read. ``frames``: the message's frames when it was complete
    (frame 0 is the envelope), else empty. ``preview``: the first bytes of
    the offending input in hex. The node turns each into a dead letter.
    """

    peer: str
    reason: str
    subject: str | None = None
    frames: tuple[Buffer, ...] = ()
    preview: str = ""
