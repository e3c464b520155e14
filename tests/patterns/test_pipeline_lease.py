"""Leases of first-stage credit: bounds, fairness, revocation, expiry, keyed routing, transports.

A ``Feeder`` on another node than its pipeline borrows first-stage credit and
publishes items straight to the stage (``synaptic_mesh.patterns.pipeline_lease``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from synaptic_mesh import (
    AgentActor,
    Feeder,
    Node,
    Pipeline,
    PipelineClosed,
    Stage,
    StageWorker,
    message,
)
from synaptic_mesh.patterns.pipeline import feed, runtime_of
from synaptic_mesh.patterns.pipeline_lease_wire import token
from synaptic_mesh.patterns.pipeline_run import PIPE_PREFIX, PipelineRuntime
from synaptic_mesh.runtime.envelope import TELL
from tests.conformance.transports import TcpCase, TransportCase
from tests.patterns.actors import Job, PipelineHost, job_key
from tests.patterns.util import assert_once_per_stage_in_key_order, probe_on, until


@message(name="test_pipeline_lease.Item")
class Item:
    key: str
    n: int


@asynccontextmanager
async def mesh(producers: int = 1) -> AsyncIterator[tuple[Node, list[Node]]]:
    """The pipeline's node ``b`` and ``producers`` nodes dialing it, over tcp://."""
    async with Node("tcp://127.0.0.1:0", name="b") as b:
        url = f"tcp://127.0.0.1:0?peers={b.transport.address}"  # type: ignore[attr-defined]
        nodes = [Node(url, name=f"p{i}") for i in range(producers)]
        try:
            for node in nodes:
                await node.start()
            yield b, nodes
        finally:
            for node in reversed(nodes):
                await node.close()


async def served(node: Node, pipeline: str) -> None:
    """Wait until ``node`` sees the pipeline's control subject served (interest arrived)."""
    subject = f"{PIPE_PREFIX}.{pipeline}.feed"
    await until(lambda: bool(node.transport.peers_serving(subject)))  # type: ignore[attr-defined]


def running(node: Node, name: str) -> PipelineRuntime:
    runtime = runtime_of(node, name)
    assert runtime is not None
    return runtime


async def slow(item: Item) -> None:
    await asyncio.sleep(0.002)


async def keep(item: Item) -> None:
    return None


# -- bounds and fairness ------------------------------------------------------------


async def test_two_producers_progress_and_none_holds_more_than_its_grant() -> None:
    async with mesh(producers=2) as (b, (p1, p2)):
        await b.start_supervisor(Pipeline("share", [Stage("s", slow)], workers=2, prefetch=2))
        runtime = running(b, "share")
        await served(p1, "share")
        await served(p2, "share")
        first = Feeder(p1, "share", window=4, timeout=10)
        second = Feeder(p2, "share", window=4, timeout=10)
        violations: list[str] = []

        def check() -> None:
            held = runtime.leases.held()
            if sum(held.values()) > 4 or runtime.in_flight("s") > 4:
                violations.append(f"stage credit exceeded: {held}, {runtime.in_flight('s')}")
            for feeder in (first, second):
                if not 0 <= feeder.in_flight <= feeder.granted <= feeder.window:
                    violations.append(f"{feeder.in_flight} in flight, {feeder.granted} granted")

        async def watch() -> None:
            while True:
                check()
                await asyncio.sleep(0.001)

        async def produce(feeder: Feeder, count: int) -> float:
            async with feeder:
                for n in range(count):
                    await feeder.put(Item("k", n))
            return time.monotonic()

        watcher = asyncio.create_task(watch())
        long_run = asyncio.create_task(produce(first, 400))
        await until(lambda: first.sent >= 8)  # the first producer holds the whole stage
        assert first.granted == 4 and runtime.leases.held() == {1: 4}
        second_done = await asyncio.wait_for(produce(second, 40), 10)
        first_done = await asyncio.wait_for(long_run, 20)
        watcher.cancel()
        check()
        assert violations == []
        assert second_done < first_done, "the second producer was not starved"
        assert first.leased and second.leased
        assert first.taken == 400 and second.taken == 40
        assert runtime.stats.fed == 440 and runtime.stats.processed == {"s": 440}
        await until(lambda: runtime.in_flight("s") == 0 and runtime.leases.held() == {})


