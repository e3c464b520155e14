"""``AgentActor``: the class an agent subclasses.

An agent is behaviour and state; the runtime (its cell and node) gives it a
mailbox, an address and the ways to talk: ``ask``, ``tell``, ``publish``.
Handlers are declared with ``@on(MessageType)`` and the dispatch table is
built once, when the class is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from synaptic_mesh.actors.handlers import SubscriptionSpec, build_handler_table
from synaptic_mesh.actors.mailbox import Overflow
from synaptic_mesh.actors.ref import DEFAULT_ASK_TIMEOUT, ActorRef
from synaptic_mesh.patterns import attach, pubsub, request_reply

if TYPE_CHECKING:
    from synaptic_mesh.actors.cell import ActorCell
    from synaptic_mesh.patterns.bus import BusMember
    from synaptic_mesh.patterns.feeder import Feeder
    from synaptic_mesh.patterns.hotline import Hotline
    from synaptic_mesh.patterns.pubsub import ActorSubscription
    from synaptic_mesh.patterns.survey import SurveyResult
    from synaptic_mesh.runtime.node import Node


class AgentActor:
    """Base class of actors that run on the event loop.

    Class attributes configure the mailbox (each may be overridden per spawn):
    ``capacity`` (default 1000), ``overflow`` (``"block"``, ``"drop_newest"``,
    ``"drop_oldest"`` or ``"fail"``) and ``concurrency`` (messages handled at
    once; 1 keeps the actor single-threaded in the Erlang sense).

    Lifecycle: ``on_start`` runs before the first message (the spawner waits
    for it; if it raises, the spawn fails with ``ActorStartError``);
    ``on_stop`` runs after the last one.
    """

    capacity: ClassVar[int] = 1000
    overflow: ClassVar[Overflow] = "block"
    concurrency: ClassVar[int] = 1

    _mesh_handlers: ClassVar[dict[type, Callable[..., Any]]] = {}
    _mesh_subscriptions: ClassVar[tuple[SubscriptionSpec, ...]] = ()
    _mesh_async_handlers: ClassVar[bool] = True
    _mesh_cell: ActorCell

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table, subscriptions = build_handler_table(cls, want_async=cls._mesh_async_handlers)
        cls._mesh_handlers = cls._mesh_wrap_handlers(table)
        cls._mesh_subscriptions = subscriptions

    @classmethod
    def _mesh_wrap_handlers(
        cls, table: dict[type, Callable[..., Any]]
    ) -> dict[type, Callable[..., Any]]:
        return {message_type: cls._mesh_wrap_handler(fn) for message_type, fn in table.items()}

    @classmethod
    def _mesh_wrap_handler(cls, fn: Callable[..., Any]) -> Callable[..., Any]:
        """An ``@on`` or ``@subscribe`` method as the cell calls it: ``await f(actor, msg)``."""
        return fn

    # -- identity ----------------------------------------------------------

    @property
    def subject(self) -> str:
        """The subject this actor is addressed by."""
        return self._mesh_cell.subject

    @property
    def node(self) -> Node:
        """The node this actor runs on."""
        return self._mesh_cell.host  # type: ignore[return-value]

    @property
    def ref(self) -> ActorRef:
        """An ``ActorRef`` to this actor."""
        return self.node.ref(self.subject)

    @property
    def logger(self) -> logging.Logger:
        """A logger named after the actor's subject."""
        return logging.getLogger(f"synaptic_mesh.actor.{self.subject}")

    @property
    def current_sender(self) -> str | None:
        """The subject of the actor that sent the message being handled, when known.

        Known for asks, subscription, bus and survey deliveries; ``None`` for
        a plain tell and for messages sent from outside any actor.
        """
        call = self._mesh_cell.current
        return call.sender if call is not None else None

    @property
    def current_subject(self) -> str:
        """The subject the message being handled was published on."""
        call = self._mesh_cell.current
        if call is not None and call.subject is not None:
            return call.subject
        return self.subject

    # -- lifecycle hooks -----------------------------------------------------

    async def on_start(self) -> None:
        """Called before the first message; override to initialise or to act."""

    async def on_stop(self) -> None:
        """Called after the last message of each incarnation, also when the node closes."""

    async def on_restart(self, reason: str) -> None:
        """Called on the fresh instance a supervisor restarts, instead of ``on_start``.

        ``reason`` says why the previous incarnation ended. The default runs
        ``on_start``, so an actor that only initialises there needs nothing more.
        """
        await self.on_start()

    async def on_hotline(self, line: Hotline) -> None:
        """Answer a hotline (``synaptic_mesh.patterns.hotline``); define it to take hotlines.

        Runs as one of this actor's messages; the line closes when it returns.
        Actors whose class does not override it refuse hotlines.
        """
        raise NotImplementedError

    async def _mesh_start(self) -> None:
        await attach.attach_declared(self)  # @respond, on_hotline: for the actor's life
        await self.on_start()

    async def _mesh_restart(self, reason: str) -> None:
        try:
            await self.on_restart(reason)
        except BaseException:  # this instance never runs: end what on_restart set up
            self._mesh_incarnation_ended("on_restart raised", self.node.spawn_system_task)
            raise

    async def _mesh_stop(self) -> None:
        await self.on_stop()

    def _mesh_incarnation_ended(
        self, reason: str, spawn: Callable[[Callable[[], Any]], None]
    ) -> None:
        """Called by the node when this incarnation ended (after ``on_stop``, before a restart).

        What it subscribed, joined or opened stops at once; the rest of the
        clean-up (unsubscribing, telling a line's other end) runs in ``spawn``.
        """
        attach.incarnation_ended(self, reason, spawn)

    # -- talking -------------------------------------------------------------

    def ask(
        self, subject: str, message: Any, *, timeout: float | None = DEFAULT_ASK_TIMEOUT
    ) -> Coroutine[Any, Any, Any]:
        """Send ``message`` to ``subject`` and return (a coroutine of) the reply.

        Raises ``AskTimeout`` after ``timeout`` seconds, ``NoResponders`` at
        once when nobody serves the subject, ``RemoteError`` when the handler
        raised. See ``synaptic_mesh.patterns.request_reply``.
        """
        return request_reply.ask(self.node, subject, message, timeout=timeout, sender=self.subject)

    async def tell(self, subject: str, message: Any) -> None:
        """Send ``message`` to ``subject`` without waiting for a reply.

        Waits while the receiver's mailbox is full (``block`` policy).
        """
        await self.node.tell(subject, message, sender=self.subject)

    def tell_nowait(self, subject: str, message: Any) -> None:
        """Send without waiting; raises ``MailboxFull`` instead of blocking."""
        self.node.tell_nowait(subject, message, sender=self.subject)

    def publish(self, topic: str, message: Any) -> Coroutine[Any, Any, None]:
        """Publish ``message`` to every subscriber of ``topic``: ``await self.publish(...)``.

        See ``synaptic_mesh.patterns.pubsub``; raises ``TransportClosed`` once
        the node no longer sends.
        """
        return pubsub.publish(self.node, topic, message, sender=self.subject)

    # -- patterns ------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Callable[..., Any], *, queue: str | None = None
    ) -> ActorSubscription:
        """Subscribe to ``pattern`` while this incarnation runs; deliveries go to ``handler``.

        ``handler`` is a coroutine method (``self.on_news``) or ``async def
        f(msg)``; it runs from the mailbox like an ``@subscribe`` handler.
        Ends at ``unsubscribe`` or when the actor stops, crashes or restarts.
        Raises ``InvalidSubject``, ``TypeError`` (not a coroutine), ``TransportClosed``.
        """
        return await pubsub.subscribe_actor(self, pattern, handler, queue=queue)

    async def unsubscribe(self, subscription: ActorSubscription | str) -> int:
        """End one dynamic subscription, or all on a pattern; returns how many ended."""
        return await pubsub.unsubscribe_actor(self, subscription)

    async def join_bus(self, bus: str, handler: Callable[..., Any]) -> BusMember:
        """Join ``bus``: ``handler`` hears every other member; ``member.send`` reaches them.

        See :mod:`synaptic_mesh.patterns.bus` for order, lifetime and errors.
        """
        from synaptic_mesh.patterns.bus import join_bus

        return await join_bus(self, bus, handler)

    async def survey(
        self,
        group: str,
        question: Any,
        *,
        timeout: float = 10.0,
        quorum: int | None = None,
    ) -> SurveyResult:
        """Ask the ``@respond`` actors of ``group``; the votes that arrive in time.

        Returns early once ``quorum`` votes are in. Each respondent votes at
        most once; a vote after the deadline is dropped (and counted). See
        :mod:`synaptic_mesh.patterns.survey`.
        """
        from synaptic_mesh.patterns.survey import survey

        return await survey(
            self.node, group, question, timeout=timeout, quorum=quorum, sender=self.subject
        )

    def hotline(
        self,
        peer: str,
        *,
        timeout: float = 5.0,
        heartbeat: float | None = 1.0,
        misses: int = 3,
    ) -> AbstractAsyncContextManager[Hotline]:
        """``async with self.hotline(peer) as line``: an exclusive, ordered two-way line.

        Raises ``HotlineBusy`` when ``peer`` is on another line,
        ``HotlineRefused`` when it takes no hotlines. See
        :mod:`synaptic_mesh.patterns.hotline` for closing and heartbeats.
        """
        from synaptic_mesh.patterns.hotline import open_hotline

        return open_hotline(self, peer, timeout=timeout, heartbeat=heartbeat, misses=misses)

    async def feed(self, pipeline: str, item: Any, *, timeout: float | None = None) -> None:
        """Give ``item`` to ``pipeline``; waits while its first stage has no credit.

        Raises ``PipelineClosed`` when it does not run. See
        :mod:`synaptic_mesh.patterns.pipeline`.
        """
        from synaptic_mesh.patterns.pipeline import feed

        await feed(self.node, pipeline, item, sender=self.subject, timeout=timeout)

    def feeder(self, pipeline: str, *, window: int = 64, timeout: float | None = None) -> Feeder:
        """``async with self.feeder(pipeline) as f: await f.put(item)``: many feeds in flight.

        For a producer on another node than the pipeline (see
        :mod:`synaptic_mesh.patterns.feeder`): up to ``window`` items travel
        unanswered, so the rate is not bound by the link's round trip.
        """
        from synaptic_mesh.patterns.feeder import Feeder

        return Feeder(self.node, pipeline, window=window, sender=self.subject, timeout=timeout)

    def stop(self) -> None:
        """Stop this actor once the current message is handled (a normal exit)."""
        self._mesh_cell.request_stop("stopped by itself")

    def monitor(self, target: str | ActorRef) -> int:
        """Watch ``target``: this actor gets one ``Down(subject, reason)`` when it ends.

        Fires once, when the watched actor stops or crashes (even if its
        supervisor restarts it), as Erlang's monitors do; at once with reason
        ``"noproc"`` if nothing runs there. Returns a reference for ``demonitor``.
        """
        subject = target if isinstance(target, str) else target.address
        return self.node.monitor(subject, self.subject)

    def demonitor(self, reference: int) -> None:
        """Cancel a monitor; a ``Down`` not yet delivered is not sent."""
        self.node.demonitor(reference)
