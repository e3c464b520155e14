"""NNG native pipeline: items on a Push0 per destination node, a Pull0 per node.

A pipeline's gate and workers live on one node, so the items that cross
nodes are a remote producer's: a ``Feeder`` on node ``a`` streams to the
first stage of a pipeline on node ``b``, through ``a``'s Push0 to ``b``.
Two real nodes in this process (``two_nodes`` of ``nng_native_util``) so the
tests can read the native counters.
"""

from __future__ import annotations

from typing import Any

import pynng
import pytest

from synaptic_mesh import Feeder, Pipeline, Stage
from synaptic_mesh.patterns.lowering import is_generic
from synaptic_mesh.transports.nng import NngTcpTransport
from tests.transports.nng_native_util import (
    SCHEMES,
    Chat,
    assert_garbage_dead_lettered,
    assert_no_descriptor_leak,
    two_nodes,
)
from tests.transports.util import until

PIPELINE = "native=survey,bus,pair,pipeline"


def test_pipeline_can_be_chosen() -> None:
    chosen = NngTcpTransport(f"nng+tcp://127.0.0.1:0?{PIPELINE}").capabilities.native
    assert "pipeline" in chosen


async def feed_remotely(a: Any, b: Any, keyed: bool, count: int, workers: int = 3) -> list[Chat]:
    """Run pipeline ``p`` on ``b``, stream ``count`` items into it from ``a``; what it did."""
    done: list[Chat] = []

    async def record(item: Chat) -> None:
        done.append(item)

    key = (lambda c: c.text) if keyed else None
    await b.start_supervisor(Pipeline("p", [Stage("work", record)], workers=workers, key=key))
    await until(lambda: bool(a.transport.peers_serving("p.feed")), what="the pipeline's gate")
    async with Feeder(a, "p", window=16) as feeder:
        for n in range(count):
            await feeder.put(Chat(n, f"k{n % 5}"))
    assert feeder.leased and feeder.sent == count
    await until(lambda: len(done) == count, what="every item processed")
    return done


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_keyed_items_go_native_once_each_in_order_per_key(scheme: str) -> None:
    async with two_nodes(scheme, PIPELINE) as (a, b):
        assert not is_generic(a, "pipeline")
        done = await feed_remotely(a, b, keyed=True, count=300)
        assert sorted(c.n for c in done) == list(range(300)), "each item exactly once"
        for key in {c.text for c in done}:
            ns = [c.n for c in done if c.text == key]
            assert ns == sorted(ns), f"items of {key} in feed order"
        stats_a, stats_b = a.transport.stats, b.transport.stats  # type: ignore[attr-defined]
        assert (stats_a.sent, stats_a.fallbacks) == (300, 0), stats_a
        assert stats_b.received == 300, stats_b


async def test_a_queue_group_stage_shares_native_items() -> None:
    async with two_nodes("nng+ipc", PIPELINE) as (a, b):
        done = await feed_remotely(a, b, keyed=False, count=100, workers=2)
        assert sorted(c.n for c in done) == list(range(100))
        assert a.transport.stats.sent == 100  # type: ignore[attr-defined]


async def test_a_peer_without_a_push0_pipe_gets_items_on_the_generic_path() -> None:
    async with two_nodes("nng+tcp", PIPELINE, b_query="native=") as (a, b):
        assert is_generic(b, "pipeline")
        done = await feed_remotely(a, b, keyed=True, count=20)
        assert sorted(c.n for c in done) == list(range(20))
        stats = a.transport.stats  # type: ignore[attr-defined]
        assert (stats.sent, stats.fallbacks) == (0, 20), stats


async def test_garbage_on_the_pull_endpoint_is_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with two_nodes("nng+tcp", PIPELINE) as (a, b):
        await assert_garbage_dead_lettered(b, "pull", pynng.Push0, "pipeline item", caplog)
        done = await feed_remotely(a, b, keyed=True, count=10)  # the node goes on
        assert sorted(c.n for c in done) == list(range(10))


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_pipeline_sockets_leak_no_file_descriptor(scheme: str, no_leaks: Any) -> None:
    async def cycle() -> None:
        async with two_nodes(scheme, PIPELINE) as (a, b):
            await feed_remotely(a, b, keyed=True, count=10)
            assert a.transport.stats.sent == 10  # type: ignore[attr-defined]

    await assert_no_descriptor_leak(cycle)
    await no_leaks()
