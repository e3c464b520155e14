"""Credit: the back-pressure of a pipeline stage, as pools of permits with FIFO waiters.

A stage has one pool (shared by its workers, unkeyed) or one pool per worker
(keyed, so a slow key holds only its own worker's credit). Sending an item
to a stage takes a credit; the worker gives it back when it has finished the
item, handing it over to the first waiter of that pool. Closing wakes every
waiter with ``PipelineClosed``.

Waiters are served strictly in arrival order, whoever they are: a producer
awaiting :meth:`Credits.acquire` (the gate admitting a ``feed``) or a lease
of first-stage credit asking for more through :meth:`Credits.request`
(:mod:`synaptic_mesh.patterns.pipeline_lease`). ``on_wait`` tells the lease
book-keeping that someone queued, so that credits idle at a producer can be
called back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from synaptic_mesh.runtime.errors import PipelineClosed


class Credits:
    """Credit pools of one stage: ``pools`` pools of ``size`` credits, FIFO waiters."""

    def __init__(self, pools: int, size: int) -> None:
        self.size = size
        self.free = [size] * pools
        self.waiters: list[deque[asyncio.Future[None]]] = [deque() for _ in range(pools)]
        """Per pool, the waiters in arrival order (read it, never change it; some may be done)."""
        self.closed: str | None = None
        self.on_wait: Callable[[int], None] | None = None
        """Called with the pool's index each time a waiter queues on an empty pool."""

    @property
    def pools(self) -> int:
        return len(self.free)

    def try_acquire(self, pool: int) -> bool:
        """Take a credit of ``pool`` if one is free and nobody waits; raises once closed."""
        if self.closed is not None:
            raise PipelineClosed(self.closed)
        if self.free[pool] > 0 and not self.waiters[pool]:
            self.free[pool] -= 1
            return True
        return False

    def take(self, pool: int, most: int) -> int:
        """Take up to ``most`` free credits of ``pool`` at once (none while others wait)."""
        if self.closed is not None or self.waiters[pool] or most <= 0:
            return 0
        taken = min(most, self.free[pool])
        self.free[pool] -= taken
        return taken

    async def acquire(self, pool: int) -> None:
        """Take a credit of ``pool``, waiting for one; raises ``PipelineClosed`` once closed."""
        if self.try_acquire(pool):
            return
        waiter = self._enqueue(pool)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(pool)  # handed over just as we were cancelled: pass it on
            raise

    def request(self, pool: int) -> asyncio.Future[None]:
        """A future that resolves once a credit of ``pool`` is handed to its owner.

        Already resolved when one is free and nobody waits; otherwise queued
        behind earlier waiters. It fails with ``PipelineClosed`` when the
        credits close. An owner that no longer wants a credit it was handed
        must :meth:`release` it.
        """
        if self.try_acquire(pool):
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return self._enqueue(pool)

    def waiting(self, pool: int) -> bool:
        """Whether anyone waits for a credit of ``pool``."""
        waiters = self.waiters[pool]
        return bool(waiters) and any(not waiter.done() for waiter in waiters)

    def release(self, pool: int) -> None:
        """Give a credit back: to the first waiter of ``pool``, else to the pool."""
        waiters = self.waiters[pool]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free[pool] = min(self.size, self.free[pool] + 1)

    def in_flight(self) -> int:
        return sum(self.size - free for free in self.free)

    def close(self, reason: str) -> None:
        self.closed = reason
        for waiters in self.waiters:
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(PipelineClosed(reason))

    def _enqueue(self, pool: int) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[pool].append(waiter)
        if self.on_wait is not None:
            self.on_wait(pool)
        return waiter
