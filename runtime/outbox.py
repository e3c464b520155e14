"""A node's bounded outbound queue towards its transport.

Sends that leave the node go through here so that one sender's messages keep
their order whether it used ``await tell`` or ``tell_nowait``. When nothing
is queued, ``send`` publishes directly (no task switch), and ``try_send``
publishes with no coroutine at all when the transport's ``publish_now`` can
send without waiting (callers on the hot path try it first); otherwise ``send`` queues
behind what is waiting, and a pump task publishes in order. The queue is
bounded: ``send`` waits for room, ``send_nowait`` raises ``MailboxFull``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from synaptic_mesh.runtime.errors import MailboxFull, MeshError, TransportClosed

log = logging.getLogger("synaptic_mesh.outbox")

Publish = Callable[[str, Sequence[Any], "str | None"], Awaitable[Any]]
PublishNow = Callable[[str, Sequence[Any], "str | None"], bool]
Item = tuple[str, Sequence[Any], "str | None"]


class Outbox:
    """Ordered, bounded buffer in front of ``publish`` (see module docstring)."""

    def __init__(
        self,
        publish: Publish,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        capacity: int = 10_000,
        on_error: Callable[[Item, BaseException], None] | None = None,
        publish_now: PublishNow | None = None,
    ) -> None:
        self._publish = publish
        self._publish_now = publish_now
        self._spawn = spawn
        self.capacity = capacity
        self._queue: deque[Item] = deque()
        self._busy = False
        self._pumping = False
        self._room: deque[asyncio.Future[None]] = deque()
        self._on_error = on_error
        self.closed = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    def try_send(self, subject: str, frames: Sequence[Any], reply_to: str | None) -> bool:
        """Publish now if nothing is queued and the transport can without waiting
        (``Transport.publish_now``); ``False`` (nothing sent) tells the caller to ``send``."""
        publish_now = self._publish_now
        if publish_now is None or self._queue or self._busy or self.closed:
            return False
        return publish_now(subject, frames, reply_to)

    async def send(self, subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
        """Publish in order, waiting while the buffer is full."""
        if self.closed:
            raise TransportClosed("node is closed")
        if not self._queue and not self._busy:
            self._busy = True
            try:
                await self._publish(subject, frames, reply_to)
            finally:
                self._busy = False
                if self._queue:
                    self._start_pump()
            return
        while len(self._queue) >= self.capacity:
            room = asyncio.get_running_loop().create_future()
            self._room.append(room)
            try:
                await room
            finally:
                if room in self._room:
                    self._room.remove(room)
            if self.closed:
                raise TransportClosed("node is closed")
        self._queue.append((subject, frames, reply_to))
        self._start_pump()

    def send_nowait(self, subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
        """Queue for publishing; raises ``MailboxFull`` when the buffer is full."""
        if self.closed:
            raise TransportClosed("node is closed")
        if len(self._queue) >= self.capacity:
            raise MailboxFull(f"outbox toward {subject}", self.capacity)
        self._queue.append((subject, frames, reply_to))
        self._start_pump()

    def _start_pump(self) -> None:
        if not self._pumping and not self._busy:
            self._pumping = True
            self._spawn(self._pump)

    async def _pump(self) -> None:
        try:
            while self._queue and not self._busy:
                item = self._queue.popleft()
                self._wake_one()
                self._busy = True
                try:
                    await self._publish(*item)
                except MeshError as exc:
                    self._failed(item, exc)
                except ValueError as exc:
                    self._failed(item, exc)
                finally:
                    self._busy = False
        finally:
            self._pumping = False
            if self._queue and not self._busy and not self.closed:
                self._start_pump()

    def _failed(self, item: Item, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(item, exc)
        else:
            log.warning("could not publish on %s: %s", item[0], exc)

    def _wake_one(self) -> None:
        while self._room:
            room = self._room.popleft()
            if not room.done():
                room.set_result(None)
                return

    async def drain(self, timeout: float) -> None:
        """Wait until everything queued is published, at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.idle and loop.time() < deadline:
            await asyncio.sleep(0.001)

    def close(self) -> list[Item]:
        """Refuse further sends; returns what was never published."""
        self.closed = True
        left = list(self._queue)
        self._queue.clear()
        for room in self._room:
            if not room.done():
                room.set_result(None)
        return left
