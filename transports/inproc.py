"""``inproc://[NAME]``: the embedded default, one event loop, no copy, no encode.

Every transport opened on the same URL in one process joins one hub; a hub
routes with the shared :class:`SubjectTable` and hands the envelope object
itself to each handler (``by_reference``), awaiting handlers in turn so a slow
subscriber pushes back on its publisher. Nodes that want separate meshes in
one process use different names (``inproc://a``, ``inproc://b``).

Delivery is at-most-once and ordered per publisher and subject; nothing is
durable; the hub knows every subscription, so it reports "no responders".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.runtime.subjects import SubjectTable, validate_subject
from synaptic_mesh.transports.base import (
    NO_RESPONDERS,
    Capabilities,
    Frame,
    Handler,
    HandlerSubscription,
    Subscription,
    Transport,
)

MAX_MESSAGE = 2**63 - 1  # objects are passed by reference: no size limit applies

_HUBS: dict[str, _Hub] = {}


class _Hub:
    """The shared routing table of all inproc transports opened on one name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.table: SubjectTable[HandlerSubscription] = SubjectTable()
        self.members = 0


class InprocTransport(Transport):
    """In-process transport (see module docstring)."""

    scheme: ClassVar[str] = "inproc"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=False,
        zero_copy=True,
        max_message=MAX_MESSAGE,
        native=frozenset(),  # every pattern uses its generic lowering (see native_lowering)
        by_reference=True,
        knows_interest=True,
    )

    def __init__(self, url: str = "inproc://", **options: Any) -> None:
        super().__init__(url, **options)
        if not url.startswith("inproc://"):
            raise ValueError(f"not an inproc URL: {url!r}")
        self.name = url[len("inproc://") :]
        self._hub: _Hub | None = None
        # An insertion-ordered set (dict keys): unsubscribing is O(1) even when
        # a node holds one subscription per actor for 100k actors.
        self._subscriptions: dict[HandlerSubscription, None] = {}
        self._closed = False

    # -- connect -------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise TransportClosed("inproc transport was closed; open a new one")
        if self._hub is not None:
            return
        hub = _HUBS.get(self.name)
        if hub is None:
            hub = _HUBS[self.name] = _Hub(self.name)
        hub.members += 1
        self._hub = hub

    # -- publish -------------------------------------------------------------

    async def publish(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> None:
        hub = self._hub
        if hub is None or self._closed:
            raise TransportClosed(f"inproc transport {self.url!r} is not open")
        targets = hub.table.pick(subject)
        if not targets:
            validate_subject(subject)
            if reply_to is not None and frames:
                for sub in hub.table.pick(reply_to):
                    await sub.handler(reply_to, NO_RESPONDERS, None)
            return
        for sub in targets:
            if sub.active:
                await sub.handler(subject, frames, reply_to)

    def peers_serving(self, subject: str) -> list[str]:
        """The other transports of this hub with a subscription matching ``subject``.

        The hub sees every subscription, so a monitor of an actor on another
        node of the same hub can tell "nobody is there" (``noproc``).
        """
        hub = self._hub
        if hub is None:
            return []
        match = hub.table.match(subject)
        owners = {sub._owner for sub in match.plain} | {
            sub._owner for group in match.groups for sub in group
        }
        owners.discard(self)
        return sorted(f"{owner.url}#{id(owner):x}" for owner in owners)

    # -- subscribe -------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        return self._subscribe(pattern, handler, queue, None)

    async def subscribe_except(self, pattern: str, handler: Handler, unless: str) -> Subscription:
        """``subscribe``, with ``unless`` left out of the hub's matches for this handler."""
        return self._subscribe(pattern, handler, None, unless)

    def _subscribe(
        self, pattern: str, handler: Handler, queue: str | None, unless: str | None
    ) -> Subscription:
        hub = self._hub
        if hub is None or self._closed:
            raise TransportClosed(f"inproc transport {self.url!r} is not open")
        sub = HandlerSubscription(self, pattern, handler, queue)
        hub.table.add(pattern, sub, queue, unless=unless)  # validates pattern, queue, unless
        self._subscriptions[sub] = None
        return sub

    def _forget(self, sub: HandlerSubscription) -> None:
        if self._hub is not None:
            self._hub.table.remove(sub.pattern, sub, sub.queue)
        self._subscriptions.pop(sub, None)

    # -- close -------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.unsubscribe()
        hub = self._hub
        self._hub = None
        if hub is not None:
            hub.members -= 1
            if hub.members == 0 and _HUBS.get(hub.name) is hub:
                del _HUBS[hub.name]


def open_hubs() -> list[str]:
    """Names of hubs with open transports (tests check none is left behind)."""
    return list(_HUBS)
