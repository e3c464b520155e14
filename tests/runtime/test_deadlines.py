"""Shared ask timers: never early, at most one slot late, nothing left armed."""

from __future__ import annotations

import asyncio

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
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    first = loop.time() - started
    results = await asyncio.gather(*futures, return_exceptions=True)
    last = loop.time() - started
    assert first >= 0.05, "never early"
    assert last < 0.05 + 2 * RESOLUTION + 0.1, "at most a slot late (plus scheduling)"
    assert all(isinstance(r, AskTimeout) for r in results)
    assert len(deadlines) == 0


async def test_discarded_deadline_never_fires_and_close_disarms() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    kept, answered = loop.create_future(), loop.create_future()
    deadlines.add(answered, "a", 0.02).pop(answered)
    deadlines.add(kept, "b", 10)
    await asyncio.sleep(0.05)
    assert not answered.done()
    deadlines.close()
    assert deadlines._timers == {} and len(deadlines) == 0
    assert not kept.done()
