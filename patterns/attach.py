"""What patterns keep per actor: declared roles, and the resources of an incarnation.

Two lifetimes, the same as subscriptions have:

- *Declared* roles (``@respond`` survey respondents, accepting hotlines by
  defining ``on_hotline``) are set up once, before the first ``on_start``,
  and last as long as the actor (across supervisor restarts, like
  ``@subscribe``): :func:`attach_declared`, called by ``AgentActor``. Their
  transport subscriptions join the cell's own list, so they end with the cell.
- *Dynamic* resources (``self.subscribe``, ``self.join_bus``, open hotlines)
  belong to one incarnation: :func:`track` records them and
  :func:`incarnation_ended` ends them when the incarnation ends for any
  reason (stop, crash, restart, kill). The node calls it synchronously from
  ``Node.incarnation_ended``, after ``on_stop`` and before a supervisor can
  start the next incarnation, so a restarted actor never receives what its
  previous incarnation subscribed to; the asynchronous rest (unsubscribing,
  telling a line's other end) runs as a node task. It is not tied to
  ``_mesh_stop``, which the cell skips for actors without an ``on_stop``.

``ThreadedAgentActor`` runs its own start hook, so declared roles do not
apply to it, and its blocking API has no dynamic ones: its patterns are
``ask``, ``tell`` and ``publish``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.errors import MeshError
from synaptic_mesh.transports.base import eager_as

if TYPE_CHECKING:
    from collections.abc import Sequence

    from synaptic_mesh.actors.actor import AgentActor
    from synaptic_mesh.transports.base import Handler, Subscription

log = logging.getLogger("synaptic_mesh.patterns")

RESPOND_ATTR = "__mesh_respond__"
"""Mark set by ``@respond``: a tuple of ``(group, queue)``."""

_RESOURCES = "_mesh_resources"
_PLAN = "_mesh_pattern_plan"


class Resource(Protocol):
    """Something an incarnation holds and must give back when it ends.

    ``end`` stops it at once (no further delivery reaches the actor) and
    ``release`` finishes the job (unsubscribing, telling the other side);
    both are idempotent, and ``release`` implies ``end``.
    """

    def end(self, reason: str) -> None: ...

    async def release(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Plan:
    """What a class declares: its survey respondents, whether it takes hotlines."""

    respondents: tuple[tuple[str, str | None, str], ...]  # (group, queue, method name)
    takes_hotlines: bool

    def __bool__(self) -> bool:
        return bool(self.respondents) or self.takes_hotlines


def plan_of(cls: type[AgentActor]) -> Plan:
    """The declared roles of ``cls`` (computed once per class)."""
    plan = cls.__dict__.get(_PLAN)
    if plan is None:
        from synaptic_mesh.actors.actor import AgentActor

        respondents = []
        for name in sorted(dir(cls)):
            marks = getattr(getattr(cls, name, None), RESPOND_ATTR, ())
            for group, queue in marks:
                respondents.append((group, queue, name))
        plan = Plan(tuple(respondents), cls.on_hotline is not AgentActor.on_hotline)
        setattr(cls, _PLAN, plan)
    return plan  # type: ignore[no-any-return]


async def attach_declared(actor: AgentActor) -> None:
    """Set up ``actor``'s declared roles (before its first ``on_start``)."""
    plan = plan_of(type(actor))
    if not plan:
        return
    if plan.respondents:
        from synaptic_mesh.patterns.survey import attach_respondent

        for group, queue, method in plan.respondents:
            await attach_respondent(actor, group, method, queue=queue)
    if plan.takes_hotlines:
        from synaptic_mesh.patterns.hotline import accept_hotlines

        await accept_hotlines(actor)


def track(actor: AgentActor, resource: Resource) -> None:
    """Record ``resource`` as held by ``actor``'s current incarnation."""
    resources: list[Any] | None = actor.__dict__.get(_RESOURCES)
    if resources is None:
        resources = actor.__dict__[_RESOURCES] = []
    resources.append(resource)


def untrack(actor: AgentActor, resource: Resource) -> None:
    """Forget ``resource`` (it was released by its owner)."""
    resources: list[Any] | None = actor.__dict__.get(_RESOURCES)
    if resources is not None and resource in resources:
        resources.remove(resource)


def tracked(actor: AgentActor) -> list[Any]:
    """The resources ``actor``'s incarnation holds, oldest first (a copy)."""
    return list(actor.__dict__.get(_RESOURCES, ()))


def incarnation_ended(
    actor: AgentActor, how: str, spawn: Callable[[Callable[[], Awaitable[None]]], None]
) -> None:
    """End every resource of ``actor``'s ended incarnation, newest first; never raises.

    Called synchronously by the node as the incarnation ends, so nothing is
    delivered to it once a restarted incarnation runs; the asynchronous part
    of each release runs in ``spawn`` (the node's task group).
    """
    resources: list[Any] | None = actor.__dict__.get(_RESOURCES)
    reason = f"{actor.subject} ended ({how})"
    while resources:
        resource = resources.pop()
        try:
            resource.end(reason)
            spawn(partial(_release_quietly, actor, resource, reason))
        except Exception:  # a closed node cannot spawn: the cell's end unsubscribes anyway
            log.debug("could not release %r of %s", resource, actor.subject, exc_info=True)


async def _release_quietly(actor: AgentActor, resource: Resource, reason: str) -> None:
    try:
        await resource.release(reason)
    except Exception:
        log.exception("releasing %r of %s failed", resource, actor.subject)


async def end_subscription(actor: AgentActor, subscription: Subscription) -> None:
    """Unsubscribe one of ``actor``'s transport subscriptions and drop it from its cell's list."""
    held = actor._mesh_cell.subscriptions
    if subscription in held:
        held.remove(subscription)
    with suppress(MeshError):  # the transport is closing: nothing more will be delivered
        await subscription.unsubscribe()


class HeldSubscription:
    """A transport subscription an incarnation holds (a dynamic subscription, a bus membership).

    Deliveries pass through :meth:`guard`, so they stop the moment the
    resource ends, even before the transport has processed the unsubscribe.
    """

    def __init__(self, actor: AgentActor) -> None:
        self._actor = actor
        self.active = True
        self._subscription: Subscription | None = None

    def guard(self, deliver: Handler) -> Handler:
        """``deliver``, called only while this resource is active."""

        def guarded(subject: str, frames: Sequence[Any], reply_to: str | None) -> Awaitable[None]:
            return deliver(subject, frames, reply_to) if self.active else DONE  # no frame between

        return eager_as(deliver, guarded)

    def hold(self, subscription: Subscription) -> None:
        """Take ``subscription`` (also put on the cell's list, which the cell's end releases)."""
        self._subscription = subscription
        self._actor._mesh_cell.subscriptions.append(subscription)
        track(self._actor, self)

    def end(self, reason: str) -> None:
        if self.active:
            self.active = False
            untrack(self._actor, self)

    async def release(self, reason: str) -> None:
        self.end(reason)
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await end_subscription(self._actor, subscription)
