"""Every transport on uvloop: the CLI runs nodes on it whenever it is installed.

uvloop's transports implement ``asyncio.Transport`` without subclassing it and
its sockets are wrappers, so a transport that checks types or pokes at the
socket can work on asyncio's loop and fail on uvloop. Node ``a`` runs here on
uvloop; its peer ``b`` runs as in the conformance suite (often another process).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conformance.actors import Echo, Ping, Pong
from tests.conformance.test_messaging import seen_by
from tests.conformance.transports import CASES, TransportCase

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the 'fast' extra)")


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request: pytest.FixtureRequest) -> TransportCase:
    return request.param


async def test_the_loop_is_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_ask_tell_and_publish_cross_the_transport(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await b.spawn(Echo, "core.echo")
        assert await a.ask("core.echo", Ping(1), timeout=5) == Pong(1, "core.echo")
        for n in range(2, 50):
            await a.tell("core.echo", Ping(n))
        assert await seen_by(a, "core.echo", 49) == list(range(1, 50))

        got: asyncio.Queue[object] = asyncio.Queue()

        async def heard(subject: str, frames: object, reply_to: object) -> None:
            got.put_nowait(subject)

        sub = await a.transport.subscribe("uv.topic", heard)
        try:
            await a.wait_idle()
            await a.publish("uv.topic", Ping(0))
            assert await asyncio.wait_for(got.get(), 5) == "uv.topic"
        finally:
            await sub.unsubscribe()


async def test_two_raw_transports_reach_each_other(case: TransportCase) -> None:
    async with case.transports() as (first, second):
        got: asyncio.Queue[object] = asyncio.Queue()

        async def heard(subject: str, frames: object, reply_to: object) -> None:
            got.put_nowait((subject, [bytes(f) for f in frames]))

        sub = await second.subscribe("uv.raw", heard)
        await first.settled()
        await second.settled()
        for _ in range(100):
            await first.publish("uv.raw", [b"hello"])
            try:
                assert await asyncio.wait_for(got.get(), 0.05) == ("uv.raw", [b"hello"])
                break
            except TimeoutError:
                continue  # interest may still be on its way to ``first``
        else:
            raise AssertionError("nothing arrived in 5 s")
        await sub.unsubscribe()
