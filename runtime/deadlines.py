"""Ask timeouts that share loop timers.

A timer per ask (``loop.call_later`` and its ``cancel``) costs about as
much as the rest of an in-process ask. Deadlines are therefore grouped in
slots of :data:`RESOLUTION` seconds, each slot armed with one loop timer, and
an ask only adds its future to its slot (a dict) and removes it again. A
timeout fires at the end of its slot: never early, at most ``RESOLUTION``
late.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from synaptic_mesh.runtime.errors import AskTimeout

RESOLUTION: Final = 0.01
PER_SECOND: Final = 1 / RESOLUTION
_clock = time.monotonic  # the slots' clock; timers are armed relative to it (call_later)

Slot = dict["asyncio.Future[Any]", tuple[str, float]]
"""The asks whose deadline ends with one slot: future -> (subject, timeout)."""


class Deadlines:
    """The pending ask timeouts of one node, on one event loop."""

    def __init__(self) -> None:
        self._slots: dict[int, Slot] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._key = 0  # the slot the last ask went to: most asks in a row share it
        self._slot: Slot = {}

    def add(self, future: asyncio.Future[Any], subject: str, timeout: float) -> Slot:
        """Fail ``future`` with ``AskTimeout`` after ``timeout`` s; returns its slot.

        Called once per ask, so it takes few steps: the slot is the first to end
        after the deadline, and only a new slot touches the loop. The ask is
        over when its future leaves the slot: ``slot.pop(future, None)``.
        """
        key = int((_clock() + timeout) * PER_SECOND) + 1
        if key == self._key:
            slot = self._slot
        else:
            found = self._slots.get(key)
            if found is None:
                found = self._slots[key] = {}
                delay = key / PER_SECOND - _clock()
                self._timers[key] = future.get_loop().call_later(delay, self._fire, key)
            slot = self._slot = found
            self._key = key
        slot[future] = (subject, timeout)
        return slot

    def _fire(self, key: int) -> None:
        self._timers.pop(key, None)
        if key == self._key:
            self._key, self._slot = 0, {}
        for future, (subject, timeout) in self._slots.pop(key, {}).items():
            if not future.done():
                future.set_exception(AskTimeout(subject, timeout))

    def close(self) -> None:
        """Cancel every armed timer (the node is closing)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._slots.clear()
        self._key, self._slot = 0, {}

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())
