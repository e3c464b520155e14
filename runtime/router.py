"""The shared subject router: the full transport SPI on top of links.

Link transports (``tcp://``, and later Unix sockets, ZeroMQ PAIR, WebSocket)
only move multipart messages between two nodes. :class:`RoutedTransport`
turns a set of such links into a NATS-like subject space, the way NATS
servers do over their routes:

* On connect both ends send HELLO (node id, protocol version, topology,
  receive window), then every subscription they should advertise (SUB
  pattern+queue), then a FLUSH; later changes follow as SUB/UNSUB. Interest
  rules per topology (full mesh, or a root/branch/leaf tree with split
  horizon and prefix filters) live in :mod:`~synaptic_mesh.runtime.router_interest`.
* A publish goes to the matching local subscriptions (echo) and is forwarded
  only to peers whose advertised interest matches, never to the others. A
  queue group is served exactly once overall: the publishing node picks one
  candidate round-robin among its local members and the peers advertising the
  group, and names the group in the MSG it sends; the receiver does the same
  among its own members (and, in a tree, its other neighbours).
* ``knows_interest``: a publish with ``reply_to`` that nobody wants gets the
  "no responders" status at once. While a link is still syncing (its peer has
  not confirmed our snapshot) that verdict waits, at most ``flush_timeout``.
  ``subscribe`` returns after every connected peer confirmed (FLUSH/FLUSHED,
  relayed through the whole tree) that it knows the new interest, so an ask
  issued right after a remote ``spawn`` finds its actor.
* Heartbeats: a PING every ``heartbeat`` seconds; a link silent for ``misses``
  intervals is aborted, the peer's interest is dropped and every
  ``on_peer_down`` callback gets ``(peer_id, reason)``. Dialed peers are
  redialled with exponential backoff and jitter and re-sync their interest.
* Flow control: the router reads every link all the time (so heartbeats and
  interest updates never wait behind data) and delivers MSGs from a per-link
  queue bounded by a credit window; a slow handler stops the credit and the
  sender's ``publish`` waits, the link's socket buffer bounds the rest.
* Bad input: a framing error (reported by the link) or a malformed router
  message closes only that link, logged at ERROR, and is reported to every
  ``on_bad_frame`` callback as a :class:`~synaptic_mesh.transports.base.BadFrame`
  (with the message's frames when there was a complete message), so the node
  can record a dead letter. Frames with a valid header are never inspected: a
  corrupt envelope is delivered and the node's decoder dead-letters it.
* In a full mesh two nodes that list each other dial twice; both links are
  kept, the first carries this side's traffic (order per peer), interest is
  counted per link, and the peer is down only when its last link is.

A subclass provides ``connector`` (a :class:`LinkConnector`) and settings.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.runtime.router_interest import Interest
from synaptic_mesh.runtime.router_link import (
    LinkState,
    LinkStats,
    Peer,
    frames_size,
    sole_recipient,
)
from synaptic_mesh.runtime.router_links import LinkService
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.runtime.subjects import InvalidSubject, SubjectTable, validate_pattern
from synaptic_mesh.transports.base import (
    NO_RESPONDERS,
    BadFrame,
    Frame,
    Handler,
    HandlerSubscription,
    LinkClosed,
    LinkConnector,
    LinkListener,
    Subscription,
    Transport,
)

log = logging.getLogger("synaptic_mesh.router")

CLOSE_BARRIER = 1.0
"""Seconds ``close`` waits for each peer to confirm it read what was sent (FLUSHED)."""

_SENT: list[tuple[str, str]] = []
"""What ``_route`` returns when every send succeeded (shared: never mutated)."""


class RoutedTransport(LinkService, Transport):
    """A transport made of links and this router (see module docstring).

    Hooks, lists of callables (a callable may return an awaitable, which is
    run as a task): ``on_peer_up(peer_id)`` once the first link to a peer is
    synced (both sides know each other's interest); ``on_peer_down(peer_id,
    reason)`` when its last link is gone (a dead peer, a goodbye, bad input),
    never while this transport closes; ``on_interest_gone(peer_id, pattern)``
    when a peer withdraws a subscription (an actor there stopped);
    ``on_bad_frame(BadFrame)`` for input a link refused. ``id`` is this node's
    name on the wire, ``address`` the address actually listened on.
    """

    max_frames: ClassVar[int] = 255
    """Most frames one published message may have (envelope plus attachments)."""

    def __init__(self, url: str, settings: RouterSettings, **options: Any) -> None:
        Transport.__init__(self, url, **options)
        self.settings = settings
        self.id = settings.node_id
        self.on_peer_up: list[Callable[[str], Any]] = []
        self.on_peer_down: list[Callable[[str, str], Any]] = []
        self.on_interest_gone: list[Callable[[str, str], Any]] = []
        self.on_bad_frame: list[Callable[[BadFrame], Any]] = []
        self.bad_frames = 0
        self.address: str | None = None
        self._table: SubjectTable[HandlerSubscription | Peer] = SubjectTable()
        self._interest = Interest(self._table, settings.topology)
        self._tree = settings.topology == "tree"
        self._peers: dict[str, Peer] = {}
        self._links: set[LinkState] = set()
        self._subs: list[HandlerSubscription] = []
        self._turns: dict[str, int] = {}
        self._tasks: dict[asyncio.Task[Any], str] = {}
        self._unsynced = 0
        self._all_synced = asyncio.Event()
        self._all_synced.set()
        self._listener: LinkListener | None = None
        self._state = "new"
        self._max_message = settings.max_message

    def peers_serving(self, subject: str) -> list[str]:
        """Ids of the peers whose interest matches ``subject`` (monitors use it)."""
        match = self._table.match(subject)
        entries = [*match.plain, *(m for group in match.groups for m in group)]
        return sorted({e.id for e in entries if isinstance(e, Peer)})

    def connector(self) -> LinkConnector:
        """The link connector of this transport (TCP sockets, Unix sockets, ...)."""
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Listen, dial the configured peers, and wait (``connect_timeout``) until synced.

        Peers that cannot be reached in that time are logged and keep being
        redialled in the background; ``start`` does not fail for them.
        """
        if self._state == "running":
            return
        if self._state != "new":
            raise TransportClosed(f"transport {self.url} was closed; open a new one")
        self._state = "running"
        self._loop = asyncio.get_running_loop()
        self._connector = self.connector()
        try:
            if self.settings.listen is not None:
                self._listener = await self._connector.listen(self.settings.listen, self._accept)
                self.address = self._listener.address
        except BaseException:
            self._state = "closed"
            raise
        self._spawn(self._heartbeats(), "background")
        waits = []
        for address, exports in self.settings.dials:
            first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waits.append(first)
            self._spawn(self._dial_loop(address, exports, first), "background")
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.settings.connect_timeout)
            if pending:
                log.warning(
                    "%s: %d of %d peers not reachable within %g s; retrying in the background",
                    self.id,
                    len(pending),
                    len(waits),
                    self.settings.connect_timeout,
                )

    async def close(self) -> None:
        """Say BYE, let deliveries in progress finish, close every link; idempotent.

        Before a link closes, a FLUSH after the BYE waits (up to
        ``CLOSE_BARRIER`` seconds) until the peer has read everything sent on
        it: on a message-queue link (ZeroMQ, NNG) messages still in the peer's
        socket when the connection ends can be dropped with it, so the last
        words of a closing node (a hotline's close, a reply) would be lost.
        """
        if self._state in ("closing", "closed"):
            while self._state != "closed":
                await asyncio.sleep(0.001)
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        try:
            if self._listener is not None:
                await self._listener.close()
            for task in self._kind("background"):
                task.cancel()
            for state in list(self._links):
                state.send_control(proto.control(proto.BYE, "node closing"))
                state.draining = True
                state.wake()
            await self._join(self._kind("delivery"), timeout=1.0)
            read = [state.flush() for state in list(self._links)]
            if read:
                await asyncio.wait(read, timeout=CLOSE_BARRIER)
            for state in list(self._links):
                state.link.close()
            await self._join(self._kind("link"), timeout=1.0)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._table.clear()
            self._subs.clear()
            self._state = "closed"

    def _check_open(self) -> None:
        if self._state != "running":
            raise TransportClosed(f"transport {self.url} is {self._state}, not running")

    # -- publish -----------------------------------------------------------------

    async def publish(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> None:
        self._check_open()
        if len(frames) > self.max_frames:
            raise ValueError(f"a message has at most {self.max_frames} frames, got {len(frames)}")
        size = frames_size(frames)
        if size > self._max_message:
            raise ValueError(f"message of {size} bytes exceeds max_message {self._max_message}")
        failed = await self._route(subject, frames, reply_to, None, None, 0, size)
        if failed is None and reply_to is not None and frames:
            if self._unsynced:
                # asyncio.wait, not wait_for: this may run in a delivery started outside a task
                synced = asyncio.ensure_future(self._all_synced.wait())
                done, _ = await asyncio.wait({synced}, timeout=self.settings.flush_timeout)
                if not done:
                    synced.cancel()
                failed = await self._route(subject, frames, reply_to, None, None, 0, size)
            if failed is None:
                await self._route(reply_to, NO_RESPONDERS, None, None, None, 0)
        if failed:
            raise LinkClosed(
                f"message on {subject!r} could not be sent to "
                + "; ".join(f"peer {peer}: {reason}" for peer, reason in failed)
            )

    def publish_now(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> bool:
        """A publish to one remote recipient with credit and room on its link, done now.

        Everything else (local handlers, several recipients, nobody, waiting
        for credit or for the link, a message ``publish`` would refuse) is
        declined, before anything is sent, and goes through ``publish``. Only
        links whose ``try_send`` can take a message make this worth trying: a
        transport on them sets ``sends_now``.
        """
        if self._state != "running":
            return False
        if len(frames) == 1 and type(frames[0]) is bytes:  # the common message: one frame
            size = len(frames[0])
        elif len(frames) > self.max_frames:
            return False
        else:
            size = frames_size(frames)
        if size > self._max_message:
            return False
        try:
            sole = self._table.match(subject).sole
        except InvalidSubject:
            return False
        if sole is None:
            return False
        only, queues = sole
        if type(only) is not Peer:
            return False
        try:
            return only.send_now(subject, reply_to, queues, 1, frames, size)
        except (ValueError, LinkClosed):  # over a limit, or the link just closed: publish says so
            return False

    async def _route(
        self,
        subject: str,
        frames: Sequence[Frame],
        reply_to: str | None,
        source: LinkState | None,
        assigned: list[str] | None,
        hops: int,
        size: int | None = None,
    ) -> list[tuple[str, str]] | None:
        """Deliver locally and forward; ``None`` if nobody matched, else the failed sends.

        ``source`` is the link a received message came in on (``None`` for a
        local publish) and ``assigned`` the queue groups it made us
        responsible for (``None``: all, we are the origin). ``size``: the
        bytes of ``frames`` if the caller counted them (else counted here,
        once, if a peer gets the message).
        """
        match = self._table.match(subject)
        if not match:
            return None
        origin = source.peer if source is not None else None
        sole = sole_recipient(match, assigned)
        if sole is not None:  # the common case: an actor here, or the one peer serving it
            only, queues = sole
            if type(only) is HandlerSubscription:
                if only.active:
                    try:
                        await only.handler(subject, frames, reply_to)
                    except Exception:
                        log.exception(
                            "%s: handler of %s failed on %s", self.id, only.pattern, subject
                        )
                return _SENT
            if (source is None or self._tree) and only is not origin:
                if hops >= proto.MAX_HOPS:
                    log.error(
                        "%s: dropping %s after %d hops: is the tree a cycle?",
                        self.id,
                        subject,
                        hops,
                    )
                    return _SENT
                if size is None:
                    size = frames_size(frames)
                try:
                    await only.send(subject, reply_to, queues, hops + 1, frames, size)
                except (LinkClosed, ValueError) as exc:
                    log.warning("%s: %s to peer %s lost: %s", self.id, subject, only.id, exc)
                    return [(only.id, str(exc))]
            return _SENT
        relay = source is None or self._tree
        local: list[HandlerSubscription] = []
        forward: dict[Peer, list[str]] = {}
        for item in match.plain:
            if type(item) is HandlerSubscription:
                local.append(item)
            elif relay and item is not origin and item not in forward:
                forward[item] = []
        for queue, members in zip(match.queues, match.groups, strict=True):
            if assigned is not None and queue not in assigned:
                continue
            if relay:
                candidates = [m for m in members if m is not origin]
            else:
                candidates = [m for m in members if type(m) is HandlerSubscription]
            if not candidates:
                log.debug("%s: queue %s on %s has no member left here", self.id, queue, subject)
                continue
            turn = self._turns.get(queue, 0)
            self._turns[queue] = turn + 1
            chosen = candidates[turn % len(candidates)]
            if type(chosen) is HandlerSubscription:
                local.append(chosen)
            else:
                forward.setdefault(chosen, []).append(queue)  # type: ignore[arg-type]
        failed: list[tuple[str, str]] = []
        if forward and hops >= proto.MAX_HOPS:
            log.error("%s: dropping %s after %d hops: is the tree a cycle?", self.id, subject, hops)
            forward.clear()
        if forward:
            if size is None:
                size = frames_size(frames)
            for peer, queues in forward.items():
                try:
                    await peer.send(subject, reply_to, queues, hops + 1, frames, size)
                except (LinkClosed, ValueError) as exc:
                    log.warning("%s: %s to peer %s lost: %s", self.id, subject, peer.id, exc)
                    failed.append((peer.id, str(exc)))
        for sub in local:
            if sub.active:
                try:
                    await sub.handler(subject, frames, reply_to)
                except Exception:
                    log.exception("%s: handler of %s failed on %s", self.id, sub.pattern, subject)
        if len(self._turns) > 10_000:
            self._turns.clear()
        return failed

    # -- subscribe -----------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        """Subscribe locally and advertise it; returns once connected peers know it."""
        return await self._subscribe(pattern, handler, queue, None)

    async def subscribe_except(self, pattern: str, handler: Handler, unless: str) -> Subscription:
        """``subscribe``, with ``unless`` left out of this node's matches (peers see the
        pattern: what they send there is not ``unless``'s own)."""
        return await self._subscribe(pattern, handler, None, unless)

    async def _subscribe(
        self, pattern: str, handler: Handler, queue: str | None, unless: str | None
    ) -> Subscription:
        self._check_open()
        validate_pattern(pattern)
        sub = HandlerSubscription(self, pattern, handler, queue)
        self._table.add(pattern, sub, queue, unless=unless)
        self._subs.append(sub)
        if self._interest.local_add((pattern, queue)):
            await self._flush([s for s in self._interest.links if not s.link.closed])
        return sub

    def _forget(self, sub: HandlerSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._table.remove(sub.pattern, sub, sub.queue)
            self._interest.local_remove((sub.pattern, sub.queue))

    async def _flush(self, states: list[LinkState]) -> None:
        """Wait until each link's peer applied what we sent before (or it closed)."""
        if states:
            await asyncio.wait([s.flush() for s in states], timeout=self.settings.flush_timeout)

    # -- introspection ---------------------------------------------------------------

    def peer_ids(self) -> list[str]:
        """Ids of the peers with a link up, in the order they came up."""
        return list(self._peers)

    def peer_interest(self, peer_id: str) -> list[tuple[str, str | None]]:
        """The ``(pattern, queue)`` keys ``peer_id`` advertised to this node."""
        peer = self._peers.get(peer_id)
        return [] if peer is None else self._interest.peer_keys(peer)

    def link_stats(self, peer_id: str) -> LinkStats:
        """MSG counters summed over the links to ``peer_id`` (zero if none is up)."""
        total = LinkStats()
        peer = self._peers.get(peer_id)
        for state in peer.links if peer is not None else ():
            total += state.stats
        return total

    # -- hooks ---------------------------------------------------------------------

    def _fire(self, hooks: list[Callable[..., Any]], *args: Any) -> None:
        for hook in list(hooks):
            try:
                result = hook(*args)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception:
                log.exception("%s: hook %r failed", self.id, hook)

    def _spawn(self, coro: Any, kind: str = "misc") -> asyncio.Task[Any]:
        """Run ``coro`` as a task this transport owns; ``kind`` orders ``close``.

        Kinds: ``background`` (heartbeats, dialers: cancelled first),
        ``delivery`` (allowed to finish the message in hand), ``link`` (ends
        when its link closes), ``misc`` (hooks, relayed flushes).
        """
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = kind
        task.add_done_callback(self._tasks.pop)
        return task

    def _kind(self, kind: str) -> set[asyncio.Task[Any]]:
        return {task for task, k in self._tasks.items() if k == kind}

    @staticmethod
    async def _join(tasks: set[asyncio.Task[Any]], timeout: float) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def _jitter(self, delay: float) -> float:
        return delay * (0.5 + random.random())
