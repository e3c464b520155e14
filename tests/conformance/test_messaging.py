"""The transport conformance suite: the same promises on every transport.

Each test runs on every case in ``transports.CASES`` with two nodes, the
actor on one and the caller on the other, so every message crosses the
transport (a node's local fast path is tested in ``tests/actors``).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from synaptic_mesh import (
    AgentActor,
    AskTimeout,
    NoResponders,
    RemoteError,
    TransportClosed,
    message,
    on,
    subscribe,
)
from tests.conformance.transports import TransportCase


@message(name="conformance.Ping")
class Ping:
    n: int


@message(name="conformance.Pong")
class Pong:
    n: int
    by: str


@message(name="conformance.Explore")
class Explore:
    branch: str
    idea: str


@message(name="conformance.Slow")
class Slow:
    seconds: float


@message(name="conformance.Boom")
class Boom:
    text: str


class Echo(AgentActor):
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.stopped = False

    @on(Ping)
    async def ping(self, msg: Ping) -> Pong:
        self.seen.append(msg.n)
        return Pong(msg.n, self.subject)

    @on(Slow)
    async def slow(self, msg: Slow) -> str:
        await asyncio.sleep(msg.seconds)
        return "finally"

    @on(Boom)
    async def boom(self, msg: Boom) -> None:
        raise ValueError(msg.text)

    async def on_stop(self) -> None:
        self.stopped = True


class Explorer(AgentActor):
    def __init__(self, log: list[tuple[str, str, str]]) -> None:
        self.log = log

    @subscribe("tot.*.exploration")
    async def explored(self, msg: Explore) -> None:
        self.log.append((self.subject, self.current_subject, msg.idea))


class Worker(AgentActor):
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log

    @subscribe("jobs.>", queue="workers")
    async def work(self, msg: Ping) -> None:
        self.log.append((self.subject, msg.n))


def actor_of(node, subject):
    return node._local[subject].actor


async def test_tell_crosses_the_transport(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        await a.tell("core.echo", Ping(1))
        a.tell_nowait("core.echo", Ping(2))
        await a.ref("core.echo").tell(Ping(3))
        await _until(lambda: actor_of(b, "core.echo").seen == [1, 2, 3])


async def test_ask_gets_the_reply(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        reply = await a.ask("core.echo", Ping(7), timeout=5)
        assert reply == Pong(7, "core.echo")
        assert await a.ref("core.echo").ask(Ping(8), timeout=5) == Pong(8, "core.echo")


async def test_ask_timeout_raises_and_late_reply_is_counted(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        started = time.monotonic()
        with pytest.raises(AskTimeout) as info:
            await a.ask("core.echo", Slow(0.3), timeout=0.05)
        assert time.monotonic() - started < 0.25
        assert info.value.subject == "core.echo"
        await _until(lambda: a.stats.late_replies == 1)


async def test_no_responders(case: TransportCase) -> None:
    async with case.pair() as (a, _b):
        started = time.monotonic()
        expected = NoResponders if a.transport.capabilities.knows_interest else AskTimeout
        with pytest.raises(expected):
            await a.ask("nobody.home", Ping(1), timeout=1.0)
        if expected is NoResponders:
            assert time.monotonic() - started < 0.5, "no-responders must not wait for the timeout"
            assert any(d.reason == "no responders" for d, _ in a.recent_dead_letters)


async def test_handler_exception_reaches_asker_as_remote_error(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        with pytest.raises(RemoteError) as info:
            await a.ask("core.echo", Boom("bad claim"), timeout=5)
        assert info.value.remote_type == "ValueError"
        assert info.value.remote_message == "bad claim"
        # the actor goes on serving
        assert await a.ask("core.echo", Ping(1), timeout=5) == Pong(1, "core.echo")
        assert b.stats.failures == 1


async def test_publish_reaches_wildcard_subscribers_only(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log: list[tuple[str, str, str]] = []
        await b.spawn(Explorer, "tot.watcher", log)
        seen_by_a: list[tuple[str, object]] = []

        async def watch(msg: object, subject: str) -> None:
            seen_by_a.append((subject, msg))

        await a.subscribe("tot.>", watch)
        await a.publish("tot.branch3.exploration", Explore("3", "mesh"))
        await a.publish("tot.branch3.other", Explore("3", "ignored by explorer"))
        await a.publish("elsewhere.branch3.exploration", Explore("x", "nobody"))
        await _until(lambda: len(log) == 1 and len(seen_by_a) == 2)
        assert log == [("tot.watcher", "tot.branch3.exploration", "mesh")]
        assert [s for s, _ in seen_by_a] == ["tot.branch3.exploration", "tot.branch3.other"]


async def test_queue_group_shares_the_work(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log: list[tuple[str, int]] = []
        await a.spawn(Worker, "pool.w1", log)
        await b.spawn(Worker, "pool.w2", log)
        await b.spawn(Worker, "pool.w3", log)
        for n in range(30):
            await a.publish(f"jobs.{n % 3}", Ping(n))
        await _until(lambda: len(log) == 30)
        await asyncio.sleep(0.05)
        assert sorted(n for _, n in log) == list(range(30)), "each job exactly once"
        workers = {w for w, _ in log}
        assert len(workers) >= 2, f"work was not shared: {workers}"


async def test_per_sender_fifo(case: TransportCase) -> None:
    if not case_caps(case).ordered:
        pytest.skip("transport does not promise order")
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo", capacity=5000)
        for n in range(500):
            if n % 3 == 0:
                a.tell_nowait("core.echo", Ping(n))
            else:
                await a.tell("core.echo", Ping(n))
        await _until(lambda: len(actor_of(b, "core.echo").seen) == 500)
        assert actor_of(b, "core.echo").seen == list(range(500))


async def test_close_semantics(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        echo = actor_of(b, "core.echo")
        pending = asyncio.ensure_future(a.ask("core.echo", Slow(10), timeout=20))
        await asyncio.sleep(0.05)
        await a.close()
        await a.close()  # idempotent
        with pytest.raises(TransportClosed):
            await pending
        with pytest.raises(TransportClosed):
            await a.tell("core.echo", Ping(1))
        with pytest.raises(TransportClosed):
            await a.publish("tot.x", Ping(1))
        b.shutdown_timeout = 0.2
    assert echo.stopped, "on_stop runs when the node closes"


async def test_capabilities_are_truthful(case: TransportCase) -> None:
    caps = case_caps(case)
    assert caps.delivery in ("at-most-once", "at-least-once")
    async with case.pair() as (a, b):
        received: list[object] = []

        async def keep(msg: object, subject: str) -> None:
            received.append(msg)

        await b.subscribe("caps.check", keep)
        sent = Explore("b", "by reference?")
        await a.publish("caps.check", sent)
        await _until(lambda: len(received) == 1)
        assert received[0] == sent
        assert (received[0] is sent) == caps.by_reference


async def test_spi_publish_subscribe_queue_and_unsubscribe(case: TransportCase) -> None:
    async with case.transports() as (first, second):
        got: list[tuple[str, str]] = []

        def handler(tag: str):
            async def handle(subject, frames, reply_to) -> None:
                got.append((tag, subject))

            return handle

        plain = await second.subscribe("spi.*", handler("plain"))
        await second.subscribe("spi.>", handler("q1"), queue="q")
        await first.subscribe("spi.>", handler("q2"), queue="q")
        await first.subscribe("spi.a", handler("echo"))  # same transport as publisher
        payload = [b"not an envelope, the SPI carries any frames"]
        await first.publish("spi.a", payload)
        await first.publish("spi.a", payload)
        await _until(lambda: len(got) == 6)
        assert [t for t, _ in got].count("plain") == 2
        assert [t for t, _ in got].count("echo") == 2
        assert sorted(t for t, _ in got if t.startswith("q")) == ["q1", "q2"]
        await plain.unsubscribe()
        await plain.unsubscribe()  # idempotent
        got.clear()
        await first.publish("spi.b", payload)
        await _until(lambda: len(got) == 1)
        assert got[0][0] in ("q1", "q2")
    with pytest.raises(TransportClosed):
        await first.publish("spi.a", payload)
    with pytest.raises(TransportClosed):
        await first.subscribe("spi.a", handler("late"))


def case_caps(case: TransportCase):
    from synaptic_mesh.runtime.transport_lookup import transport_class

    return transport_class(case.url()).capabilities


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)
