"""One end of a hotline: buffer, order check, heartbeat, closing; and its lowering.

:mod:`synaptic_mesh.patterns.hotline` states the promises of a line and opens
them; this module is the line itself, the same object at both ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio

from synaptic_mesh.patterns.lowering import PAIR, lowering_for
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.envelope import SYSTEM, TELL, Envelope
from synaptic_mesh.runtime.errors import HotlineClosed, MeshError
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.transports.base import Handler, Subscription, eager_handler

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node

log = logging.getLogger("synaptic_mesh.patterns.hotline")

HOTLINE_PREFIX: Final = "_hotline"
"""``_hotline.<peer>``: where open requests for ``peer`` go."""
LINE_PREFIX: Final = "_line"
"""``_line.<id>``: what the peer sends to the caller of line ``id``."""
LINES_PREFIX: Final = "_lines"
"""``_lines.<peer>.<id>``: what the caller sends to ``peer`` on line ``id``."""
DEFAULT_HEARTBEAT: Final = 1.0
DEFAULT_MISSES: Final = 3
LINE_CAPACITY: Final = 1000
CLOSE_SEND_TIMEOUT: Final = 1.0


@message(name="_mesh.LineSignal")
class LineSignal:
    """Control on a line: ``op`` is ``"ping"`` or ``"close"`` (with ``reason``, ``normal``)."""

    op: str
    reason: str = ""
    normal: bool = True


class PairLowering(Protocol):
    """What a native PAIR lowering supplies.

    The answering side subscribes once, when the actor starts (``listen`` and
    ``serve``); only the caller subscribes per line (``attach``), from its own
    task. Nothing subscribes inside a delivery, which on a link transport
    would wait for the very link it is delivering from.
    """

    async def listen(self, node: Node, peer: str, handler: Handler) -> Subscription:
        """Deliver the open requests for actor ``peer`` to ``handler``."""
        ...

    async def serve(self, node: Node, peer: str, handler: Handler) -> Subscription:
        """Deliver what callers send on any line to ``peer`` (the subject ends in the line id)."""
        ...

    async def attach(self, node: Node, line: str, handler: Handler) -> Subscription:
        """Deliver what the peer sends to the caller of ``line`` to ``handler``."""
        ...

    def send(self, node: Node, env: Envelope) -> Awaitable[None]:
        """Send ``env`` (its ``subject`` names the receiving end) on the line, in order."""
        ...


class GenericPair:
    """Lines on publish/subscribe (see module docstring)."""

    async def listen(self, node: Node, peer: str, handler: Handler) -> Subscription:
        subject = f"{HOTLINE_PREFIX}.{peer}"
        return await node.transport.subscribe(subject, handler, subject)

    async def serve(self, node: Node, peer: str, handler: Handler) -> Subscription:
        return await node.transport.subscribe(f"{LINES_PREFIX}.{peer}.*", handler)

    async def attach(self, node: Node, line: str, handler: Handler) -> Subscription:
        return await node.transport.subscribe(f"{LINE_PREFIX}.{line}", handler)

    def send(self, node: Node, env: Envelope) -> Awaitable[None]:
        return node.send_frames(env.subject, node.encode(env))


def pair_lowering(node: Node) -> PairLowering:
    return node.lowerings.get(PAIR) or lowering_for(node, PAIR, GenericPair)


class Hotline:
    """One end of a line; see the module docstring for the promises.

    ``me`` is this end's actor, ``peer`` the other end's, ``id`` the line's id.
    ``closed_reason`` is ``None`` while open. One task at a time may receive.
    """

    def __init__(
        self,
        node: Node,
        me: str,
        peer: str,
        line_id: str,
        side: str,
        *,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        misses: int = DEFAULT_MISSES,
        capacity: int = LINE_CAPACITY,
    ) -> None:
        self.node = node
        self.me = me
        self.peer = peer
        self.id = line_id
        self.side = side
        self.capacity = capacity
        self.closed_reason: str | None = None
        self.closed_normally = False
        self._heartbeat = heartbeat if heartbeat and heartbeat > 0 else None
        self._misses = max(1, misses)
        self._outbound = (
            f"{LINES_PREFIX}.{peer}.{line_id}" if side == "caller" else f"{LINE_PREFIX}.{line_id}"
        )
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._expected = 1
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._last_heard = self._last_sent = loop.time()
        self._ended = asyncio.Event()
        self._subscription: Subscription | None = None
        self._on_close: list[Callable[[], None]] = []
        self._finished = False

    def __repr__(self) -> str:
        state = "open" if self.closed_reason is None else f"closed: {self.closed_reason}"
        return f"<Hotline {self.me} <-> {self.peer} {state}>"

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    async def wait_closed(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the line to close; whether it has."""
        with anyio.move_on_after(timeout):
            await self._ended.wait()
        return self.closed

    # -- talking -----------------------------------------------------------------

    async def send(self, message: Any) -> None:
        """Send ``message`` to the other end; raises ``HotlineClosed`` once the line is closed."""
        if self.closed_reason is not None:
            raise self._closed_error()
        env = self.node.make_envelope(TELL, self._outbound, message, self.me)
        await pair_lowering(self.node).send(self.node, env)
        self._last_sent = self._loop.time()

    async def receive(self) -> Any:
        """The next message from the other end.

        Raises ``HotlineClosed`` once the line is closed and every message
        that arrived before has been received (``normal`` tells a hang-up).
        """
        while True:
            if self._items:
                item = self._items.popleft()
                while self._putters:
                    putter = self._putters.popleft()
                    if not putter.done():
                        putter.set_result(None)
                        break
                return item
            if self.closed_reason is not None:
                raise self._closed_error()
            waiter = self._waiter = self._loop.create_future()
            await waiter

    def __aiter__(self) -> Hotline:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except HotlineClosed as exc:
            if exc.normal:
                raise StopAsyncIteration from None
            raise

    async def close(self, reason: str | None = None) -> None:
        """Hang up normally: the other end's iteration ends (idempotent)."""
        await self._end(reason or f"{self.me} hung up", normal=True, tell_peer=True)

    # -- life ----------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """The holding incarnation ended: closed abnormally at once (the peer is told soon)."""
        self._mark(reason, normal=False)

    async def release(self, reason: str) -> None:
        """Close abnormally with ``reason`` and tell the other end."""
        await self._end(reason, normal=False, tell_peer=True)

    async def _attach(self) -> None:
        """Subscribe the caller's end (the answering end is served by its actor's subscription)."""
        self._subscription = await pair_lowering(self.node).attach(
            self.node, self.id, self._on_frames
        )

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None and self.closed_reason is None:
            self.node.spawn_system_task(self._beat)

    async def _beat(self) -> None:
        interval = self._heartbeat
        assert interval is not None
        silence = interval * self._misses
        while self.closed_reason is None:
            with anyio.move_on_after(interval):
                await self._ended.wait()
            if self.closed_reason is not None:
                return
            if not self.node.running:  # do not hold up the node's shutdown until a kill
                await self._end(f"{self.me}'s node is closing", normal=False, tell_peer=True)
                return
            now = self._loop.time()
            if now - self._last_heard > silence:
                await self._end(
                    f"no word from {self.peer} for {silence:g} s (its node may be gone)",
                    normal=False,
                    tell_peer=True,
                )
                return
            if now - self._last_sent >= interval:
                await self._signal(LineSignal("ping"))

    @eager_handler
    def _on_frames(
        self, subject: str, frames: Sequence[Any], reply_to: str | None
    ) -> Awaitable[None]:
        """A message on this end's subject: queued for ``receive`` (``DONE``), or the line ends.

        Started outside a task by link transports (``eager_handler``): what
        needs one (ending the line) goes to a task of the node's, after the
        line is marked closed here, so later messages find it closed.
        """
        env = self.node.open_envelope(subject, frames)
        if env is None or self.closed_reason is not None:
            return DONE
        self._last_heard = self._loop.time()
        if env.seq != self._expected:
            if env.seq < self._expected:
                return DONE  # a duplicate (at-least-once delivery): already received
            reason = f"line {self.id} lost messages: expected #{self._expected}, got #{env.seq}"
            return self._end_soon(reason, normal=False, tell_peer=True)
        self._expected += 1
        body = env.body
        if env.kind == SYSTEM and isinstance(body, LineSignal):
            if body.op == "close":
                return self._end_soon(body.reason, normal=body.normal, tell_peer=False)
            return DONE
        if len(self._items) >= self.capacity:
            return self._put_when_room(body)
        self._items.append(body)
        self._wake()
        return DONE

    async def _put_when_room(self, body: Any) -> None:
        """Queue ``body`` once ``receive`` made room (the link's later messages wait)."""
        while len(self._items) >= self.capacity and self.closed_reason is None:
            putter = self._loop.create_future()
            self._putters.append(putter)
            await putter
        if self.closed_reason is None:
            self._items.append(body)
            self._wake()

    def _end_soon(self, reason: str, *, normal: bool, tell_peer: bool) -> Awaitable[None]:
        """Mark the line closed now; tell the peer and detach in a task of the node's."""
        self._mark(reason, normal)
        with suppress(MeshError):  # the node is closing: it detaches everything itself
            self.node.spawn_system_task(
                lambda: self._end(reason, normal=normal, tell_peer=tell_peer)
            )
        return DONE

    async def _end(self, reason: str, *, normal: bool, tell_peer: bool) -> None:
        """Close (if still open) with ``reason``; then tell the other end and detach, once."""
        self._mark(reason, normal)
        if self._finished:
            return
        self._finished = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SEND_TIMEOUT):
            if tell_peer:
                signal = LineSignal("close", self.closed_reason or reason, self.closed_normally)
                await self._signal(signal)
            subscription, self._subscription = self._subscription, None
            if subscription is not None:
                with suppress(MeshError):
                    await subscription.unsubscribe()
        self.node.forget_sequence(self.me, self._outbound)

    def _mark(self, reason: str, normal: bool) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self.closed_normally = normal
        self._ended.set()
        self._wake()
        for putter in self._putters:
            if not putter.done():
                putter.set_result(None)
        for callback in self._on_close:
            callback()

    async def _signal(self, signal: LineSignal) -> None:
        env = self.node.make_envelope(SYSTEM, self._outbound, signal, self.me)
        try:
            await pair_lowering(self.node).send(self.node, env)
        except MeshError as exc:
            log.debug("line %s: could not send %s: %s", self.id, signal.op, exc)
        self._last_sent = self._loop.time()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _closed_error(self) -> HotlineClosed:
        return HotlineClosed(self.closed_reason or "closed", normal=self.closed_normally)