async def test_credit_idle_at_a_producer_is_called_back_for_a_waiting_feed() -> None:
    async with mesh() as (b, (p,)):
        await b.start_supervisor(Pipeline("idle", [Stage("s", keep)], prefetch=3))
        runtime = running(b, "idle")
        await served(p, "idle")
        feeder = Feeder(p, "idle", window=8)
        await feeder.put(Item("k", 0))
        await feeder.flush()
        assert feeder.granted == 3 and runtime.in_flight("s") == 3, "all of it, idle at p"
        await asyncio.wait_for(feed(b, "idle", Item("k", 1)), 5)  # reclaimed, not starved
        for n in range(2, 10):  # the producer asks for credit again and goes on
            await feeder.put(Item("k", n))
        await feeder.flush()
        feeder.close()
        assert runtime.stats.fed == 10
        await until(lambda: runtime.in_flight("s") == 0)


class Flaky(StageWorker):
    """Fails item ``n`` on its first ``plan[n]`` attempts; records every attempt."""

    def __init__(self, plan: dict[int, int], attempts: list[tuple[int, int]]) -> None:
        self.plan = plan
        self.attempts = attempts

    async def process(self, item: Item) -> None:
        self.attempts.append((item.n, self.attempt))
        if self.attempt <= self.plan.get(item.n, 0):
            raise RuntimeError(f"cannot do {item.n} (attempt {self.attempt})")


async def test_leased_items_are_retried_in_order_and_dead_lettered_with_their_credit() -> None:
    attempts: list[tuple[int, int]] = []
    spec = Pipeline(
        "retry",
        [Stage("flaky", Flaky, kwargs={"plan": {2: 1, 5: 99}, "attempts": attempts})],
        key=lambda item: item.key,
        prefetch=3,
        retries=2,
    )
    async with mesh() as (b, (p,)):
        await b.start_supervisor(spec)
        runtime = running(b, "retry")
        await served(p, "retry")
        async with Feeder(p, "retry", window=3, timeout=10) as feeder:
            for n in range(8):
                await feeder.put(Item("same", n))
        assert feeder.leased and feeder.taken == 8, "the dead-lettered item's credit came back"
        assert attempts[2:5] == [(2, 1), (2, 2), (3, 1)], "retried first, in order"
        assert [a for n, a in attempts if n == 5] == [1, 2, 3]
        assert [n for n, _ in attempts if n != 2 and n != 5] == [0, 1, 3, 4, 6, 7]
        assert runtime.stats.retries == 3 and runtime.stats.dead_lettered == 1
        await until(lambda: runtime.in_flight("flaky") == 0)


# -- the end of a run, of a producer, of the pipeline's node ------------------------


async def test_a_new_run_revokes_old_grants_and_refuses_their_items() -> None:
    async with mesh() as (b, (p,)):
        spec = Pipeline("again", [Stage("s", keep)], prefetch=4)
        root = await b.start_supervisor(spec)
        old = running(b, "again")
        await served(p, "again")
        feeder = Feeder(p, "again", window=4)
        for n in range(3):
            await feeder.put(Item("k", n))
        await feeder.flush()
        assert feeder.leased and old.leases.held() == {1: 4}
        await root.shutdown("test")
        await b.start_supervisor(Pipeline("again", [Stage("s", keep)], prefetch=4))
        new = running(b, "again")
        assert new.epoch != old.epoch and new.leases.held() == {}
        with pytest.raises(PipelineClosed, match="'again' stopped"):
            for n in range(3, 100):
                await feeder.put(Item("k", n))
                await asyncio.sleep(0.001)
        feeder.close()
        # An item still carrying the old run's token is dead-lettered, not counted.
        before = b.stats.dead_letters
        await served(p, "again")
        env = p.make_envelope(TELL, f"{PIPE_PREFIX}.again.s", Item("k", 99), None)
        env.corr = token(old.epoch, 1)
        await p.send_frames(env.subject, p.encode(env))
        await until(lambda: b.stats.dead_letters > before)
        assert any(
            "'again' is not running" in letter.reason and msg == Item("k", 99)
            for letter, msg in b.recent_dead_letters
        )
        assert new.stats.fed == 0 and new.in_flight("s") == 0
        async with Feeder(p, "again", window=4) as fresh:  # a new feeder gets a new grant
            for n in range(5):
                await fresh.put(Item("k", n))
        assert fresh.leased and new.stats.fed == 5


