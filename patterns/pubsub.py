"""Pub-sub: ``await self.publish(topic, msg)``, ``@subscribe(pattern)``, ``self.subscribe(...)``.

Semantics:

- ``publish`` delivers the message to every subscription whose pattern
  matches ``topic`` (``*`` one token, ``>`` the rest, as in NATS) and to
  exactly one member of each matching queue group. It returns once the
  transport took the message; with nobody subscribed the message is dropped
  (pub-sub is at-most-once, like NATS core). Messages from one publisher on
  one topic arrive in publish order on transports whose capabilities say
  ``ordered``. Raises ``TransportClosed`` once the node no longer sends.
- ``@subscribe("tot.*.exploration")`` on a handler method subscribes for
  the actor's whole life (across supervisor restarts, until it stops).
- ``await self.subscribe(pattern, handler, queue=None)`` subscribes while
  the actor runs and returns an :class:`ActorSubscription`. Deliveries go
  through the actor's mailbox exactly as ``@subscribe`` deliveries do: one
  at a time, in order, ``self.current_subject`` set to the concrete subject.
  ``handler`` is a coroutine method of the actor (``self.on_news``) or any
  ``async def f(message)``. A dynamic subscription belongs to the actor's
  *incarnation*: it ends when the actor stops, crashes or is restarted (the
  restarted instance subscribes again from ``on_restart``/``on_start`` if it
  wants to), or at ``await sub.unsubscribe()`` /
  ``await self.unsubscribe(sub_or_pattern)``. Messages already in the
  mailbox when it ends are still handled.

Lowering: the generic lowering is the transport SPI itself (``publish``
through the node's ordered outbox, ``subscribe`` on the transport). A
transport listing ``"pub-sub"`` in ``capabilities.native`` supplies a
:class:`PubSubLowering`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from synaptic_mesh.patterns import attach
from synaptic_mesh.patterns.lowering import PUB_SUB, lowering_for
from synaptic_mesh.runtime.subjects import validate_pattern, validate_subject
from synaptic_mesh.transports.base import Handler, Subscription

if TYPE_CHECKING:
    from synaptic_mesh.actors.actor import AgentActor
    from synaptic_mesh.runtime.node import Node

ActorHandler = Callable[[Any, Any], Awaitable[Any]]
"""``await handler(actor, message)``: how a mailbox calls a subscription's handler."""


class PubSubLowering(Protocol):
    """What a native pub-sub lowering supplies."""

    async def publish(self, node: Node, topic: str, message: Any, *, sender: str | None) -> None:
        """Publish ``message`` on ``topic`` for ``node`` (in order with its other sends)."""
        ...

    async def subscribe(
        self, node: Node, pattern: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        """Call ``handler(subject, frames, reply_to)`` for each message matching ``pattern``."""
        ...


class GenericPubSub:
    """Pub-sub on the transport SPI (see module docstring)."""

    def publish(
        self, node: Node, topic: str, message: Any, *, sender: str | None
    ) -> Coroutine[Any, Any, None]:
        return node.publish(topic, message, sender=sender)  # no extra await for the hook

    async def subscribe(
        self, node: Node, pattern: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        return await node.transport.subscribe(pattern, handler, queue)


def _lowering(node: Node) -> PubSubLowering:
    return node.lowerings.get(PUB_SUB) or lowering_for(node, PUB_SUB, GenericPubSub)


def publish(
    node: Node, topic: str, message: Any, *, sender: str | None = None
) -> Coroutine[Any, Any, None]:
    """Publish ``message`` on ``topic`` (``await`` it); see the module docstring."""
    return _lowering(node).publish(node, topic, message, sender=sender)  # type: ignore[return-value]


class ActorSubscription(attach.HeldSubscription):
    """A dynamic subscription of one actor incarnation; ``await unsubscribe()`` ends it.

    ``pattern`` and ``queue`` are what was subscribed; ``active`` turns false
    once it ended (by ``unsubscribe`` or the end of the incarnation).
    """

    def __init__(self, actor: AgentActor, pattern: str, queue: str | None) -> None:
        super().__init__(actor)
        self.pattern = pattern
        self.queue = queue

    def __repr__(self) -> str:
        state = "active" if self.active else "ended"
        return f"<ActorSubscription {self.pattern!r} queue={self.queue!r} {state}>"

    async def unsubscribe(self) -> None:
        """Stop further deliveries (idempotent)."""
        await self.release("unsubscribed")


def as_actor_handler(actor: AgentActor, handler: Callable[..., Any]) -> ActorHandler:
    """``handler`` (a coroutine method of ``actor`` or ``async def f(msg)``) as ``f(actor, msg)``.

    Raises ``TypeError`` when ``handler`` is not a coroutine function.
    """
    target = getattr(handler, "__func__", None)
    if target is not None and getattr(handler, "__self__", None) is actor:
        if not inspect.iscoroutinefunction(target):
            raise TypeError(f"handler {handler!r} must be 'async def'")
        return target  # type: ignore[no-any-return]
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"handler {handler!r} must be an 'async def' function or method")

    async def call(_actor: Any, message: Any) -> Any:
        return await handler(message)

    return call


async def subscribe_actor(
    actor: AgentActor,
    pattern: str,
    handler: Callable[..., Any],
    *,
    queue: str | None = None,
) -> ActorSubscription:
    """Subscribe ``actor``'s current incarnation to ``pattern``; see the module docstring.

    Raises ``InvalidSubject`` for a bad pattern or queue name, ``TypeError``
    for a handler that is not a coroutine, ``TransportClosed`` when the node
    is closed.
    """
    validate_pattern(pattern)
    if queue is not None:
        validate_subject(queue)
    fn = as_actor_handler(actor, handler)
    node = actor.node
    cell = actor._mesh_cell
    handle = ActorSubscription(actor, pattern, queue)
    deliver = handle.guard(node.subscription_delivery(cell, fn))
    handle.hold(await _lowering(node).subscribe(node, pattern, deliver, queue=queue))
    return handle


async def unsubscribe_actor(actor: AgentActor, target: ActorSubscription | str) -> int:
    """End one subscription, or every dynamic one on the pattern ``target``; returns how many.

    Unsubscribing what is not subscribed does nothing and returns 0.
    ``@subscribe`` subscriptions are not affected.
    """
    if isinstance(target, ActorSubscription):
        was = target.active
        await target.unsubscribe()
        return int(was)
    matching = [
        r for r in attach.tracked(actor) if isinstance(r, ActorSubscription) and r.pattern == target
    ]
    for handle in matching:
        await handle.unsubscribe()
    return len(matching)
