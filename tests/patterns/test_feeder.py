"""Feeder: many items in flight from another node, order per key, back-pressure, failures.

The feeder streams on a lease of first-stage credit (``test_pipeline_lease.py``
covers the lease itself: bounds, fairness, revocation, expiry).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from synaptic_mesh import Feeder, Node, Pipeline, PipelineClosed, Stage, StageWorker, message
from tests.patterns.util import until


@message(name="test_feeder.Item")
class Item:
    key: str
    n: int


class Slow(StageWorker):
    """Holds each item until the test lets one through."""

    def __init__(self, tokens: asyncio.Queue[None], seen: list[int]) -> None:
        self.tokens = tokens
        self.seen = seen

    async def process(self, item: Item) -> None:
        await self.tokens.get()
        self.seen.append(item.n)


@asynccontextmanager
async def producer_and_pipeline_nodes() -> AsyncIterator[tuple[Node, Node]]:
    """The producer ``a`` and the pipeline's node ``b``, linked over tcp://."""
    async with Node("tcp://127.0.0.1:0", name="b") as b:
        url = f"tcp://127.0.0.1:0?peers={b.transport.address}"  # type: ignore[attr-defined]
        async with Node(url, name="a") as a:
            yield a, b


async def test_a_remote_producer_keeps_a_window_in_flight_and_order_per_key_holds() -> None:
    done: list[tuple[str, int]] = []

    async def record(item: Item) -> None:
        done.append((item.key, item.n))

    async with producer_and_pipeline_nodes() as (a, b):
        spec = Pipeline("ingest", [Stage("work", record)], workers=3, key=lambda i: i.key)
        await b.start_supervisor(spec)
        await until(lambda: bool(a.transport.peers_serving("ingest.feed")))  # type: ignore[attr-defined]
        most = 0
        async with Feeder(a, "ingest", window=16) as feeder:
            for n in range(600):
                await feeder.put(Item(f"k{n % 5}", n))
                most = max(most, feeder.in_flight)
        assert feeder.leased, "items went straight to the stage, on a lease"
        assert feeder.taken == feeder.sent == 600
        assert 1 < most <= 16, f"in flight at most the window, and more than one: {most}"
        await until(lambda: len(done) == 600)
        assert sorted(n for _, n in done) == list(range(600)), "each item exactly once"
        for key in {k for k, _ in done}:
            ns = [n for k, n in done if k == key]
            assert ns == sorted(ns), f"items of {key} in feed order"


async def test_a_slow_stage_holds_the_feeder_at_its_window() -> None:
    tokens: asyncio.Queue[None] = asyncio.Queue()
    seen: list[int] = []
    async with producer_and_pipeline_nodes() as (a, b):
        spec = Pipeline("slow", [Stage("s", Slow, args=(tokens, seen))], prefetch=2)
        await b.start_supervisor(spec)
        await until(lambda: bool(a.transport.peers_serving("slow.feed")))  # type: ignore[attr-defined]
        feeder = Feeder(a, "slow", window=4)
        sending = asyncio.create_task(_put_all(feeder, 20))
        await asyncio.sleep(0.3)
        # The stage has 2 credits, all lent to the feeder: 2 items sent, the third
        # put waits for credit; the producer is held, nothing piles up
        assert not sending.done()
        assert feeder.sent == 2 and feeder.in_flight == 2 and feeder.granted == 2
        assert len(b._local["slow.s.1"].mailbox) <= 1
        for _ in range(20):
            tokens.put_nowait(None)
        await asyncio.wait_for(sending, 10)
        await feeder.flush()
        feeder.close()
        await until(lambda: len(seen) == 20)
        assert seen == list(range(20))


async def _put_all(feeder: Feeder, count: int) -> None:
    for n in range(count):
        await feeder.put(Item("k", n))


async def test_feeding_a_pipeline_that_does_not_run_raises_pipeline_closed() -> None:
    async with producer_and_pipeline_nodes() as (a, _b):
        with pytest.raises(PipelineClosed, match="nowhere"):
            async with Feeder(a, "nowhere", window=8) as feeder:
                for n in range(20):
                    await feeder.put(Item("k", n))


async def test_a_pipeline_that_stops_refuses_the_items_still_coming() -> None:
    async def keep(item: Item) -> None:
        return None

    async with producer_and_pipeline_nodes() as (a, b):
        root = await b.start_supervisor(Pipeline("brief", [Stage("s", keep)]))
        await until(lambda: bool(a.transport.peers_serving("brief.feed")))  # type: ignore[attr-defined]
        feeder = Feeder(a, "brief", window=4)
        await feeder.put(Item("k", 0))
        await feeder.flush()
        await root.shutdown("test")
        with pytest.raises(PipelineClosed):
            for n in range(1, 50):
                await feeder.put(Item("k", n))
            await feeder.flush()
        feeder.close()
