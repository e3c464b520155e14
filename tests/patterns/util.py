"""Helpers shared by the pattern tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

_hubs = itertools.count(1)


def hub() -> str:
    """A fresh inproc URL, so tests never share a hub."""
    return f"inproc://patterns-{next(_hubs)}"


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)
