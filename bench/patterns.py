"""The six patterns on ``inproc://``: latency, throughput, and the cost of each generic lowering.

For every pattern the bench runs the pattern's API and a *bare twin*: the same
messages moved with plain ``node.publish`` into the same kind of receiver (an
actor's ``@subscribe`` handler, or a raw ``node.subscribe`` callback where the
pattern's receiver is not a mailbox). The ratio of the two, measured in the
same run and interleaved round by round, is the overhead of the generic
lowering; the issue's target is at most 20% over the bare publish path.

=============  ==============================  ===========================================
pattern        operation                       bare twin
=============  ==============================  ===========================================
pub-sub        ``actor.publish`` path          ``node.publish`` to the same subscriber
bus            ``member.send`` to 1 member     ``node.publish`` to 1 subscriber
request-reply  ask across two nodes (inbox)    publish to an actor that publishes back to a
                                               raw subscription
pipeline       item through 1 stage (credit)   ``node.publish`` to a queue-group subscriber
survey         50 respondents, quorum 50       publish to 50 subscribers, each publishes an
                                               answer to a raw subscription counting 50
hotline        send + receive round trip       as request-reply's twin
=============  ==============================  ===========================================

The overhead is the median over rounds of the paired ratio (twin's rate over
the pattern's, minus 1), each round running the pattern and its twin back to
back, so load from other processes hits both alike; the per-round range is
shown next to it. ``  its hook`` isolates request-reply's lowering hook (the
pattern's ``ask`` against ``node.ask``, both through the inbox): the generic
request-reply lowering *is* the node's inbox, whose own cost the row above
compares with two bare publishes.

Latency: operations one at a time, each timed (p50, p99). Throughput:
pub-sub, bus and pipeline keep many messages in flight (a burst, timed to the
last delivery); request-reply, survey and hotline are closed loops (one
operation at a time), so their rate is ``1 / mean latency``.

Run ``python -m synaptic_mesh.bench.patterns --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on, subscribe
from synaptic_mesh.bench._stats import (
    fmt_pct,
    fmt_rate,
    fmt_us,
    median,
    percentile,
    render_table,
    spread,
)
from synaptic_mesh.patterns import pubsub, request_reply
from synaptic_mesh.patterns.hotline import Hotline, open_hotline
from synaptic_mesh.patterns.pipeline import Pipeline, Stage, runtime_of
from synaptic_mesh.patterns.survey import respond, survey
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node

TARGET = 0.20
RESPONDENTS = 50
_hubs = itertools.count(1)


@message(name="bench.patterns.Ping")
class Ping:
    n: int


class Signal:
    """Counts deliveries and wakes the bench at the ``target``-th one."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.future: asyncio.Future[None] | None = None

    def expect(self, more: int) -> asyncio.Future[None]:
        self.target = self.count + more
        self.future = asyncio.get_running_loop().create_future()
        return self.future

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target and self.future is not None and not self.future.done():
            self.future.set_result(None)


class Sink(AgentActor):
    capacity = 100_000

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    @subscribe("bench.topic")
    async def got(self, msg: Ping) -> None:
        self.signal.hit()

    async def heard(self, msg: Ping) -> None:
        self.signal.hit()


class Member(AgentActor):
    capacity = 100_000

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    async def on_start(self) -> None:
        self.bus = await self.join_bus("bench", self.heard)

    async def heard(self, msg: Ping) -> None:
        self.signal.hit()


class QueueSink(AgentActor):
    """The pipeline's twin: a queue-group subscriber, as a stage worker is."""

    capacity = 100_000

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    @subscribe("bench.queue", queue="bench.queue")
    async def got(self, msg: Ping) -> None:
        self.signal.hit()


class Echo(AgentActor):
    @on(Ping)
    async def echo(self, msg: Ping) -> Ping:
        return msg

    @subscribe("bench.req")
    async def bare(self, msg: Ping) -> None:
        await self.node.publish("bench.rep", msg)

    async def on_hotline(self, line: Hotline) -> None:
        async for msg in line:
            await line.send(msg)


class Voter(AgentActor):
    @respond("bench.council")
    async def vote(self, msg: Ping) -> int:
        return msg.n

    @subscribe("bench.bare")
    async def bare(self, msg: Ping) -> None:
        await self.node.publish("bench.answers", msg.n)


class Dialer(AgentActor):
    pass


# -- the trials: each returns (latencies in ns, ops/s) ------------------------------------

Trial = Callable[[int], Awaitable[tuple[list[int], float]]]


def _url() -> str:
    return f"inproc://bench-patterns-{next(_hubs)}"


async def _timed(n: int, op: Callable[[int], Awaitable[Any]]) -> list[int]:
    latencies = []
    for i in range(n):
        started = time.perf_counter_ns()
        await op(i)
        latencies.append(time.perf_counter_ns() - started)
    return latencies


