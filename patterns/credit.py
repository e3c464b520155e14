"""Credit: the back-pressure of a pipeline stage, as pools of permits with FIFO waiters.

A stage has one pool (shared by its workers, unkeyed) or one pool per worker
(keyed, so a slow key holds only its own worker's credit). Sending an item
to a stage takes a credit; the worker gives it back when it has finished the
item, handing it over to the first producer waiting for that pool. Closing
wakes every waiter with ``PipelineClosed``.
"""

from __future__ import annotations

import asyncio
from collections import deque

from synaptic_mesh.runtime.errors import PipelineClosed


class Credits:
    """Credit pools of one stage: ``pools`` pools of ``size`` credits, FIFO waiters."""

    def __init__(self, pools: int, size: int) -> None:
        self.size = size
        self.free = [size] * pools
        self._waiters: list[deque[asyncio.Future[None]]] = [deque() for _ in range(pools)]
        self.closed: str | None = None

    def try_acquire(self, pool: int) -> bool:
        """Take a credit of ``pool`` if one is free and nobody waits; raises once closed."""
        if self.closed is not None:
            raise PipelineClosed(self.closed)
        if self.free[pool] > 0 and not self._waiters[pool]:
            self.free[pool] -= 1
            return True
        return False

    async def acquire(self, pool: int) -> None:
        """Take a credit of ``pool``, waiting for one; raises ``PipelineClosed`` once closed."""
        if self.try_acquire(pool):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[pool].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(pool)  # handed over just as we were cancelled: pass it on
            raise

    def release(self, pool: int) -> None:
        """Give a credit back: to the first waiter of ``pool``, else to the pool."""
        waiters = self._waiters[pool]
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
        for waiters in self._waiters:
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(PipelineClosed(reason))
