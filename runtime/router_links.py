"""The life of each link inside a :class:`~synaptic_mesh.runtime.router.RoutedTransport`.

Per link the router handles every control message the moment it arrives (so
PING, CREDIT, SUB and FLUSH never wait behind data). A link that can push
(``Link.set_receiver``, as stream links do) hands each message over from its
protocol callback; for the others a *reader* task calls ``recv``. A MSG for
one actor of this node is delivered right there when nothing else of the link
is in progress (see ``runtime/eager.py``); anything that must wait, and every
MSG that arrives meanwhile, goes to a *delivery* task that routes them in
order and returns credit, and ends when the link's queue is empty. One
heartbeat task serves all links, and one dialer task per configured address
keeps that link up, redialling with exponential backoff and jitter after a
failure.

Link life: HELLO out; the peer's HELLO in (within the heartbeat window,
else the link is dropped); the interest snapshot and FLUSH(0) out; *synced*
when FLUSHED(0) comes back, and only then is the peer announced through
``on_peer_up`` (an ask right after it finds the peer's actors). Down: the
peer's interest is dropped, the delivery task finishes what was already
received, and ``on_peer_down`` fires when it was the peer's last link (never
while this node itself is closing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from synaptic_mesh.runtime import eager
from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router_link import BATCH_BYTES, LinkState, Peer, sole_recipient
from synaptic_mesh.runtime.subjects import InvalidSubject
from synaptic_mesh.transports.base import (
    BadFrame,
    HandlerSubscription,
    Link,
    LinkClosed,
    LinkProtocolError,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.router import RoutedTransport

log = logging.getLogger("synaptic_mesh.router")


class _SelfConnection(LinkClosed):
    """The dialed address is this very node."""


class LinkService:
    """Mixin of :class:`RoutedTransport`: accepting, dialing, reading, delivering."""

    # -- accepting and dialing ----------------------------------------------------

    def _accept(self: RoutedTransport, link: Link) -> None:
        if self._state != "running":
            link.abort("node is closing")
            return
        self._spawn(self._serve_link(link, None, None, None), "link")

    async def _dial_loop(
        self: RoutedTransport,
        address: str,
        exports: tuple[str, ...] | None,
        first: asyncio.Future[None],
    ) -> None:
        delay = self.settings.backoff
        while self._state == "running":
            try:
                link = await self._connector.dial(address, self.settings.connect_timeout)
            except (OSError, TimeoutError) as exc:
                log.debug("%s: dialing %s failed: %s", self.id, address, exc)
            else:
                # a task of its own: cancelling the dialer at close must not cut the link
                serving = self._spawn(self._serve_link(link, address, exports, first), "link")
                await asyncio.wait([serving])
                was_up = serving.result()
                if was_up is None:
                    return  # dialed ourselves: never again
                if was_up:
                    delay = self.settings.backoff
            await asyncio.sleep(self._jitter(delay))
            delay = min(delay * 2, self.settings.backoff_max) or self.settings.backoff_max

    # -- one link ----------------------------------------------------------------------

    async def _serve_link(
        self: RoutedTransport,
        link: Link,
        dialed: str | None,
        exports: tuple[str, ...] | None,
        first: asyncio.Future[None] | None,
    ) -> bool | None:
        """Run one link until it closes; True if it got up, None if it was ourselves."""
        s = self.settings
        batch = min(BATCH_BYTES, s.max_message)  # a MSGS stays within the link's limits
        state = LinkState(link, dialed, exports, s.window_msgs, s.window_bytes, batch)
        state.counted = True  # not a peer yet: a silent stranger must not stall verdicts
        self._links.add(state)
        reason = "closed"
        outcome: bool | None = False
        frames: list[Any] = []
        try:
            link.send_nowait(proto.hello(self.id, s.topology, s.window_msgs, s.window_bytes))
            frames = await link.recv()
            self._hello(state, frames)
            state.last_rx = asyncio.get_running_loop().time()
            outcome = True
            self._spawn(self._await_sync(state, first), "link")
            if link.set_receiver(partial(self._pushed, state)):
                await link.wait_closed()
                if state.failure is not None:
                    error, frames = state.failure
                    raise error
                await link.recv()  # raises why the link closed
            while True:
                frames = await link.recv()
                self._received(state, frames)
                frames = []  # hold no message while waiting: shm frames are freed when unreferenced
        except _SelfConnection as exc:
            if dialed is not None:
                log.error("%s: %s; not dialing %s again", self.id, exc.reason, dialed)
            reason, outcome = exc.reason, None
        except LinkProtocolError as exc:
            reason = exc.reason
            if not isinstance(exc, proto.RouterProtocolError):  # the link has logged it
                self._bad(state, reason)
            else:
                log.error("%s: link %s closed: %s", self.id, state.name, reason)
                self._bad(state, reason, frames=frames)
        except LinkClosed as exc:
            reason = state.bye or exc.reason
        finally:
            link.abort(reason)
            self._link_down(state, reason)
        return outcome

    def _hello(self: RoutedTransport, state: LinkState, frames: list[Any]) -> None:
        items = proto.decode_header(frames)
        if items[0] != proto.HELLO:
            raise proto.RouterProtocolError(f"expected HELLO first, got {proto.name(items[0])}")
        _, _, peer_id, topology, wmsgs, wbytes = items[:6]
        if peer_id == self.id:
            raise _SelfConnection(f"{state.link.label} leads back to this node ({self.id})")
        if topology != self.settings.topology:
            raise proto.RouterProtocolError(
                f"peer {peer_id} runs a {topology} topology, this node a "
                f"{self.settings.topology}; they cannot be linked"
            )
        state.open_window(wmsgs, wbytes)
        state.counted = False  # a peer now: its interest is unknown until FLUSHED(0)
        self._unsynced += 1
        self._all_synced.clear()
        state.link.peer_id = peer_id
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = Peer(peer_id)
        peer.links.append(state)
        state.peer = peer
        state.up = True
        self._interest.attach(state)
        state.send_control(proto.control(proto.FLUSH, 0))
        log.info("%s: link to %s up (%s)", self.id, peer_id, state.link.label)

    async def _await_sync(
        self: RoutedTransport, state: LinkState, first: asyncio.Future[None] | None
    ) -> None:
        """Mark the link synced at FLUSHED(0); then the peer is announced up.

        A peer that never answers is counted as synced after twice the flush
        timeout (a tree relay may legitimately take one flush timeout), so one
        broken peer cannot hold "no responders" verdicts back forever.
        """
        try:
            await asyncio.wait_for(asyncio.shield(state.synced), 2 * self.settings.flush_timeout)
        except TimeoutError:
            log.warning("%s: %s never confirmed our interest; going on", self.id, state.name)
        self._synced(state)
        peer = state.peer
        if state.link.closed or peer is None:
            return
        if first is not None and not first.done():
            first.set_result(None)
        if not peer.announced and peer.links:
            peer.announced = True
            self._fire(self.on_peer_up, peer.id)

    def _synced(self: RoutedTransport, state: LinkState) -> None:
        if state.counted:
            return
        state.counted = True
        self._unsynced -= 1
        if self._unsynced == 0:
            self._all_synced.set()

    def _pushed(self: RoutedTransport, state: LinkState, frames: list[Any]) -> None:
        """A message the link pushed from its protocol callback (``Link.set_receiver``).

        Bad input cannot be raised into the link's callback: it is kept in
        ``state.failure``, the link is aborted, and ``_serve_link`` reports it.
        """
        try:
            self._received(state, frames)
        except LinkProtocolError as exc:
            if state.failure is None:
                state.failure = (exc, frames)
            state.link.abort(exc.reason)

    def _received(self: RoutedTransport, state: LinkState, frames: list[Any]) -> None:
        """Handle one message of a link: control at once, a MSG delivered or queued."""
        state.last_rx = self._loop.time()
        items = proto.decode_header(frames)
        op = items[0]
        if op == proto.MSG or op == proto.MSGS:
            self._on_msg(state, items, frames)
        elif op == proto.SUB:
            self._interest.peer_add(state, (items[1], items[2]))
        elif op == proto.UNSUB:
            self._interest.peer_remove(state, (items[1], items[2]))
            if self.on_interest_gone:
                self._fire(self.on_interest_gone, state.name, items[1])
        elif op == proto.PING:
            state.send_control(proto.PONG_FRAMES)
        elif op == proto.FLUSH:
            self._on_flush(state, items[1])
        elif op == proto.FLUSHED:
            state.flushed(items[1])
        elif op == proto.CREDIT:
            state.grant(items[1], items[2])
        elif op == proto.BYE:
            state.bye = f"peer said goodbye: {items[1]}"
        elif op == proto.HELLO:
            raise proto.RouterProtocolError("second HELLO on an established link")

    def _on_flush(self: RoutedTransport, state: LinkState, token: int) -> None:
        """Answer a FLUSH once every other neighbour (tree) has applied what we sent it."""
        others = [s for s in self._interest.links if s is not state and not s.link.closed]
        if not self._tree or not others:
            state.send_control(proto.control(proto.FLUSHED, token))
            return

        async def relay() -> None:
            await self._flush(others)
            state.send_control(proto.control(proto.FLUSHED, token))

        self._spawn(relay())

    def _on_msg(
        self: RoutedTransport, state: LinkState, items: list[Any], frames: list[Any]
    ) -> None:
        """Deliver a MSG (or the messages of a MSGS) now if nothing is in progress on its
        link, else queue it.

        Most MSGs go to one actor of this node: their handler (marked
        ``eager_handler``) is started right here and usually finishes without
        waiting, which saves a task per message. One that waits, and every
        other delivery (queue groups, several subscribers, forwarding in a
        tree), continues in a task; later MSGs of the link queue behind it, so
        the link's order holds. A MSGS is routed once for all its messages.
        """
        if items[0] == proto.MSG:
            count = 1
        else:
            count = len(frames) - 1
            state.stats.batches_received += 1
        size = state.admit(frames, count)
        if state.busy or state.draining:
            state.queue.append((items, frames, size, count))
            return
        subject = items[1]
        try:
            match = self._table.match(subject)
        except InvalidSubject as exc:
            self._invalid_subject(state, exc, frames)
            return
        sole = sole_recipient(match, items[3])
        if sole is not None:
            sub = sole[0]
        elif self._tree or match.groups:
            sub = None
        else:  # a mesh forwards nothing it received: one handler here may be all there is
            sub = _sole_local(match.plain)
        if type(sub) is not HandlerSubscription or not sub.eager:
            state.queue.append((items, frames, size, count))
            state.busy = True
            self._spawn(self._deliver(state), "delivery")
            return
        self._deliver_at_once(state, sub, items, frames, size, count)

    def _deliver_at_once(
        self: RoutedTransport,
        state: LinkState,
        sub: HandlerSubscription,
        items: list[Any],
        frames: list[Any],
        size: int,
        count: int,
    ) -> None:
        """Hand the messages of a MSG or MSGS to their one eager handler, here and now.

        When one has to wait, a task finishes it and the rest of a MSGS queues
        behind it; the credit goes back once all of it is delivered.
        """
        subject, reply_to, handler = items[1], items[2], sub.handler
        if items[0] == proto.MSG:  # one message, the common case: no list of them, no loop
            result = None
            if sub.active:
                try:
                    coro = handler(subject, frames[1:], reply_to)
                    if coro is not eager.DONE:
                        result, yielded = eager.step(coro)
                except Exception:
                    log.exception("%s: handler of %s failed on %s", self.id, sub.pattern, subject)
            if result is eager.PENDING:
                state.busy = True
                rest = eager.Resumed(coro, yielded)
                self._spawn(self._finish(state, sub, subject, rest, size, count), "delivery")
                return
            state.delivered(size, count)
            return
        messages = _messages(items, frames)
        for i, message in enumerate(messages):
            if not sub.active:
                break
            try:
                coro = handler(subject, message, reply_to)
                result, yielded = (None, None) if coro is eager.DONE else eager.step(coro)
            except Exception:
                log.exception("%s: handler of %s failed on %s", self.id, sub.pattern, subject)
                continue
            if result is eager.PENDING:
                state.busy = True
                if i + 1 < len(messages):  # message i is frame i + 1: the rest follow it
                    state.queue.append((items, [frames[0], *frames[i + 2 :]], size, count))
                    size = count = 0
                rest = eager.Resumed(coro, yielded)
                self._spawn(self._finish(state, sub, subject, rest, size, count), "delivery")
                return
        state.delivered(size, count)

    async def _finish(
        self: RoutedTransport,
        state: LinkState,
        sub: HandlerSubscription,
        subject: str,
        resumed: eager.Resumed,
        size: int,
        count: int,
    ) -> None:
        """The rest of a delivery ``_on_msg`` started, then whatever queued behind it."""
        try:
            await resumed
        except Exception:
            log.exception("%s: handler of %s failed on %s", self.id, sub.pattern, subject)
        if count:
            state.delivered(size, count)
        await self._deliver(state)

    async def _deliver(self: RoutedTransport, state: LinkState) -> None:
        """Route the queued MSGs of one link in order; a bad subject closes the link."""
        queue = state.queue
        try:
            while queue and not state.draining:
                items, frames, size, count = queue.popleft()
                for message in _messages(items, frames):
                    try:
                        await self._route(items[1], message, items[2], state, items[3], items[4])
                    except InvalidSubject as exc:
                        self._invalid_subject(state, exc, frames)
                        return
                    except Exception:  # a bug, not the peer's fault: keep deliveries going
                        log.exception(
                            "%s: delivering %s from %s failed", self.id, items[1], state.name
                        )
                state.delivered(size, count)
                del items, frames  # keep no delivered message alive while the next one waits
        finally:
            state.busy = False

    def _invalid_subject(
        self: RoutedTransport, state: LinkState, exc: InvalidSubject, frames: list[Any]
    ) -> None:
        reason = f"MSG with an invalid subject: {exc}"
        log.error("%s: link %s closed: %s", self.id, state.name, reason)
        self._bad(state, reason, frames=frames)
        state.link.abort(reason)

    def _link_down(self: RoutedTransport, state: LinkState, reason: str) -> None:
        self._links.discard(state)
        state.wake()
        self._synced(state)
        if not state.up:
            return
        self._interest.detach(state)
        peer = state.peer
        assert peer is not None
        if state in peer.links:
            peer.links.remove(state)
        if peer.links:
            return
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
        if not peer.announced:
            return
        closing = self._state != "running"
        log.log(
            logging.DEBUG if closing else logging.INFO if state.bye else logging.WARNING,
            "%s: peer %s down: %s",
            self.id,
            peer.id,
            reason,
        )
        if not closing:
            self._fire(self.on_peer_down, peer.id, reason)

    # -- heartbeats ----------------------------------------------------------------------

    async def _heartbeats(self: RoutedTransport) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat
        dead_after = self.settings.dead_after
        while True:
            await asyncio.sleep(interval / 4)
            now = loop.time()
            for state in list(self._links):
                silent = now - state.last_rx
                if silent > dead_after:
                    reason = (
                        f"no heartbeat for {silent:.2f} s (interval {interval:g} s, "
                        f"{self.settings.misses} misses)"
                    )
                    log.warning("%s: link %s dead: %s", self.id, state.name, reason)
                    state.link.abort(reason)
                elif now - state.last_ping >= interval:
                    state.last_ping = now
                    state.send_control(proto.PING_FRAMES)

    # -- reports -------------------------------------------------------------------------

    def _bad(
        self: RoutedTransport, state: LinkState, reason: str, frames: list[Any] | None = None
    ) -> None:
        self.bad_frames += 1
        subject = None
        payload: tuple[Any, ...] = ()
        if frames:
            try:
                items = proto.decode_header(frames)
                if items[0] == proto.MSG or items[0] == proto.MSGS:
                    subject, payload = items[1], tuple(frames[1:])
            except LinkProtocolError:
                payload = tuple(frames)
        preview = bytes(frames[0][:32]).hex() if frames else ""
        self._fire(self.on_bad_frame, BadFrame(state.name, reason, subject, payload, preview))


def _messages(items: list[Any], frames: list[Any]) -> Sequence[Sequence[Any]]:
    """The messages a MSG or MSGS carries: a MSG's frames after its header are one
    message; each frame of a MSGS is a message of one frame."""
    if items[0] == proto.MSG:
        return (frames[1:],)
    return [(frame,) for frame in frames[1:]]


def _sole_local(plain: tuple[Any, ...]) -> Any:
    """The one handler of this node among a subject's plain recipients (the others are
    peers, which a mesh does not forward a received message to), or ``None``."""
    found = None
    for item in plain:
        if type(item) is HandlerSubscription:
            if found is not None:
                return None
            found = item
    return found
