"""Bus: a named group where every member hears every other member, never itself.

``member = await self.join_bus("council", self.on_council)`` joins;
``await member.send(msg)`` reaches every *other* member of the bus, on every
node; ``await member.leave()`` leaves.

Semantics:

- Delivery goes through each receiving member's mailbox to its handler, like
  a subscription's: one at a time, ``self.current_sender`` names the member
  that sent it. A member never receives its own messages.
- Order: every member sees one sender's messages in the order sent (per
  sender, on transports whose capabilities say ``ordered``); messages of
  different senders may interleave differently at different members.
- Membership: a member hears what is sent after its ``join_bus`` returned
  (on link transports, after the other nodes confirmed the new interest) and
  until it leaves. Membership belongs to the actor's incarnation: it ends
  when the actor stops, crashes or is restarted. Delivery is at-most-once,
  like pub-sub.
- Errors: bus names are one token (``council``, not ``a.b``; no wildcards):
  ``InvalidSubject`` otherwise. Joining a bus twice from one actor raises
  ``ValueError``; ``send`` after ``leave`` raises ``MeshError``;
  ``TransportClosed`` once the node no longer sends.

Lowering: the generic lowering publishes on ``_bus.<bus>.<member subject>``
and each member subscribes to ``_bus.<bus>.>`` except its own subject
(``Transport.subscribe_except``: the link router and the in-process hub leave
it out of the match, so a member's send is not also delivered to itself only
to be dropped; other transports filter by subject, with no decoding). A transport listing
``"bus"`` in ``capabilities.native`` supplies a :class:`BusLowering` (NNG Bus0).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from synaptic_mesh.patterns import attach
from synaptic_mesh.patterns.lowering import BUS, lowering_for
from synaptic_mesh.patterns.pubsub import as_actor_handler
from synaptic_mesh.runtime.errors import MeshError
from synaptic_mesh.runtime.subjects import InvalidSubject, validate_subject
from synaptic_mesh.transports.base import Handler, Subscription

if TYPE_CHECKING:
    from synaptic_mesh.actors.actor import AgentActor
    from synaptic_mesh.runtime.node import Node

BUS_PREFIX: Final = "_bus"


class BusLowering(Protocol):
    """What a native bus lowering supplies."""

    async def join(self, node: Node, bus: str, member: str, handler: Handler) -> Subscription:
        """Deliver to ``handler`` what the other members of ``bus`` send, never ``member``'s own."""
        ...

    def send(self, node: Node, bus: str, member: str, message: Any) -> Awaitable[None]:
        """Send ``message`` from ``member`` to every other member of ``bus``."""
        ...


class GenericBus:
    """A bus on publish and wildcard subscriptions (see module docstring)."""

    async def join(self, node: Node, bus: str, member: str, handler: Handler) -> Subscription:
        own = f"{BUS_PREFIX}.{bus}.{member}"
        return await node.transport.subscribe_except(f"{BUS_PREFIX}.{bus}.>", handler, own)

    def send(self, node: Node, bus: str, member: str, message: Any) -> Awaitable[None]:
        return node.publish(f"{BUS_PREFIX}.{bus}.{member}", message, sender=member)


def _lowering(node: Node) -> BusLowering:
    return node.lowerings.get(BUS) or lowering_for(node, BUS, GenericBus)


def validate_bus_name(bus: str) -> str:
    """Check that ``bus`` is one subject token; returns it. Raises ``InvalidSubject``."""
    validate_subject(bus)
    if "." in bus:
        raise InvalidSubject(bus, f"a bus name is one token, without dots: {bus!r}")
    return bus


class BusMember(attach.HeldSubscription):
    """One actor's membership of one bus (see module docstring)."""

    def __init__(self, actor: AgentActor, bus: str) -> None:
        super().__init__(actor)
        self.bus = bus
        self.member = actor.subject
        # found once: a send is on the hot path, and neither changes for this membership
        self._node = actor.node
        self._lowering = _lowering(self._node)

    def __repr__(self) -> str:
        state = "member" if self.active else "left"
        return f"<BusMember {self.member} of {self.bus!r} {state}>"

    def send(self, message: Any) -> Awaitable[None]:
        """Send ``message`` to every other member of the bus: ``await member.send(msg)``.

        Raises ``MeshError`` after ``leave``, ``TransportClosed`` when the node
        no longer sends. A plain function returning what to await (the
        lowering's send itself: no coroutine of its own per message).
        """
        if not self.active:
            raise MeshError(f"{self.member} has left bus {self.bus!r}")
        return self._lowering.send(self._node, self.bus, self.member, message)

    async def leave(self) -> None:
        """Stop hearing the bus (idempotent); messages already queued are still handled."""
        await self.release("left")


async def join_bus(actor: AgentActor, bus: str, handler: Callable[..., Any]) -> BusMember:
    """Make ``actor`` a member of ``bus``; ``handler(message)`` hears the others.

    ``handler`` is a coroutine method of the actor or an ``async def f(msg)``.
    Raises as stated in the module docstring.
    """
    validate_bus_name(bus)
    fn = as_actor_handler(actor, handler)
    for resource in attach.tracked(actor):
        if isinstance(resource, BusMember) and resource.bus == bus:
            raise ValueError(f"{actor.subject} is already a member of bus {bus!r}")
    node = actor.node
    cell = actor._mesh_cell
    member = BusMember(actor, bus)
    deliver = member.guard(node.subscription_delivery(cell, fn))
    member.hold(await _lowering(node).join(node, bus, actor.subject, deliver))
    return member
