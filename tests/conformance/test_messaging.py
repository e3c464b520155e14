"""The transport conformance suite: the same promises on every transport.

Each test runs on every case in ``transports.CASES``: the actor lives on the
peer ``b`` and the test drives node ``a``, so every message crosses the
transport (a node's local fast path is tested in ``tests/actors``). What the
peer's actors see comes back by messages to a ``Probe`` on ``a``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from synaptic_mesh import AskTimeout, Node, NoResponders, RemoteError, TransportClosed
from tests.conformance.actors import (
    Boom,
    Echo,
    Explore,
    Explorer,
    Heard,
    Ping,
    Pong,
    Probe,
    Report,
    Seen,
    Slow,
    Worker,
)
from tests.conformance.transports import TransportCase


async def probe_on(node: Node, subject: str = "probe.log") -> list[Heard]:
    log: list[Heard] = []
    await node.spawn(Probe, subject, log)
    return log


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def seen_by(node: Node, subject: str, count: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = await node.ask(subject, Report(), timeout=timeout)
        assert isinstance(seen, Seen)
        if len(seen.numbers) >= count or time.monotonic() > deadline:
            return seen.numbers
        await asyncio.sleep(0.005)


async def test_tell_crosses_the_transport(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        await a.tell("core.echo", Ping(1))
        a.tell_nowait("core.echo", Ping(2))
        await a.ref("core.echo").tell(Ping(3))
        assert await seen_by(a, "core.echo", 3) == [1, 2, 3]


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
        await until(lambda: a.stats.late_replies == 1)


async def test_no_responders(case: TransportCase) -> None:
    async with case.pair() as (a, _b):
        started = time.monotonic()
        expected = NoResponders if case.capabilities.knows_interest else AskTimeout
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
        assert await a.ask("core.echo", Ping(1), timeout=5) == Pong(1, "core.echo")
        assert (await b.stats())["failures"] == 1


async def test_publish_reaches_wildcard_subscribers_only(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(Explorer, "tot.watcher", "probe.log")
        seen_by_a: list[tuple[str, object]] = []

        async def watch(msg: object, subject: str) -> None:
            seen_by_a.append((subject, msg))

        await a.subscribe("tot.>", watch)
        await a.publish("tot.branch3.exploration", Explore("3", "mesh"))
        await a.publish("tot.branch3.other", Explore("3", "ignored by explorer"))
        await a.publish("elsewhere.branch3.exploration", Explore("x", "nobody"))
        await until(lambda: len(log) == 1 and len(seen_by_a) == 2)
        await asyncio.sleep(0.05)
        assert log == [Heard("tot.watcher", "tot.branch3.exploration", "mesh")]
        assert [s for s, _ in seen_by_a] == ["tot.branch3.exploration", "tot.branch3.other"]


async def test_queue_group_shares_the_work(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await a.spawn(Worker, "pool.w1", "probe.log")
        await b.spawn(Worker, "pool.w2", "probe.log")
        await b.spawn(Worker, "pool.w3", "probe.log")
        for n in range(30):
            await a.publish(f"jobs.{n % 3}", Ping(n))
        await until(lambda: len(log) == 30)
        await asyncio.sleep(0.05)
        assert sorted(int(h.text) for h in log) == list(range(30)), "each job exactly once"
        workers = {h.actor for h in log}
        assert len(workers) >= 2, f"work was not shared: {workers}"


async def test_per_sender_fifo(case: TransportCase) -> None:
    if not case.capabilities.ordered:
        pytest.skip("transport does not promise order")
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        for n in range(500):
            if n % 3 == 0:
                while True:
                    try:
                        a.tell_nowait("core.echo", Ping(n))
                        break
                    except Exception:  # a full outbox pushes back; retry
                        await asyncio.sleep(0.001)
            else:
                await a.tell("core.echo", Ping(n))
        assert await seen_by(a, "core.echo", 500) == list(range(500))


async def test_close_semantics(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(Echo, "core.echo", "probe.log")
        in_flight = asyncio.ensure_future(a.ask("core.echo", Slow(0.2), timeout=5))
        await asyncio.sleep(0.05)
        await b.close()  # graceful: the message in hand is finished, then on_stop
        assert await in_flight == "finally"
        await until(lambda: Heard("core.echo", "core.echo", "stopped") in log)
        stranded = asyncio.ensure_future(a.ask("core.gone", Ping(1), timeout=5))
        await asyncio.sleep(0.01)
        await a.close()
        await a.close()  # idempotent
        with pytest.raises((TransportClosed, NoResponders)):
            await stranded
        with pytest.raises(TransportClosed):
            await a.tell("core.echo", Ping(1))
        with pytest.raises(TransportClosed):
            a.tell_nowait("core.echo", Ping(1))
        with pytest.raises(TransportClosed):
            await a.publish("tot.x", Ping(1))
        with pytest.raises(TransportClosed):
            await a.ask("core.echo", Ping(1), timeout=1)


async def test_capabilities_are_truthful(case: TransportCase) -> None:
    caps = case.capabilities
    assert caps.delivery in ("at-most-once", "at-least-once")
    assert caps.max_message > 0
    async with case.pair() as (a, _b):
        received: list[object] = []

        async def keep(msg: object, subject: str) -> None:
            received.append(msg)

        await a.subscribe("caps.check", keep)
        sent = Explore("b", "by reference?")
        await a.publish("caps.check", sent)
        await until(lambda: len(received) == 1)
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
        await asyncio.sleep(0.05)  # let interest reach the other side
        payload = [b"not an envelope: the SPI carries any frames"]
        await first.publish("spi.a", payload)
        await first.publish("spi.a", payload)
        await until(lambda: len(got) == 6)
        await asyncio.sleep(0.05)  # a duplicate would have arrived by now
        assert len(got) == 6
        assert [t for t, _ in got].count("plain") == 2
        assert [t for t, _ in got].count("echo") == 2
        # each message reached exactly one member of the group; which one is the
        # transport's choice (NATS picks at random), fairness is tested with more jobs
        assert len([t for t, _ in got if t.startswith("q")]) == 2
        await plain.unsubscribe()
        await plain.unsubscribe()  # idempotent
        await asyncio.sleep(0.05)
        got.clear()
        await first.publish("spi.b", payload)
        await until(lambda: len(got) == 1)
        await asyncio.sleep(0.05)
        assert len(got) == 1 and got[0][0] in ("q1", "q2")
    with pytest.raises(TransportClosed):
        await first.publish("spi.a", payload)
    with pytest.raises(TransportClosed):
        await first.subscribe("spi.a", handler("late"))
