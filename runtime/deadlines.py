"""Ask timeouts that share loop timers.

A timer per ask (``loop.call_later`` and its ``cancel``) costs about as
much as the rest of an in-process ask. Deadlines are therefore grouped in
slots of :data:`RESOLUTION` seconds, each slot armed with one loop timer, and
an ask only adds its future to a dict and removes it again. A timeout fires
at the end of its slot: never early, at most ``RESOLUTION`` late.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Final

from synaptic_mesh.runtime.errors import AskTimeout

RESOLUTION: Final = 0.01


class Deadlines:
    """The pending ask timeouts of one node, on one event loop."""

    def __init__(self) -> None:
        self._slots: dict[int, dict[asyncio.Future[Any], tuple[str, float]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, future: asyncio.Future[Any], subject: str, timeout: float) -> int:
        """Fail ``future`` with ``AskTimeout`` after ``timeout`` s; returns its slot."""
        loop = future.get_loop()
        key = math.ceil((loop.time() + timeout) / RESOLUTION)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = {}
            self._timers[key] = loop.call_at(key * RESOLUTION, self._fire, key)
        slot[future] = (subject, timeout)
        return key

    def discard(self, key: int, future: asyncio.Future[Any]) -> None:
        """The ask is over: forget its deadline."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.pop(future, None)

    def _fire(self, key: int) -> None:
        self._timers.pop(key, None)
        for future, (subject, timeout) in self._slots.pop(key, {}).items():
            if not future.done():
                future.set_exception(AskTimeout(subject, timeout))

    def close(self) -> None:
        """Cancel every armed timer (the node is closing)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._slots.clear()

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())
