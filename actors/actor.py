"""``AgentActor``: the class an agent subclasses.

An agent is behaviour and state; the runtime (its cell and node) gives it a
mailbox, an address and the ways to talk: ``ask``, ``tell``, ``publish``.
Handlers are declared with ``@on(MessageType)`` and the dispatch table is
built once, when the class is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from synaptic_mesh.actors.handlers import SubscriptionSpec, build_handler_table
from synaptic_mesh.actors.mailbox import Overflow
from synaptic_mesh.actors.ref import DEFAULT_ASK_TIMEOUT, ActorRef

if TYPE_CHECKING:
    from synaptic_mesh.actors.cell import ActorCell
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
        return table

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

    async def _mesh_start(self) -> None:
        await self.on_start()

    async def _mesh_restart(self, reason: str) -> None:
        await self.on_restart(reason)

    async def _mesh_stop(self) -> None:
        await self.on_stop()

    # -- talking -------------------------------------------------------------

    async def ask(
        self, subject: str, message: Any, *, timeout: float | None = DEFAULT_ASK_TIMEOUT
    ) -> Any:
        """Send ``message`` to ``subject`` and return the reply.

        Raises ``AskTimeout`` after ``timeout`` seconds, ``NoResponders`` at
        once when nobody serves the subject, ``RemoteError`` when the handler
        raised.
        """
        return await self.node.ask(subject, message, timeout=timeout, sender=self.subject)

    async def tell(self, subject: str, message: Any) -> None:
        """Send ``message`` to ``subject`` without waiting for a reply.

        Waits while the receiver's mailbox is full (``block`` policy).
        """
        await self.node.tell(subject, message, sender=self.subject)

    def tell_nowait(self, subject: str, message: Any) -> None:
        """Send without waiting; raises ``MailboxFull`` instead of blocking."""
        self.node.tell_nowait(subject, message, sender=self.subject)

    async def publish(self, topic: str, message: Any) -> None:
        """Publish ``message`` to every subscriber of ``topic``."""
        await self.node.publish(topic, message, sender=self.subject)

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
