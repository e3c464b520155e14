"""A bounded actor mailbox with an overflow policy and a system lane.

Modelled on AnyIO's memory object streams: a fixed capacity, back-pressure by
default, and the sender chooses whether to wait (``await put``) or not
(``put_nowait``). Two lanes: user messages are bounded; system messages
(stop, restart, monitor signals) are few, never refused, and always taken
first, so a stop overtakes a full backlog.

The hot path is one ``deque.append`` and, when the actor is idle, resolving
the one future it sleeps on; there is no task per message.

An idle actor costs what its mailbox holds, times every actor a node runs, so
the lanes that most actors never use are made on first use: the system lane
(``system``) on the first stop or signal, and the queue of blocked senders
(``_putters``) when a sender first waits for room. Both are ``None`` until
then, which reads as empty wherever they are only tested (``if mailbox.system``).

Overflow policies, applied when the user lane holds ``capacity`` messages:

- ``block``: ``await put`` waits for a free slot; ``put_nowait`` raises
  :class:`MailboxFull`.
- ``drop_newest``: the new message is dropped (and reported to ``on_drop``).
- ``drop_oldest``: the oldest queued message is dropped to make room.
- ``fail``: both forms raise :class:`MailboxFull`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal

from synaptic_mesh.runtime.errors import MailboxFull, TransportClosed

Overflow = Literal["block", "drop_newest", "drop_oldest", "fail"]
OVERFLOW_POLICIES: Final = ("block", "drop_newest", "drop_oldest", "fail")


class Mailbox:
    """One actor's queue of pending messages (see module docstring)."""

    __slots__ = (
        "_limit",
        "_loop",
        "_on_drop",
        "_putters",
        "_waiter",
        "capacity",
        "closed",
        "overflow",
        "subject",
        "system",
        "user",
    )

    def __init__(
        self,
        subject: str,
        capacity: int = 1000,
        overflow: Overflow = "block",
        on_drop: Callable[[Any, str], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, got {capacity}")
        if overflow not in OVERFLOW_POLICIES:
            choices = ", ".join(OVERFLOW_POLICIES)
            raise ValueError(f"unknown overflow policy {overflow!r}; choose one of {choices}")
        self.subject = subject
        self.capacity = capacity
        self._limit = capacity
        self.overflow = overflow
        self.user: deque[Any] = deque()
        self.system: deque[Any] | None = None  # made by the first put_system
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._putters: deque[asyncio.Future[None]] | None = None  # made by the first wait
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self.user)

    # -- sending ---------------------------------------------------------

    def put_nowait(self, item: Any) -> None:
        """Queue ``item`` without waiting; see the policies for a full mailbox.

        Raises :class:`TransportClosed` once the mailbox is closed.
        """
        user = self.user
        if len(user) >= self._limit or self._putters:
            self._overflow_nowait(item)
            return
        user.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def put(self, item: Any) -> None:
        """Queue ``item``, waiting for a free slot under the ``block`` policy."""
        if len(self.user) < self._limit and not self._putters:
            self.put_nowait(item)
            return
        if self.overflow != "block" or self.closed:
            self.put_nowait(item)
            return
        loop = asyncio.get_running_loop()
        while len(self.user) >= self.capacity and not self.closed:
            putter = loop.create_future()
            putters = self._putters
            if putters is None:
                putters = self._putters = deque()
            putters.append(putter)
            try:
                await putter
            except BaseException:
                if putter in putters:
                    putters.remove(putter)
                elif not putter.cancelled():
                    self._wake_putter()  # pass the slot on to the next sender
                raise
        if self.closed:
            raise TransportClosed(f"actor {self.subject!r} has stopped")
        self.user.append(item)
        self._wake_receiver()

    def put_system(self, item: Any) -> None:
        """Queue a system message; never refused, always taken before user messages."""
        system = self.system
        if system is None:
            system = self.system = deque()
        system.append(item)
        self._wake_receiver()

    def _overflow_nowait(self, item: Any) -> None:
        if self.closed:
            raise TransportClosed(f"actor {self.subject!r} has stopped")
        policy = self.overflow
        if policy == "drop_newest":
            self._dropped(item, "mailbox full (drop_newest)")
        elif policy == "drop_oldest":
            self._dropped(self.user.popleft(), "mailbox full (drop_oldest)")
            self.user.append(item)
            self._wake_receiver()
        else:  # block (the non-waiting form) and fail
            raise MailboxFull(self.subject, self.capacity)

    def _dropped(self, item: Any, reason: str) -> None:
        if self._on_drop is not None:
            self._on_drop(item, reason)

    # -- receiving -------------------------------------------------------

    def wake(self) -> None:
        """Wake the receiver(s) even though nothing was queued (to notice an ending)."""
        self._wake_receiver()

    def _wake_receiver(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_putter(self) -> None:
        putters = self._putters
        while putters:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                return

    def wait(self) -> asyncio.Future[None]:
        """A future the (single) receiver awaits until something is queued."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            loop = self._loop
            if loop is None:  # looked up once: get_running_loop costs a getpid() call
                loop = self._loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
        return waiter

    def taken(self) -> None:
        """Called by the receiver after a ``popleft``: lets one blocked sender in."""
        if self._putters:
            self._wake_putter()

    @property
    def idle_waiting(self) -> bool:
        """The receiver sleeps on an empty mailbox."""
        return self._waiter is not None and not self.user and not self.system

    # -- closing ---------------------------------------------------------

    def close(self) -> list[Any]:
        """Refuse further messages; returns what was still queued (for dead letters).

        Blocked senders are woken and get :class:`TransportClosed`.
        """
        self.closed = True
        # A zero limit sends every later put_nowait down the overflow path,
        # which refuses it, without a closed check on the hot path.
        self._limit = 0
        left = list(self.user)
        self.user.clear()
        putters, self._putters = self._putters, None
        for putter in putters or ():
            if not putter.done():
                putter.set_result(None)
        self._wake_receiver()
        return left