def _closed_loop(latencies: list[int]) -> float:
    return 1e9 / (sum(latencies) / len(latencies))


async def _burst(n: int, signal: Signal, send: Callable[[int], Awaitable[Any]]) -> float:
    done = signal.expect(n)
    started = time.perf_counter()
    for i in range(n):
        await send(i)
    await done
    return n / (time.perf_counter() - started)


async def _fanout(node: Node, signal: Signal, send: Callable[[Ping], Awaitable[Any]], n: int):
    async def one(i: int) -> None:
        done = signal.expect(1)
        await send(Ping(i))
        await done

    latencies = await _timed(n, one)
    return latencies, await _burst(n * 5, signal, lambda i: send(Ping(i)))


async def publish_bare(n: int) -> tuple[list[int], float]:
    async with Node(_url()) as node:
        signal = Signal()
        await node.spawn(Sink, "bench.sink", signal)
        return await _fanout(node, signal, lambda m: node.publish("bench.topic", m), n)


async def queue_bare(n: int) -> tuple[list[int], float]:
    async with Node(_url()) as node:
        signal = Signal()
        await node.spawn(QueueSink, "bench.queue.sink", signal)
        return await _fanout(node, signal, lambda m: node.publish("bench.queue", m), n)


async def publish_pattern(n: int) -> tuple[list[int], float]:
    async with Node(_url()) as node:
        signal = Signal()
        await node.spawn(Sink, "bench.sink", signal)
        return await _fanout(node, signal, lambda m: pubsub.publish(node, "bench.topic", m), n)


async def bus_pattern(n: int) -> tuple[list[int], float]:
    async with Node(_url()) as node:
        signal = Signal()
        await node.spawn(Member, "bench.m1", Signal())
        await node.spawn(Member, "bench.m2", signal)
        member = node._local["bench.m1"].actor.bus  # type: ignore[union-attr]
        return await _fanout(node, signal, member.send, n)


async def ask_pattern(n: int) -> tuple[list[int], float]:
    url = _url()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        await b.spawn(Echo, "bench.echo")
        latencies = await _timed(
            n, lambda i: request_reply.ask(a, "bench.echo", Ping(i), timeout=10)
        )
        return latencies, _closed_loop(latencies)


async def ask_node(n: int) -> tuple[list[int], float]:
    url = _url()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        await b.spawn(Echo, "bench.echo")
        latencies = await _timed(n, lambda i: a.ask("bench.echo", Ping(i), timeout=10))
        return latencies, _closed_loop(latencies)


async def _round_trip_bare(n: int) -> tuple[list[int], float]:
    url = _url()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        await b.spawn(Echo, "bench.echo")
        signal = Signal()

        async def back(msg: Any, subject: str) -> None:
            signal.hit()

        await a.subscribe("bench.rep", back)

        async def one(i: int) -> None:
            done = signal.expect(1)
            await a.publish("bench.req", Ping(i))
            await done

        latencies = await _timed(n, one)
        return latencies, _closed_loop(latencies)


async def pipeline_pattern(n: int) -> tuple[list[int], float]:
    signal = Signal()

    async def work(item: Ping) -> None:
        signal.hit()

    async with Node(_url()) as node:
        await node.start_supervisor(Pipeline("bench", [Stage("s", work)], prefetch=64))
        runtime = runtime_of(node, "bench")
        assert runtime is not None
        return await _fanout(node, signal, lambda m: runtime.put(m, None), n)


async def survey_pattern(n: int) -> tuple[list[int], float]:
    async with Node(_url()) as node:
        for i in range(RESPONDENTS):
            await node.spawn(Voter, f"bench.voter{i}")

        async def one(i: int) -> None:
            result = await survey(node, "bench.council", Ping(i), timeout=10, quorum=RESPONDENTS)
            assert len(result) == RESPONDENTS

        latencies = await _timed(n, one)
        return latencies, _closed_loop(latencies)


async def survey_bare(n: int) -> tuple[list[int], float]:
    async with Node(_url()) as node:
        for i in range(RESPONDENTS):
            await node.spawn(Voter, f"bench.voter{i}")
        signal = Signal()

        async def answer(msg: Any, subject: str) -> None:
            signal.hit()

        await node.subscribe("bench.answers", answer)

        async def one(i: int) -> None:
            done = signal.expect(RESPONDENTS)
            await node.publish("bench.bare", Ping(i))
            await done

        latencies = await _timed(n, one)
        return latencies, _closed_loop(latencies)


async def hotline_pattern(n: int) -> tuple[list[int], float]:
    url = _url()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        await b.spawn(Echo, "bench.echo")
        await a.spawn(Dialer, "bench.dialer")
        dialer = a._local["bench.dialer"].actor
        assert dialer is not None
        async with open_hotline(dialer, "bench.echo", heartbeat=None) as line:

            async def one(i: int) -> None:
                await line.send(Ping(i))
                await line.receive()

            latencies = await _timed(n, one)
        return latencies, _closed_loop(latencies)


