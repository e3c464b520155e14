"""Shared ask timers: never early, at most one slot late, nothing left armed."""

from __future__ import annotations

import asyncio

import pytest

from synaptic_mesh import AskTimeout
from synaptic_mesh.runtime.deadlines import RESOLUTION, Deadlines


async def test_timeouts_fire_on_time_and_share_a_timer() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(50)]
    started = loop.time()
    for future in futures:
        deadlines.add(future, "core.slow", 0.05)
    assert len(deadlines._timers) <= 2, "asks in one slot share its timer"
    with pytest.raises(AskTimeout):
        await futures[0]
    elapsed = loop.time() - started
    assert 0.05 <= elapsed < 0.05 + RESOLUTION + 0.05
    assert all(f.done() and isinstance(f.exception(), AskTimeout) for f in futures)
    assert len(deadlines) == 0


async def test_discarded_deadline_never_fires_and_close_disarms() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    kept, answered = loop.create_future(), loop.create_future()
    deadlines.discard(deadlines.add(answered, "a", 0.02), answered)
    deadlines.add(kept, "b", 10)
    await asyncio.sleep(0.05)
    assert not answered.done()
    deadlines.close()
    assert deadlines._timers == {} and len(deadlines) == 0
    assert not kept.done()
