"""Pipeline: credit back-pressure, crash retry and dead-letter, closing, shape checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synaptic_mesh import (
    ActorStartError,
    AgentActor,
    Node,
    Pipeline,
    PipelineClosed,
    Stage,
    StageWorker,
    Supervisor,
    message,
)
from synaptic_mesh.patterns.pipeline import feed, runtime_of
from tests.patterns.util import hub, until


@message(name="test_pipeline.Job")
class Job:
    key: str
    n: int


async def passthrough(job: Job) -> Job:
    return job


class Gated(StageWorker):
    """Holds every item until the test opens the gate."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    async def process(self, job: Job) -> Job:
        await self.gate.wait()
        return job


class Flaky(StageWorker):
    """Fails item ``n`` on its first ``plan[n]`` attempts; records every attempt."""

    def __init__(self, plan: dict[int, int], attempts: list[tuple[int, int]]) -> None:
        self.plan = plan
        self.attempts = attempts

    async def process(self, job: Job) -> Job:
        self.attempts.append((job.n, self.attempt))
        if self.attempt <= self.plan.get(job.n, 0):
            raise RuntimeError(f"cannot do {job.n} (attempt {self.attempt})")
        return job


async def outputs(node: Node, topic: str) -> list[Any]:
    got: list[Any] = []

    async def keep(msg: Any, subject: str) -> None:
        got.append(msg)

    await node.subscribe(topic, keep)
    return got


async def test_a_slow_stage_stops_the_producer_instead_of_queueing() -> None:
    gate = asyncio.Event()
    pipe = Pipeline(
        "bp",
        [Stage("fast", passthrough), Stage("slow", Gated, kwargs={"gate": gate})],
        output="bp.done",
    )
    async with Node(hub()) as node:
        done = await outputs(node, "bp.done")
        await node.start_supervisor(pipe)
        fed: list[int] = []

        async def producer() -> None:
            for n in range(30):
                await feed(node, "bp", Job("k", n))
                fed.append(n)

        task = asyncio.create_task(producer())
        runtime = runtime_of(node, "bp")
        assert runtime is not None
        await until(lambda: runtime.in_flight("fast") == 1 and runtime.in_flight("slow") == 1)
        await asyncio.sleep(0.1)  # nothing else may get in while the slow stage holds
        # Item 0 waits in the slow stage, item 1 in the fast stage (for slow's credit);
        # the producer's third feed waits for the fast stage's credit.
        assert fed == [0, 1]
        assert len(node._local["bp.slow.1"].mailbox) == 0, "no queue grows behind the stage"
        gate.set()
        await task
        await until(lambda: len(done) == 30)
        assert [j.n for j in done] == list(range(30))
        assert runtime.stats.fed == 30 and runtime.stats.completed == 30


async def test_a_crashing_stage_is_restarted_and_the_item_retried_in_order() -> None:
    attempts: list[tuple[int, int]] = []
    pipe = Pipeline(
        "crash",
        [Stage("flaky", Flaky, kwargs={"plan": {3: 2, 6: 99}, "attempts": attempts})],
        key=lambda job: job.key,
        prefetch=4,  # later items wait in the worker's mailbox while item 3 is retried
        retries=2,
        output="crash.done",
    )
    async with Node(hub()) as node:
        done = await outputs(node, "crash.done")
        await node.start_supervisor(pipe)
        for n in range(10):
            await feed(node, "crash", Job("same", n))
        await until(lambda: len(done) == 9)
        await node.wait_idle(5)
        assert [j.n for j in done] == [0, 1, 2, 3, 4, 5, 7, 8, 9], "6 dead-lettered, order kept"
        # Item 3 failed twice, then succeeded on its third attempt before item 4 was tried.
        assert attempts[3:7] == [(3, 1), (3, 2), (3, 3), (4, 1)]
        assert [a for n, a in attempts if n == 6] == [1, 2, 3]
        runtime = runtime_of(node, "crash")
        assert runtime is not None
        assert runtime.stats.retries == 4 and runtime.stats.dead_lettered == 1
        assert node._local["crash.flaky.1"].restarts == 5, "the supervisor restarted each crash"
        given_up = [
            (letter, msg)
            for letter, msg in node.recent_dead_letters
            if "gave up after 3 attempts" in letter.reason
        ]
        assert len(given_up) == 1 and given_up[0][1] == Job("same", 6)
        assert "stage 'flaky'" in given_up[0][0].reason
        assert runtime.in_flight("flaky") == 0, "the dead-lettered item's credit came back"


