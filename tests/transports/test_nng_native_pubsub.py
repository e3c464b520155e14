"""NNG native pub-sub (opt-in, ``native=...,pub-sub``): Pub0 to every peer's Sub0.

Two real nodes in this process (``two_nodes`` of ``nng_native_util``) so the
tests can read the native counters. What this lowering gives up (order
between a native publish and the publisher's link traffic) is stated in
:mod:`synaptic_mesh.transports.nng_pubsub`; these tests check what it keeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pynng
import pytest

from synaptic_mesh.patterns.lowering import is_generic
from synaptic_mesh.patterns.pubsub import publish
from synaptic_mesh.transports.base import Handler
from synaptic_mesh.transports.nng import NngTcpTransport
from synaptic_mesh.transports.nng_native import DEFAULT_NATIVE
from tests.transports.nng_native_util import (
    SCHEMES,
    Chat,
    assert_flood_losses_counted,
    assert_garbage_dead_lettered,
    assert_no_descriptor_leak,
    two_nodes,
)
from tests.transports.util import until

PUBSUB = "native=survey,bus,pair,pub-sub"


def test_pub_sub_is_opt_in() -> None:
    assert "pub-sub" not in DEFAULT_NATIVE
    assert "pub-sub" not in NngTcpTransport("nng+tcp://127.0.0.1:0").capabilities.native
    chosen = NngTcpTransport(f"nng+tcp://127.0.0.1:0?{PUBSUB}").capabilities.native
    assert chosen == {"survey", "bus", "pair", "pub-sub"}
    assert NngTcpTransport(f"nng+tcp://127.0.0.1:0?role=root&{PUBSUB}").capabilities.native == set()


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_publishes_go_native_in_order_to_every_subscribing_node(scheme: str) -> None:
    async with two_nodes(scheme, PUBSUB) as (a, b):
        assert not is_generic(a, "pub-sub")
        heard: dict[str, list[int]] = {"a": [], "b1": [], "b2": []}

        def keep(name: str) -> Any:
            async def got(msg: Chat, subject: str) -> None:
                heard[name].append(msg.n)

            return got

        await a.subscribe("news.*", keep("a"))
        await b.subscribe("news.>", keep("b1"))
        await b.subscribe("news.sports", keep("b2"))
        both = {a.transport.id, b.transport.id}  # type: ignore[attr-defined]
        await until(lambda: a.transport.interested_nodes("news.sports") == both)  # type: ignore[attr-defined]
        for n in range(300):
            await publish(a, "news.sports", Chat(n))
        await publish(a, "weather.today", Chat(-1))  # nobody subscribes: dropped, never sent
        await until(lambda: all(len(h) == 300 for h in heard.values()), what="every subscriber")
        assert all(h == list(range(300)) for h in heard.values()), "publish order per topic"
        stats_a, stats_b = a.transport.stats, b.transport.stats  # type: ignore[attr-defined]
        assert (stats_a.sent, stats_a.fallbacks) == (300, 0), stats_a
        assert (stats_b.received, stats_b.gaps) == (300, 0), stats_b


async def test_a_queue_group_gets_each_message_once_across_nodes() -> None:
    async with two_nodes("nng+tcp", PUBSUB) as (a, b):
        got: list[tuple[str, int]] = []

        def member(name: str) -> Any:
            async def take(msg: Chat, subject: str) -> None:
                got.append((name, msg.n))

            return take

        await a.subscribe("jobs.>", member("a"), queue="workers")
        await b.subscribe("jobs.>", member("b1"), queue="workers")
        await b.subscribe("jobs.>", member("b2"), queue="workers")
        await until(lambda: len(a.transport.interested_nodes("jobs.x")) == 2)  # type: ignore[attr-defined]
        for n in range(40):
            await publish(a, "jobs.x", Chat(n))
        await until(lambda: len(got) == 40, what="every job once")
        await asyncio.sleep(0.1)
        assert sorted(n for _, n in got) == list(range(40)), "each job exactly once"
        assert {name for name, _ in got} == {"a", "b1", "b2"}, "every member gets a turn"


async def test_a_peer_without_a_pub0_pipe_gets_the_publish_on_the_generic_path() -> None:
    async with two_nodes("nng+tcp", PUBSUB) as (a, b):
        heard: list[int] = []

        async def got(msg: Chat, subject: str) -> None:
            heard.append(msg.n)

        await b.subscribe("news.x", got)
        await until(lambda: b.transport.id in a.transport.interested_nodes("news.x"))  # type: ignore[attr-defined]
        lowering = a.transport.lowerings["pub-sub"]  # type: ignore[attr-defined]
        lowering.publisher.undial(b.transport.id)
        await publish(a, "news.x", Chat(7))
        await until(lambda: heard == [7], what="the generic publish")
        assert a.transport.stats.fallbacks == 1 and a.transport.stats.sent == 0  # type: ignore[attr-defined]


async def test_losses_at_a_full_queue_are_counted_as_gaps() -> None:
    """Pub0 drops silently at a full pipe queue: the sequence numbers count every loss."""
    async with two_nodes("nng+tcp", PUBSUB) as (a, b):

        async def attach(handler: Handler) -> None:
            await b.transport.subscribe("flood", handler)
            await until(lambda: b.transport.id in a.transport.interested_nodes("flood"))  # type: ignore[attr-defined]

        await assert_flood_losses_counted(b, attach, lambda chat: publish(a, "flood", chat))


async def test_garbage_on_the_sub_endpoint_is_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with two_nodes("nng+tcp", PUBSUB) as (a, b):
        await assert_garbage_dead_lettered(
            b, "sub", pynng.Pub0, "native publish", caplog, settle=0.2
        )
        heard: list[int] = []

        async def got(msg: Chat, subject: str) -> None:
            heard.append(msg.n)

        await b.subscribe("still.here", got)  # the node goes on
        await until(lambda: b.transport.id in a.transport.interested_nodes("still.here"))  # type: ignore[attr-defined]
        await publish(a, "still.here", Chat(1))
        await until(lambda: heard == [1], what="a publish after the garbage")


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_pub_sub_sockets_leak_no_file_descriptor(scheme: str, no_leaks: Any) -> None:
    async def cycle() -> None:
        async with two_nodes(scheme, PUBSUB) as (a, b):
            heard: list[int] = []

            async def got(msg: Chat, subject: str) -> None:
                heard.append(msg.n)

            await b.subscribe("fd.x", got)
            await until(lambda: b.transport.id in a.transport.interested_nodes("fd.x"))  # type: ignore[attr-defined]
            await publish(a, "fd.x", Chat(1))
            await until(lambda: heard == [1], what="native publish")

    await assert_no_descriptor_leak(cycle)
    await no_leaks()
