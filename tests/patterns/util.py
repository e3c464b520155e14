"""Helpers shared by the pattern tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.conformance.actors import Probe

if TYPE_CHECKING:
    from synaptic_mesh import Node
    from tests.conformance.actors import Heard
    from tests.patterns.actors import Job

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


async def probe_on(node: Node, subject: str = "probe.log") -> list[Heard]:
    """A ``Probe`` actor at ``subject`` on ``node``; returns the list it records into."""
    log: list[Heard] = []
    await node.spawn(Probe, subject, log)
    return log


def assert_once_per_stage_in_key_order(log: list[Heard], jobs: list[Job]) -> None:
    """Each job went through stages ``first`` and ``second`` once, every key's jobs in
    order and on one worker (what a keyed pipeline promises)."""
    for stage in ("first", "second"):
        seen = [h.text for h in log if h.subject == stage]
        assert sorted(seen) == sorted(f"{j.key}:{j.n}" for j in jobs), f"{stage}: once each"
        by_key: dict[str, list[int]] = defaultdict(list)
        workers: dict[str, set[str]] = defaultdict(set)
        for h in log:
            if h.subject == stage:
                key, n = h.text.split(":")
                by_key[key].append(int(n))
                workers[key].add(h.actor)
        for key, numbers in by_key.items():
            assert numbers == sorted(numbers), f"{stage} broke the order of {key}"
            assert len(workers[key]) == 1, f"{stage}: key {key} went to {workers[key]}"