# -- running and reporting --------------------------------------------------------------


@dataclass
class Row:
    pattern: str
    operation: str
    trial: Trial
    bare: Trial | None
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    bare_p50: list[float] = field(default_factory=list)
    bare_rate: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """Per round: the twin's rate over the pattern's, minus 1 (paired: drift cancels)."""
        return [b / p - 1 for p, b in zip(self.rate, self.bare_rate, strict=True)]

    def overhead(self) -> float:
        """Cost over the bare twin: the median of the paired per-round ratios."""
        ratios = self.ratios()
        return median(ratios) if ratios else math.nan


ROWS = [
    Row("pub-sub", "publish -> subscriber", publish_pattern, publish_bare),
    Row("bus", "member.send -> 1 member", bus_pattern, publish_bare),
    Row("request-reply", "ask across 2 nodes", ask_pattern, _round_trip_bare),
    Row("  its hook", "pattern ask vs node.ask", ask_pattern, ask_node),
    Row("pipeline", "item through 1 stage", pipeline_pattern, queue_bare),
    Row("survey", f"{RESPONDENTS} respondents, quorum", survey_pattern, survey_bare),
    Row("hotline", "send + receive", hotline_pattern, _round_trip_bare),
]


def _stats(latencies: list[int]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return percentile(ordered, 50) / 1000, percentile(ordered, 99) / 1000


def run_round(rows: list[Row], sizes: dict[str, int], *, record: bool) -> None:
    for row in rows:
        n = sizes[row.pattern]
        for kind, trial in (("pattern", row.trial), ("bare", row.bare)):
            if trial is None:
                continue
            gc.collect()
            latencies, rate = asyncio.run(trial(n))
            p50, p99 = _stats(latencies)
            if record and kind == "pattern":
                row.p50.append(p50)
                row.p99.append(p99)
                row.rate.append(rate)
            elif record:
                row.bare_p50.append(p50)
                row.bare_rate.append(rate)
            print(
                f"  {row.pattern:<14} {kind:<8} p50 {fmt_us(p50):>7} us  p99 {fmt_us(p99):>7} us"
                f"  {fmt_rate(rate):>9} ops/s",
                flush=True,
            )


def report(rows: list[Row]) -> str:
    table = []
    for row in rows:
        overhead = row.overhead()
        verdict = "-" if math.isnan(overhead) else ("PASS" if overhead <= TARGET else "MISS")
        table.append(
            [
                row.pattern,
                row.operation,
                fmt_us(median(row.p50)),
                fmt_us(median(row.p99)),
                fmt_rate(median(row.rate)),
                fmt_pct(spread(row.rate)),
                fmt_us(median(row.bare_p50)),
                fmt_rate(median(row.bare_rate)),
                "-" if math.isnan(overhead) else f"{overhead * 100:+.0f}%",
                _range(row.ratios()),
                verdict,
            ]
        )
    return render_table(
        [
            "pattern",
            "operation",
            "p50 us",
            "p99 us",
            "ops/s",
            "spread",
            "bare p50 us",
            "bare ops/s",
            "overhead",
            "per round",
            f"<= {TARGET:.0%}",
        ],
        table,
        [False, False, True, True, True, True, True, True, True, True, False],
    )


def _range(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    return f"{min(ratios) * 100:+.0f}..{max(ratios) * 100:+.0f}%"


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print the table; returns 0 (1 with ``--strict`` on a miss)."""
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.patterns",
        description="Latency, throughput and generic-lowering overhead of the six patterns "
        "on inproc://.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1/10 sizes, 1 round")
    parser.add_argument("--repeats", type=int, help="measured rounds (default 5, quick 1)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    repeats = args.repeats or (1 if args.quick else 5)
    sizes = {
        "pub-sub": 20_000 // scale,
        "bus": 20_000 // scale,
        "request-reply": 5_000 // scale,
        "  its hook": 5_000 // scale,
        "pipeline": 10_000 // scale,
        "survey": 500 // scale,
        "hotline": 5_000 // scale,
    }
    print(
        f"synaptic_mesh pattern bench: Python {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, asyncio loop, inproc://, "
        f"repeats={repeats}, sizes={sizes} (bursts are 5x the latency count)",
        flush=True,
    )
    print("warm-up:", flush=True)
    run_round(ROWS, {k: max(1, v // 5) for k, v in sizes.items()}, record=False)
    for i in range(repeats):
        print(f"round {i + 1}/{repeats}:", flush=True)
        run_round(ROWS, sizes, record=True)
    print()
    print(report(ROWS))
    missed = any(row.overhead() > TARGET for row in ROWS)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
