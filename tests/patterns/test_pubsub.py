"""Pub-sub: dynamic subscriptions on an actor, through its mailbox, for one incarnation."""

from __future__ import annotations

import asyncio

import pytest

from synaptic_mesh import AgentActor, Node, Supervisor, child, message, on
from synaptic_mesh.runtime.subjects import InvalidSubject
from tests.patterns.util import hub, until


@message(name="test_pubsub.News")
class News:
    n: int


@message(name="test_pubsub.Boom")
class Boom:
    pass


class Reader(AgentActor):
    """Subscribes in on_start; records (subject, n) from the mailbox, one at a time."""

    def __init__(self, log: list[tuple[str, str, int]], queue: str | None = None) -> None:
        self.log = log
        self.queue = queue
        self.busy = False

    async def on_start(self) -> None:
        self.sub = await self.subscribe("news.>", self.on_news, queue=self.queue)

    async def on_news(self, msg: News) -> None:
        assert not self.busy, "two deliveries at once: not through the mailbox"
        self.busy = True
        await asyncio.sleep(0)
        self.busy = False
        self.log.append((self.subject, self.current_subject, msg.n))

    @on(str)
    async def command(self, text: str) -> int:
        if text == "drop-handle":
            return await self.unsubscribe(self.sub)
        if text == "drop-pattern":
            return await self.unsubscribe("news.>")
        if text == "stop":
            self.stop()
        return -1

    @on(Boom)
    async def boom(self, msg: Boom) -> None:
        raise RuntimeError("boom")


async def test_deliveries_go_through_the_mailbox_until_unsubscribed() -> None:
    async with Node(hub()) as node:
        log: list[tuple[str, str, int]] = []
        await node.spawn(Reader, "reader", log)
        for n in range(20):
            await node.publish(f"news.{n % 2}", News(n))
        await until(lambda: len(log) == 20)
        assert [n for _, _, n in log] == list(range(20))
        assert log[1][1] == "news.1"
        assert await node.ask("reader", "drop-handle", timeout=2) == 1
        assert await node.ask("reader", "drop-pattern", timeout=2) == 0  # already gone
        await node.publish("news.x", News(99))
        await node.wait_idle(2)
        assert len(log) == 20


async def test_unsubscribe_by_pattern_and_queue_groups_share() -> None:
    async with Node(hub()) as node:
        log: list[tuple[str, str, int]] = []
        for name in ("r1", "r2", "r3"):
            await node.spawn(Reader, f"pool.{name}", log, "readers")
        for n in range(30):
            await node.publish("news.work", News(n))
        await until(lambda: len(log) == 30)
        assert sorted(n for _, _, n in log) == list(range(30)), "each message once"
        assert len({who for who, _, _ in log}) >= 2
        for name in ("r1", "r2", "r3"):
            assert await node.ask(f"pool.{name}", "drop-pattern", timeout=2) == 1
        await node.publish("news.work", News(100))
        await node.wait_idle(2)
        assert len(log) == 30


async def test_dynamic_subscription_ends_when_the_actor_stops() -> None:
    async with Node(hub()) as node:
        log: list[tuple[str, str, int]] = []
        await node.spawn(Reader, "reader", log)
        cell = node._local["reader"]
        subscribed = len(cell.subscriptions)
        await node.tell("reader", "stop")
        await cell.done.wait()
        assert cell.subscriptions == []
        await node.publish("news.late", News(1))  # nobody listens: dropped, no error
        assert log == [] and subscribed == 2  # its subject + the dynamic one


async def test_dynamic_subscription_ends_with_the_incarnation_on_restart() -> None:
    tree = Supervisor("s", children=[child(Reader, "reader", args=([],))])
    async with Node(hub()) as node:
        await node.start_supervisor(tree)
        cell = node._local["reader"]
        log = cell.actor.log
        await node.tell("reader", Boom())
        await until(lambda: cell.restarts == 1 and cell.actor is not None and cell.started)
        await node.wait_idle(2)
        await node.publish("news.once", News(7))
        await node.wait_idle(2)
        # The old incarnation's subscription ended; the new one subscribed again: one delivery.
        assert [n for _, _, n in log] == [7]
        assert len(cell.subscriptions) == 2


async def test_plain_function_handler_and_bad_arguments() -> None:
    got: list[int] = []

    class Plain(AgentActor):
        async def on_start(self) -> None:
            async def on_news(msg: News) -> None:
                got.append(msg.n)

            await self.subscribe("plain.news", on_news)
            with pytest.raises(TypeError):
                await self.subscribe("plain.x", lambda msg: None)
            with pytest.raises(InvalidSubject):
                await self.subscribe("bad..pattern", on_news)

    async with Node(hub()) as node:
        await node.spawn(Plain, "plain")
        await node.publish("plain.news", News(3))
        await until(lambda: got == [3])