async def test_a_producer_waiting_for_credit_gets_pipeline_closed_when_the_pipeline_stops() -> None:
    hold = asyncio.Event()

    async def held(item: Item) -> None:
        await hold.wait()

    async with mesh() as (b, (p,)):
        root = await b.start_supervisor(Pipeline("stops", [Stage("s", held)], prefetch=1))
        await served(p, "stops")
        feeder = Feeder(p, "stops", window=4)
        await feeder.put(Item("k", 0))  # taken by the worker, which holds it
        waiting = asyncio.create_task(feeder.put(Item("k", 1)))
        await asyncio.sleep(0.1)
        assert not waiting.done() and feeder.in_flight == 1 and feeder.granted == 1
        stopping = asyncio.create_task(root.shutdown("test"))
        with pytest.raises(PipelineClosed, match="'stops' stopped"):
            await asyncio.wait_for(waiting, 5)
        hold.set()
        await stopping
        with pytest.raises(PipelineClosed):
            await feeder.flush()
        feeder.close()


async def test_the_lease_of_a_producer_whose_node_died_expires() -> None:
    async with mesh(producers=2) as (b, (p, other)):
        await b.start_supervisor(Pipeline("ttl", [Stage("s", keep)], prefetch=4, lease_ttl=0.5))
        runtime = running(b, "ttl")
        await served(p, "ttl")
        feeder = Feeder(p, "ttl", window=4)
        await feeder.put(Item("k", 0))
        await feeder.flush()
        assert runtime.in_flight("s") == 4, "lent to p"
        await p.close()  # the feeder never closes: its node is gone
        await until(lambda: runtime.in_flight("s") == 0, timeout=3)
        assert runtime.leases.held() == {}
        async with Feeder(other, "ttl", window=4) as after:
            for n in range(8):
                await after.put(Item("k", n))
        assert after.granted == 4 and runtime.stats.fed == 9


class LeaseHost(AgentActor):
    """Starts pipeline ``name`` with one stage that holds every item, leases of ``ttl`` s."""

    def __init__(self, name: str, ttl: float) -> None:
        self.spec = Pipeline(name, [Stage("s", _hold_forever)], prefetch=1, lease_ttl=ttl)

    async def on_start(self) -> None:
        await self.node.start_supervisor(self.spec)


async def _hold_forever(item: Item) -> None:
    await asyncio.Event().wait()


async def test_a_producer_whose_pipeline_node_was_killed_gets_pipeline_closed() -> None:
    async with TcpCase().pair() as (a, peer):
        await peer.spawn(LeaseHost, "gone.host", "gone", 0.4)
        feeder = Feeder(a, "gone", window=2)
        await feeder.put(Item("k", 0))  # held by the worker for ever
        waiting = asyncio.create_task(feeder.put(Item("k", 1)))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await peer.kill()  # type: ignore[attr-defined]
        started = time.monotonic()
        with pytest.raises(PipelineClosed, match="did not answer"):
            await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 2
        feeder.close()


# -- keyed pipelines in another process, and every transport ------------------------


async def test_a_keyed_feeder_streams_on_a_lease_on_every_transport(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        done: list[Job] = []

        async def collect(job: Job, subject: str) -> None:
            done.append(job)

        await a.subscribe("leased.done", collect)
        await b.spawn(PipelineHost, "leased.host", "probe.log", "leased", 3, True)
        jobs = [Job(f"k{n % 4}", n) for n in range(60)]
        async with Feeder(a, "leased", window=8, key=job_key, timeout=10) as feeder:
            for job in jobs:
                await feeder.put(job)
                assert feeder.in_flight <= feeder.granted <= 8
        assert feeder.leased and feeder.taken == 60
        await until(lambda: len(done) == 60 and len(log) == 120, timeout=10)
        await asyncio.sleep(0.05)
        assert_once_per_stage_in_key_order(log, jobs)
        for key in {j.key for j in jobs}:
            assert [j.n for j in done if j.key == key] == [j.n for j in jobs if j.key == key]


def other_key(job: Job) -> str:
    return job.key


async def test_a_keyed_pipeline_elsewhere_needs_its_key_else_the_gate_feeds() -> None:
    async with TcpCase().pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(PipelineHost, "far.host", "probe.log", "far", 2, True)
        wrong = Feeder(a, "far", key=other_key)
        with pytest.raises(ValueError, match="not pipeline 'far'"):
            await wrong.put(Job("k0", 0))
        wrong.close()
        jobs = [Job(f"k{n % 3}", n) for n in range(30)]
        async with Feeder(a, "far", window=4, timeout=10) as feeder:  # no key: the gate
            for job in jobs:
                await feeder.put(job)
        assert not feeder.leased and feeder.taken == 30
        await until(lambda: len(log) == 60, timeout=10)
        assert_once_per_stage_in_key_order(log, jobs)
