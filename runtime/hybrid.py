"""Hybrid deployments: one node on several transports, a routes table, and bridges.

The seed's migration advice ("run NATS alongside ZeroMQ, migrate one agent at
a time"; "add shared memory for point-cloud transfers between co-located
agents") needs a node that sits on more than one transport at once.
:class:`HybridTransport` is that node's transport: it implements the ordinary
transport SPI on top of several member transports, so the node, its actors
and every pattern run unchanged on it (patterns use their generic lowerings).

Rules:

* **Publishing** follows the routes table: the first :class:`Route` whose
  subject patterns match (and whose conditions hold) names the transport;
  otherwise the default transport carries the message. A route may carry
  only large messages (``min_size``: all frames together, in bytes), and only
  when a node on that transport serves the subject (``when_served``, for
  transports that know their peers' interest, such as ``shm://``): that is
  how a 100 MB point cloud to a co-located agent goes through shared memory
  while everything else, including small messages on the same subject,
  travels over NATS.
* **Subscribing** happens on every member transport, so each actor of a
  hybrid node is reachable from every mesh the node is on; a message arrives
  over exactly one of them (its publisher picked one), so queue groups still
  serve each message once.
* **Replies** go back the way the request came: the transport that delivered
  a message with a reply subject is remembered for that subject (a bounded
  table), so a reply to an asker that lives only on ``shm://`` does not leave
  over NATS. A reply subject not in the table goes out on every member.
* **Bridges** join meshes for agents on other nodes: a :class:`Bridge`
  subscribes to its subjects on the ``source`` transport and republishes each
  message on ``target``, reply subject included; the replies (and the
  target's "no responders" status) come back because the bridge also
  forwards the asker's reply inbox from ``target`` to ``source``. A message
  the bridge put on a transport is recognised when it comes back (by its
  first frame, which holds the envelope's unique id) and is neither bridged
  again nor delivered twice to this node's own subscribers.

Capabilities are what every member promises (the weakest ordering and
delivery); ``max_message`` is the largest any member takes, since a route
may send a message the default transport could not carry (each member still
refuses what is too big for it); ``native`` is empty.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.runtime.router_link import frames_size
from synaptic_mesh.runtime.subjects import ONE_TIME_PREFIX, SubjectTable, validate_pattern
from synaptic_mesh.runtime.transport_lookup import open_transport
from synaptic_mesh.transports.base import (
    Capabilities,
    Frame,
    Handler,
    Subscription,
    Transport,
    eager_as,
)

log = logging.getLogger("synaptic_mesh.hybrid")

REPLY_PATHS = 10_000
"""How many reply subjects remember the transport their request came over."""
BRIDGED_MEMORY = 10_000
"""How many bridged messages are remembered, to recognise them when they come back."""


@dataclass(frozen=True)
class Route:
    """Publish subjects matching ``subjects`` over the transport at URL ``transport``.

    ``min_size``: only messages at least this many bytes (all frames).
    ``when_served``: only when a node reachable over that transport serves the
    subject (the transport must know its peers' interest).
    """

    subjects: tuple[str, ...]
    transport: str
    min_size: int = 0
    when_served: bool = False

    def __post_init__(self) -> None:
        if not self.subjects:
            raise ValueError("a route needs at least one subject pattern")
        for pattern in self.subjects:
            validate_pattern(pattern)
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")


@dataclass(frozen=True)
class Bridge:
    """Republish what ``source`` carries on ``subjects`` over ``target`` (URLs)."""

    subjects: tuple[str, ...]
    source: str
    target: str

    def __post_init__(self) -> None:
        if not self.subjects:
            raise ValueError("a bridge needs at least one subject pattern")
        for pattern in self.subjects:
            validate_pattern(pattern)
        if self.source == self.target:
            raise ValueError(f"a bridge needs two different transports, got {self.source!r} twice")


def _fingerprint(frames: Sequence[Frame]) -> int | None:
    """What identifies one message across transports: its first frame (the envelope)."""
    if not frames:
        return None
    first = frames[0]
    if isinstance(first, bytes | bytearray | memoryview):
        return hash(bytes(first))
    return id(first)


class _Bounded(OrderedDict[Any, Any]):
    """A dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > self.limit:
            self.popitem(last=False)


class HybridSubscription(Subscription):
    """One subscription made on every member transport."""

    def __init__(self, pattern: str, queue: str | None, parts: list[Subscription]) -> None:
        self.pattern = pattern
        self.queue = queue
        self._parts = parts

    async def unsubscribe(self) -> None:
        parts, self._parts = self._parts, []
        for part in parts:
            await part.unsubscribe()


class HybridTransport(Transport):
    """Several transports behind one (see module docstring).

    ``default``: the URL (or transport) that carries what no route claims.
    ``routes`` and ``bridges`` name their transports by URL; each distinct URL
    is opened once. ``transports`` may supply already-built transports by URL.
    """

    scheme: ClassVar[str] = "hybrid"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=True,
        zero_copy=False,
        max_message=1,
    )

    def __init__(
        self,
        default: str,
        routes: Iterable[Route] = (),
        bridges: Iterable[Bridge] = (),
        *,
        transports: dict[str, Transport] | None = None,
    ) -> None:
        super().__init__(f"hybrid:{default}")
        self.routes = tuple(routes)
        self.bridges = tuple(bridges)
        urls = [default, *(r.transport for r in self.routes)]
        urls += [u for b in self.bridges for u in (b.source, b.target)]
        given = dict(transports or {})
        self.members: dict[str, Transport] = {}
        for url in urls:
            if url not in self.members:
                self.members[url] = given.pop(url, None) or open_transport(url)
        self.default = self.members[default]
        self.capabilities = _combined([t.capabilities for t in self.members.values()])  # type: ignore[misc]
        self._route_table: SubjectTable[int] = SubjectTable()
        for index, route in enumerate(self.routes):
            for pattern in route.subjects:
                self._route_table.add(pattern, index)
        self._reply_paths: _Bounded = _Bounded(REPLY_PATHS)
        self._bridged: _Bounded = _Bounded(BRIDGED_MEMORY)  # fingerprint -> target transport
        self._return_paths: set[tuple[str, str]] = set()  # (inbox prefix, bridge target url)
        self._bridge_subs: list[Subscription] = []
        self._state = "new"
        # hooks of link transports, forwarded from every member that has them
        self.on_peer_up: list[Callable[[str], Any]] = []
        self.on_peer_down: list[Callable[[str, str], Any]] = []
        self.on_interest_gone: list[Callable[[str, str], Any]] = []
        self.on_bad_frame: list[Callable[[Any], Any]] = []
        for member in self.members.values():
            for name in ("on_peer_up", "on_peer_down", "on_interest_gone", "on_bad_frame"):
                hooks = getattr(member, name, None)
                if isinstance(hooks, list):
                    hooks.append(self._relay(name))

    def _relay(self, name: str) -> Callable[..., None]:
        def relay(*args: Any) -> None:
            for hook in getattr(self, name):
                hook(*args)

        return relay

    @property
    def id(self) -> str | None:
        """The node id, handed to every member that routes by links."""
        return getattr(self.default, "id", None)

    @id.setter
    def id(self, value: str) -> None:
        for member in self.members.values():
            if hasattr(member, "on_peer_down"):
                member.id = value  # type: ignore[attr-defined]

    def peers_serving(self, subject: str) -> list[str]:
        """Peers serving ``subject`` on any member that knows (monitors use it)."""
        found: set[str] = set()
        for member in self.members.values():
            serving = getattr(member, "peers_serving", None)
            if serving is not None:
                found.update(serving(subject))
        return sorted(found)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._state == "running":
            return
        if self._state != "new":
            raise TransportClosed(f"transport {self.url} was closed; open a new one")
        started: list[Transport] = []
        try:
            for member in self.members.values():
                await member.start()
                started.append(member)
            self._state = "running"
            for bridge in self.bridges:
                source = self.members[bridge.source]
                for pattern in bridge.subjects:
                    sub = await source.subscribe(pattern, self._bridge_handler(bridge))
                    self._bridge_subs.append(sub)
        except BaseException:
            self._state = "closed"
            for member in reversed(started):
                with contextlib.suppress(Exception):
                    await member.close()
            raise

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        for sub in self._bridge_subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._bridge_subs.clear()
        for member in reversed(list(self.members.values())):
            await member.close()

    async def settled(self) -> None:
        """Every member's echo is home (see ``Transport.settled``)."""
        for member in self.members.values():
            await member.settled()

    def _check_open(self) -> None:
        if self._state != "running":
            raise TransportClosed(f"transport {self.url} is {self._state}, not running")

    # -- publish ---------------------------------------------------------------------

    async def publish(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> None:
        self._check_open()
        if subject.startswith(ONE_TIME_PREFIX) and len(self.members) > 1:
            member = self._reply_paths.get(subject)
            if member is None:  # no request seen for it: the asker may be on any member
                for each in self.members.values():
                    await each.publish(subject, frames, reply_to)
                return
            await member.publish(subject, frames, reply_to)
            return
        await self.route_for(subject, frames).publish(subject, frames, reply_to)

    def route_for(self, subject: str, frames: Sequence[Frame]) -> Transport:
        """The member transport that carries a publish of ``frames`` on ``subject``."""
        if self.routes:
            for index in sorted(self._route_table.match(subject).plain):
                route = self.routes[index]
                member = self.members[route.transport]
                if route.min_size and frames_size(frames) < route.min_size:
                    continue
                if route.when_served and not _serves(member, subject):
                    continue
                return member
        return self.default

    # -- subscribe -------------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        self._check_open()
        parts: list[Subscription] = []
        try:
            for member in self.members.values():
                parts.append(await member.subscribe(pattern, self._local(member, handler), queue))
        except BaseException:
            for part in parts:
                with contextlib.suppress(Exception):
                    await part.unsubscribe()
            raise
        return HybridSubscription(pattern, queue, parts)

    def _local(self, member: Transport, handler: Handler) -> Handler:
        """``handler`` as delivered over ``member``: remembers reply paths, skips bridged copies."""
        several = len(self.members) > 1
        bridging_into = any(self.members[b.target] is member for b in self.bridges)

        async def deliver(subject: str, frames: Sequence[Frame], reply_to: str | None) -> None:
            if bridging_into and self._bridged:
                key = _fingerprint(frames)
                if key is not None and self._bridged.get(key) is member:
                    return  # our own bridged copy: this node's subscribers had the original
            if several and reply_to is not None:
                self._reply_paths.put(reply_to, member)
            await handler(subject, frames, reply_to)

        return eager_as(handler, deliver)

    # -- bridges ---------------------------------------------------------------------

    def _bridge_handler(self, bridge: Bridge) -> Handler:
        source = self.members[bridge.source]
        target = self.members[bridge.target]

        async def forward(subject: str, frames: Sequence[Frame], reply_to: str | None) -> None:
            key = _fingerprint(frames)
            if key is not None:
                if key in self._bridged:
                    return  # a message a bridge of ours put on this transport
                self._bridged.put(key, target)
            if reply_to is not None and reply_to.startswith(ONE_TIME_PREFIX):
                await self._return_path(reply_to, source, target, bridge.target)
            try:
                await target.publish(subject, frames, reply_to)
            except (TransportClosed, ValueError, OSError) as exc:
                log.warning(
                    "bridge %s -> %s dropped %s: %s", bridge.source, bridge.target, subject, exc
                )

        return forward

    async def _return_path(
        self, reply_to: str, source: Transport, target: Transport, target_url: str
    ) -> None:
        """Forward the asker's reply inbox from ``target`` back to ``source`` (once per asker)."""
        tokens = reply_to.split(".")
        prefix = ".".join(tokens[:2]) + ".>" if len(tokens) > 2 else reply_to
        if (prefix, target_url) in self._return_paths:
            return
        self._return_paths.add((prefix, target_url))

        async def back(subject: str, frames: Sequence[Frame], _reply: str | None) -> None:
            key = _fingerprint(frames)
            if key is not None:
                self._bridged.put(key, source)
            try:
                await source.publish(subject, frames)
            except (TransportClosed, ValueError, OSError) as exc:
                log.warning("bridge reply to %s dropped: %s", subject, exc)

        self._bridge_subs.append(await target.subscribe(prefix, back))


def _serves(member: Transport, subject: str) -> bool:
    serving = getattr(member, "peers_serving", None)
    return bool(serving is not None and serving(subject))


def _combined(caps: list[Capabilities]) -> Capabilities:
    """What a message can count on whichever member carries it."""
    return Capabilities(
        ordered=all(c.ordered for c in caps),
        delivery="at-least-once"
        if all(c.delivery == "at-least-once" for c in caps)
        else "at-most-once",
        durable=all(c.durable for c in caps),
        replay=all(c.replay for c in caps),
        cross_host=any(c.cross_host for c in caps),
        zero_copy=all(c.zero_copy for c in caps),
        max_message=max(c.max_message for c in caps),  # each member enforces its own
        native=frozenset(),
        by_reference=False,
        knows_interest=all(c.knows_interest for c in caps),
    )


__all__ = ["Bridge", "HybridSubscription", "HybridTransport", "Route"]