async def test_stopping_the_pipeline_wakes_a_waiting_producer() -> None:
    gate = asyncio.Event()
    pipe = Pipeline("stuck", [Stage("slow", Gated, kwargs={"gate": gate})])
    async with Node(hub()) as node:
        root = await node.start_supervisor(pipe)
        await feed(node, "stuck", Job("k", 0))  # taken by the worker, which holds it
        waiting = asyncio.create_task(feed(node, "stuck", Job("k", 1)))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        stopping = asyncio.create_task(root.shutdown("test"))
        with pytest.raises(PipelineClosed, match="'stuck' stopped"):
            await waiting
        gate.set()
        await stopping
        with pytest.raises(PipelineClosed, match="no pipeline 'stuck' is running"):
            await feed(node, "stuck", Job("k", 2))


async def test_filter_stage_and_pipeline_inside_a_tree() -> None:
    async def evens_only(job: Job) -> Job | None:
        return job if job.n % 2 == 0 else None

    tree = Supervisor(
        "app",
        children=[
            Pipeline("f", [Stage("even", evens_only), Stage("pass", passthrough)], output="f.out")
        ],
    )
    async with Node(hub()) as node:
        done = await outputs(node, "f.out")
        await node.start_supervisor(tree)
        for n in range(10):
            await feed(node, "f", Job("k", n))
        await until(lambda: len(done) == 5)
        await node.wait_idle(2)
        runtime = runtime_of(node, "f")
        assert runtime is not None and runtime.stats.processed == {"even": 10, "pass": 5}


class Feeder(AgentActor):
    async def on_start(self) -> None:
        for n in range(3):
            await self.feed("fa", Job("k", n))


async def test_actors_feed_with_self_feed() -> None:
    async with Node(hub()) as node:
        done = await outputs(node, "fa.out")
        await node.start_supervisor(Pipeline("fa", [Stage("s", passthrough)], output="fa.out"))
        await node.spawn(Feeder, "feeder")
        await until(lambda: len(done) == 3)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        Pipeline("p", [])
    with pytest.raises(ValueError, match="distinct names"):
        Pipeline("p", [Stage("a", passthrough), Stage("a", passthrough)])
    with pytest.raises(ValueError, match="one token"):
        Pipeline("p", [Stage("a.b", passthrough)])
    with pytest.raises(ValueError, match="one token"):
        Pipeline("p", [Stage("feed", passthrough)])
    with pytest.raises(ValueError):
        Pipeline("p", [Stage("a", passthrough)], workers=0)
    with pytest.raises(TypeError, match="not a StageWorker"):
        Pipeline("p", [Stage("a", AgentActor)])


async def test_a_stage_worker_outside_a_pipeline_does_not_start() -> None:
    async with Node(hub()) as node:
        with pytest.raises(ActorStartError, match="start it in a Pipeline"):
            await node.spawn(Gated, "lonely", asyncio.Event())


class Witness(StageWorker):
    """Records who sent each item and on what subject; fails on item 1."""

    def __init__(self, seen: list[tuple[int, str | None, str]]) -> None:
        self.seen = seen

    async def process(self, job: Job) -> Job:
        self.seen.append((job.n, self.current_sender, self.current_subject))
        if job.n == 1:
            raise RuntimeError("cannot do 1")
        return job


async def test_a_worker_knows_its_items_sender_and_a_crash_reports_the_item() -> None:
    seen: list[tuple[int, str | None, str]] = []
    pipe = Pipeline("fa", [Stage("w", Witness, kwargs={"seen": seen})], retries=0)
    async with Node(hub()) as node:
        await node.start_supervisor(pipe)
        await node.spawn(Feeder, "feeder")  # feeds items 0, 1, 2 as itself
        await until(lambda: len(seen) == 3)
        await node.wait_idle(2)
        assert [(n, sender) for n, sender, _ in seen] == [
            (0, "feeder"),
            (1, "feeder"),
            (2, "feeder"),
        ]
        assert all(subject.startswith("_pipe.fa.w") for _, _, subject in seen), seen
        raised = [
            (letter, msg)
            for letter, msg in node.recent_dead_letters
            if letter.reason.startswith("handler raised RuntimeError")
        ]
        assert [msg for _, msg in raised] == [Job("k", 1)], "the item, not its mailbox wrapper"
        assert raised[0][0].subject == "fa.w.1"
        assert all(cell.current is None for cell in node._local.values())
