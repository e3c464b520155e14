"""The skeleton the native PAIR hotline lowerings share: handshake routing and line bookkeeping.

:mod:`~synaptic_mesh.transports.zmq_pair` (ZeroMQ PAIR) and
:mod:`~synaptic_mesh.transports.nng_pair` (NNG ``Pair1``) lower a hotline the
same way: the answering node sees the open request first, opens a socket for
the line and sends the caller the handshake ``[hello, address]`` on
``_line.<id>`` ahead of the accept reply; the caller connects its own socket
to that address; each end then sends on its socket while it is usable and on
the generic subjects otherwise. :class:`NativePairLowering` is that routing and
the tables behind it (``calling``, ``answering``, ``serving``), written once;
:class:`LineEnd` is what the two kinds of line end have in common (state,
timers, the idempotent close). Each transport module keeps what is its own:
how a socket is made, bound, dialed, read and closed, when an answering end
gives up on its caller, and how the caller's end hangs up.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

from synaptic_mesh.runtime.envelope import SYSTEM, Envelope
from synaptic_mesh.transports.base import Buffer, Handler, Subscription, Transport

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node

HOTLINE_PREFIX: Final = "_hotline"
LINE_PREFIX: Final = "_line"
LINES_PREFIX: Final = "_lines"
"""The hotline subjects of :mod:`synaptic_mesh.patterns.line` (transports import no pattern)."""
LAST_GRACE: Final = 0.5
"""Seconds the end that sent a line's last message keeps its socket for the other end to close
first (it does once it has read that message); then it closes its own."""

EndT = TypeVar("EndT", bound="LineEnd")


class LineEnd(abc.ABC):
    """One end of a line's socket pair: its state, its timers and its idempotent close.

    ``up``: the other end connected; ``finishing``: the last message is sent and
    this end waits for the other to close first; ``usable``: messages may still
    go on the socket (otherwise the lowering sends on the subjects).
    """

    def __init__(
        self, lowering: NativePairLowering[Any], line: str, subject: str, deliver: Handler
    ) -> None:
        self.lowering = lowering
        self.line = line
        self.subject = subject  # the subject incoming messages are delivered on
        self.deliver = deliver
        self.up = False
        self.closed = False
        self.finishing = False
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []  # cancelled on close

    @property
    def usable(self) -> bool:
        return not (self.closed or self.finishing)

    @abc.abstractmethod
    async def send(self, frames: Sequence[Buffer], last: bool) -> None:
        """Send one line message (``last``: the line's final one); raises ``TransportClosed``."""

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task of this end, cancelled when the end closes."""
        self._tasks.append(self._loop.create_task(work))

    async def _close_later(self) -> None:
        await asyncio.sleep(LAST_GRACE)
        self.close()

    def close(self) -> None:
        """Cancel this end's tasks (but the one calling), close its socket and drop the end
        from the lowering's tables; idempotent."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._close_socket()
        self.lowering._drop(self)

    @abc.abstractmethod
    def _close_socket(self) -> None:
        """Release the end's socket (called once, by ``close``)."""


class EndingSubscription(Subscription):
    """A subscription of the lowering's that lets go of what it holds before ``inner`` ends.

    The caller's ``_line.<id>`` subscription hangs up the line's end; the answering
    actor's ``_lines.<peer>.*`` one stops the handshakes for that actor.
    """

    def __init__(self, inner: Subscription, before_end: Callable[[], None]) -> None:
        self._inner = inner
        self._before_end = before_end
        self.pattern = inner.pattern
        self.queue = inner.queue

    async def unsubscribe(self) -> None:
        self._before_end()
        await self._inner.unsubscribe()


class NativePairLowering(abc.ABC, Generic[EndT]):
    """A native PAIR lowering (``patterns.line.PairLowering``) of one transport, less its sockets.

    A subclass sets ``hello`` (frame 0 of its handshake) and supplies
    ``_open_answering`` (open and bind the answering end), ``_call`` (open the
    caller's end and connect it) and ``_hang_up`` (the caller's unsubscribe).
    """

    hello: ClassVar[bytes]

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.calling: dict[str, EndT] = {}  # line id -> the caller's end
        self.answering: dict[str, EndT] = {}  # line id -> the answering end
        self.serving: dict[str, Handler] = {}  # actor -> its ``serve`` handler

    # -- PairLowering -------------------------------------------------------------------

    async def listen(self, node: Node, peer: str, handler: Handler) -> Subscription:
        subject = f"{HOTLINE_PREFIX}.{peer}"

        async def on_request(subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
            env = node.open_envelope(subject, frames)
            if env is None:
                return  # dead-lettered by the node
            line = getattr(env.body, "line", None)
            serve = self.serving.get(peer)
            if isinstance(line, str) and serve is not None and line not in self.answering:
                await self._answer(line, peer, serve)
            await handler(subject, frames, reply_to)

        return await node.transport.subscribe(subject, on_request, subject)

    async def serve(self, node: Node, peer: str, handler: Handler) -> Subscription:
        self.serving[peer] = handler
        inner = await node.transport.subscribe(f"{LINES_PREFIX}.{peer}.*", handler)

        def stop_serving() -> None:
            if self.serving.get(peer) is handler:
                del self.serving[peer]

        return EndingSubscription(inner, stop_serving)

    async def attach(self, node: Node, line: str, handler: Handler) -> Subscription:
        async def on_line(subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
            if len(frames) == 2 and bytes(frames[0]) == self.hello:
                if line not in self.calling:
                    self._call(line, subject, bytes(frames[1]), handler)
                return
            await handler(subject, frames, reply_to)

        inner = await node.transport.subscribe(f"{LINE_PREFIX}.{line}", on_line)
        return EndingSubscription(inner, lambda: self._hang_up(line))

    def send(self, node: Node, env: Envelope) -> Awaitable[None]:
        subject = env.subject
        line = subject.rpartition(".")[2]
        ends = self.calling if subject.startswith(f"{LINES_PREFIX}.") else self.answering
        end = ends.get(line)
        if end is None or not end.usable:
            if end is not None:
                self._note_fallback(end)
            return node.send_frames(subject, node.encode(env))  # not (or no longer) native
        last = env.kind == SYSTEM and getattr(env.body, "op", None) == "close"
        return end.send(node.encode(env), last)

    # -- the handshake ------------------------------------------------------------------

    async def _answer(self, line: str, peer: str, serve: Handler) -> None:
        """Open the answering end of ``line`` and send the caller the handshake."""
        opened = self._open_answering(line, f"{LINES_PREFIX}.{peer}.{line}", serve)
        if opened is None:
            return  # the line uses the subjects
        end, address = opened
        self.answering[line] = end
        await self.transport.publish(f"{LINE_PREFIX}.{line}", [self.hello, address.encode()])

    @abc.abstractmethod
    def _open_answering(self, line: str, subject: str, serve: Handler) -> tuple[EndT, str] | None:
        """The answering end of ``line`` and the address its caller connects to, or ``None``
        when the line is to stay on the subjects."""

    @abc.abstractmethod
    def _call(self, line: str, subject: str, address: bytes, handler: Handler) -> None:
        """Open the caller's end of ``line``, register it in ``calling`` and connect it to
        ``address`` (from the handshake)."""

    @abc.abstractmethod
    def _hang_up(self, line: str) -> None:
        """The caller of ``line`` no longer subscribes it: let go of its end."""

    def _note_fallback(self, end: EndT) -> None:
        """A message for ``end`` goes on the subjects because the end is no longer usable."""

    # -- bookkeeping --------------------------------------------------------------------

    def _drop(self, end: LineEnd) -> None:
        for ends in (self.calling, self.answering):
            if ends.get(end.line) is end:
                del ends[end.line]

    async def close(self) -> None:
        """Close every line's socket, giving those that just sent their last message up to
        ``LAST_GRACE`` seconds for the other end to read it and close first."""
        ends = [*self.calling.values(), *self.answering.values()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LAST_GRACE
        while any(e.finishing and not e.closed for e in ends) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for end in ends:
            end.close()
