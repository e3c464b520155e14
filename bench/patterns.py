"""The six patterns per transport: latency, throughput, and the cost of each generic lowering.

For every pattern and every selected transport (``--transports``, default
``inproc,tcp,shm``) the bench runs the pattern's API and a *bare twin*: the
same messages moved with plain ``node.publish`` into the same kind of receiver
(an actor's ``@subscribe`` handler, or a raw ``node.subscribe`` callback where
the pattern's receiver is not a mailbox). The ratio of the two, measured in
the same run on the same transport and interleaved round by round, is the
overhead of the generic lowering; the issue's target is at most 20% over the
transport's own publish path.

Every trial runs on two nodes linked by the transport (:func:`two_nodes`): a
sender node ``a`` and a node ``b`` hosting the receivers (the actors, the
voters, the pipeline and its stage, the hotline peer), so on a link transport
every message crosses the wire. Both nodes live in the bench's process on one
event loop: the figures include the CPU of both ends (encoding, the socket or
ring, decoding, dispatch), which a two-process deployment would spread over
two cores.

=============  ==============================  ===========================================
pattern        operation (a -> b)              bare twin
=============  ==============================  ===========================================
pub-sub        ``pubsub.publish``              ``node.publish`` to the same subscriber
bus            ``member.send`` to 1 member     ``node.publish`` to 1 subscriber
request-reply  ask (inbox)                     publish to an actor that publishes back to a
                                               raw subscription on ``a``
pipeline       ``feed`` / a ``Feeder`` into    ``node.publish`` to a queue-group subscriber
               1 stage (credit)
survey         50 respondents, quorum 50       publish to 50 subscribers, each publishes an
                                               answer to a raw subscription counting 50
hotline        send + receive round trip       as request-reply's twin
=============  ==============================  ===========================================

A pipeline runs its credit on the node of its supervisor subtree (``b``).
``feed`` asks its gate there for each item, returning once the first stage
took it (the latency columns); a ``Feeder`` with a window of ``FEED_WINDOW``
leases that many first-stage credits once and publishes its items straight
to the stage, getting the credits back in batches (the throughput, as a
remote producer streams items). The stage's credit (``prefetch``) equals that
window, sized as a streaming deployment would size it: large enough that the
producer is not stopped by every batch's credit round trip. The twin's flow
control is the link's own window (4,096 messages); with 64 credits instead of
256 the producer waits for credit every 64 items and the row measures those
round trips as much as the lowering (on ``tcp://`` and ``shm://`` about +21%
instead of about +10%).

The overhead is the median over rounds of the paired ratio (twin's rate over
the pattern's, minus 1), each round running the pattern and its twin back to
back, so load from other processes hits both alike; the per-round range is
shown next to it. ``  its hook`` isolates request-reply's lowering hook (the
pattern's ``ask`` against ``node.ask``, both through the inbox): the generic
request-reply lowering *is* the node's inbox, whose own cost the row above
compares with two bare publishes.

Latency: operations one at a time, each timed: p50 and p99 per round (their
median is shown), p99.9 over every round's operations together, marked when
it rests on fewer than ten of them (``_stats.tail_note``). Throughput:
pub-sub, bus and pipeline send a burst (a loop of awaited sends, timed to the
last delivery; the pipeline's through a ``Feeder``); request-reply, survey and
hotline are closed loops (one operation at a time), so their rate is
``1 / mean latency``. Each trial gets a fresh event loop and fresh nodes; a
trial that fails or exceeds ``--trial-timeout`` (a lost message) is printed,
left out of the figures (with its twin, so ratios stay paired) and listed
under ``failures``, a warm-up trial's too.

Run ``python -m synaptic_mesh.bench.patterns --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on, subscribe
from synaptic_mesh.bench._cli import (
    add_output_options,
    dump_json,
    load_avg,
    measured_on,
    require_positive,
    run_header,
    scheme_list,
)
from synaptic_mesh.bench._stats import (
    fmt_pct,
    fmt_rate,
    fmt_us,
    median,
    percentile,
    pooled_percentile,
    render_table,
    spread,
    tail_note,
)
from synaptic_mesh.bench._urls import first_url, joining_url, needs_dir
from synaptic_mesh.patterns import pubsub, request_reply
from synaptic_mesh.patterns.feeder import Feeder
from synaptic_mesh.patterns.hotline import Hotline, open_hotline
from synaptic_mesh.patterns.pipeline import Pipeline, Stage, feed
from synaptic_mesh.patterns.survey import respond, survey
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node
from synaptic_mesh.runtime.transport_lookup import transport_class

TARGET = 0.20
FEED_WINDOW = 256
"""Feeds in flight in the pipeline's burst (a ``Feeder``), as many as the stage's credit."""
RESPONDENTS = 50
TRANSPORTS = "inproc,tcp,shm"
TRIAL_TIMEOUT = 120.0
"""Seconds one trial may take; past it a message was lost (or the machine is swamped)."""
LINK_TIMEOUT = 10.0
NOT_JUDGED = {
    "nats+js": (
        frozenset({"bus", "request-reply", "pipeline", "survey", "hotline"}),
        "bus, request-reply, pipeline, survey and hotline are shown but not judged: their "
        "twins publish on bench.* subjects, which this bench makes durable (a JetStream "
        "publish awaiting its ack), while those patterns' own subjects (_bus.*, _pipe.*, "
        "inboxes, hotline lines) stay core NATS, so the ratio compares two delivery guarantees",
    ),
}
"""Per transport, the rows whose pattern and twin do not move messages alike, and why."""
GIVE_UP_AFTER = 2
"""Timed-out trials of a row on a transport after which its later trials are not run.

A lost message usually recurs; each retry would cost a whole trial timeout."""


@message(name="bench.patterns.Ping")
class Ping:
    n: int


# -- the mesh ---------------------------------------------------------------------------------


async def _linked(a: Node, b: Node) -> None:
    """On a routed transport, wait until each node has the other as a peer."""
    if not hasattr(a.transport, "peer_ids"):
        return  # a broker: interest lives there
    async with asyncio.timeout(LINK_TIMEOUT):
        while not (a.transport.peer_ids() and b.transport.peer_ids()):  # type: ignore[attr-defined]
            await asyncio.sleep(0.005)


@asynccontextmanager
async def two_nodes(scheme: str) -> AsyncIterator[tuple[Node, Node]]:
    """Two started nodes ``a`` and ``b`` in this process, linked by ``scheme``.

    inproc: one fresh hub. tcp (and the other listening link transports, zmq,
    nng+tcp): ``a`` listens on port 0 of 127.0.0.1, ``b`` dials it with
    ``?peers=``; zmq+pubsub: ``a`` runs the proxy, ``b`` joins it. shm: both in
    a fresh short directory under ``/tmp`` (Unix socket paths are limited to
    107 bytes), removed afterwards; an ``...ipc`` scheme: ``a.sock`` and
    ``b.sock`` (dialing ``a``) in such a directory. NATS: both on the broker of
    ``$SYNAPTIC_MESH_NATS_URL`` under a fresh subject prefix (``nats+js``:
    the ``bench.>`` subjects durable, the stream deleted afterwards). Raises
    ``UnknownTransport`` for a scheme nobody registered, and whatever the
    transport raises when it cannot start.
    """
    transport_class(f"{scheme}://")
    tmp = tempfile.mkdtemp(prefix="smesh-bp-", dir="/tmp") if needs_dir(scheme) else None
    try:
        first = first_url(scheme, tmp)
        async with Node(first, name="a") as a:
            address = getattr(a.transport, "address", None)
            try:
                async with Node(joining_url(scheme, first, address), name="b") as b:
                    await _linked(a, b)
                    yield a, b
            finally:
                if hasattr(a.transport, "delete_stream"):  # nats+js: leave no stream behind
                    with suppress(Exception):
                        await a.transport.delete_stream()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# -- the actors -------------------------------------------------------------------------------


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

Trial = Callable[[str, int], Awaitable[tuple[list[int], float]]]


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


async def _fanout(signal: Signal, send: Callable[[Ping], Awaitable[Any]], n: int):
    async def one(i: int) -> None:
        done = signal.expect(1)
        await send(Ping(i))
        await done

    latencies = await _timed(n, one)
    return latencies, await _burst(n * 5, signal, lambda i: send(Ping(i)))


async def publish_bare(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        signal = Signal()
        await b.spawn(Sink, "bench.sink", signal)
        return await _fanout(signal, lambda m: a.publish("bench.topic", m), n)


async def queue_bare(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        signal = Signal()
        await b.spawn(QueueSink, "bench.queue.sink", signal)
        return await _fanout(signal, lambda m: a.publish("bench.queue", m), n)


async def publish_pattern(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        signal = Signal()
        await b.spawn(Sink, "bench.sink", signal)
        return await _fanout(signal, lambda m: pubsub.publish(a, "bench.topic", m), n)


async def bus_pattern(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        signal = Signal()
        await a.spawn(Member, "bench.m1", Signal())
        await b.spawn(Member, "bench.m2", signal)
        member = a._local["bench.m1"].actor.bus  # type: ignore[union-attr]
        return await _fanout(signal, member.send, n)


async def ask_pattern(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        await b.spawn(Echo, "bench.echo")
        latencies = await _timed(
            n, lambda i: request_reply.ask(a, "bench.echo", Ping(i), timeout=10)
        )
        return latencies, _closed_loop(latencies)


async def ask_node(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        await b.spawn(Echo, "bench.echo")
        latencies = await _timed(n, lambda i: a.ask("bench.echo", Ping(i), timeout=10))
        return latencies, _closed_loop(latencies)


async def round_trip_bare(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
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


async def pipeline_pattern(scheme: str, n: int) -> tuple[list[int], float]:
    signal = Signal()

    async def work(item: Ping) -> None:
        signal.hit()

    async with two_nodes(scheme) as (a, b):
        await b.start_supervisor(Pipeline("bench", [Stage("s", work)], prefetch=FEED_WINDOW))

        async def one(i: int) -> None:
            done = signal.expect(1)
            await feed(a, "bench", Ping(i), timeout=10)
            await done

        latencies = await _timed(n, one)
        async with Feeder(a, "bench", window=FEED_WINDOW, timeout=10) as feeder:
            rate = await _burst(n * 5, signal, lambda i: feeder.put(Ping(i)))
        return latencies, rate


async def survey_pattern(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        for i in range(RESPONDENTS):
            await b.spawn(Voter, f"bench.voter{i}")

        async def one(i: int) -> None:
            result = await survey(a, "bench.council", Ping(i), timeout=10, quorum=RESPONDENTS)
            if len(result) != RESPONDENTS:
                raise RuntimeError(f"survey got {len(result)} of {RESPONDENTS} answers")

        latencies = await _timed(n, one)
        return latencies, _closed_loop(latencies)


async def survey_bare(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
        for i in range(RESPONDENTS):
            await b.spawn(Voter, f"bench.voter{i}")
        signal = Signal()

        async def answer(msg: Any, subject: str) -> None:
            signal.hit()

        await a.subscribe("bench.answers", answer)

        async def one(i: int) -> None:
            done = signal.expect(RESPONDENTS)
            await a.publish("bench.bare", Ping(i))
            await done

        latencies = await _timed(n, one)
        return latencies, _closed_loop(latencies)


async def hotline_pattern(scheme: str, n: int) -> tuple[list[int], float]:
    async with two_nodes(scheme) as (a, b):
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
    bare: Trial
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    p999: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    bare_p50: list[float] = field(default_factory=list)
    bare_p99: list[float] = field(default_factory=list)
    bare_p999: list[float] = field(default_factory=list)
    bare_rate: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    timeouts: int = 0  # trials of this row that timed out (warm-up included)
    not_judged: str | None = None  # why the overhead is not held against the target
    latencies: list[list[float]] = field(default_factory=list, repr=False)  # us, per round
    bare_latencies: list[list[float]] = field(default_factory=list, repr=False)

    def pooled_p999(self, *, bare: bool = False) -> tuple[float, int]:
        """p99.9 over every recorded round's operations together, and how many there were."""
        rounds = self.bare_latencies if bare else self.latencies
        return pooled_percentile(rounds, 99.9) if rounds else (math.nan, 0)

    def ratios(self) -> list[float]:
        """Per round: the twin's rate over the pattern's, minus 1 (paired: drift cancels)."""
        return [b / p - 1 for p, b in zip(self.rate, self.bare_rate, strict=True)]

    def overhead(self) -> float:
        """Cost over the bare twin: the median of the paired per-round ratios."""
        ratios = self.ratios()
        return median(ratios) if ratios else math.nan

    def verdict(self) -> str:
        overhead = self.overhead()
        if math.isnan(overhead) or self.not_judged:
            return "-"
        return "PASS" if overhead <= TARGET else "MISS"


def make_rows(scheme: str = "inproc") -> list[Row]:
    """A fresh set of rows (one per pattern) for one transport."""
    rows = [
        Row("pub-sub", "publish -> subscriber", publish_pattern, publish_bare),
        Row("bus", "member.send -> 1 member", bus_pattern, publish_bare),
        Row("request-reply", "ask", ask_pattern, round_trip_bare),
        Row("  its hook", "pattern ask vs node.ask", ask_pattern, ask_node),
        Row("pipeline", "feed -> 1 stage", pipeline_pattern, queue_bare),
        Row("survey", f"{RESPONDENTS} respondents, quorum", survey_pattern, survey_bare),
        Row("hotline", "send + receive", hotline_pattern, round_trip_bare),
    ]
    patterns, why = NOT_JUDGED.get(scheme, (frozenset(), ""))
    for row in rows:
        row.not_judged = why if row.pattern in patterns else None
    return rows


@dataclass
class TrialResult:
    """What one trial measured: its latencies (us, sorted) and its rate (ops/s)."""

    latencies: list[float]
    rate: float

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


async def _guarded(trial: Trial, scheme: str, n: int, timeout: float) -> tuple[list[int], float]:
    async with asyncio.timeout(timeout):
        return await trial(scheme, n)


def run_trial(
    trial: Trial, scheme: str, n: int, timeout: float = TRIAL_TIMEOUT
) -> TrialResult | str:
    """The latencies and rate of one trial on a fresh loop, or why it failed."""
    gc.collect()
    try:
        latencies, rate = asyncio.run(_guarded(trial, scheme, n, timeout))
    except TimeoutError:
        return f"timed out after {timeout:.0f} s (a message lost?)"
    except Exception as exc:  # one broken trial must not lose the others' figures
        return f"{type(exc).__name__}: {exc}"
    return TrialResult(sorted(ns / 1000 for ns in latencies), rate)


def run_round(
    scheme: str,
    rows: list[Row],
    sizes: dict[str, int],
    *,
    record: bool,
    timeout: float = TRIAL_TIMEOUT,
) -> None:
    """One trial of each row and its twin; ``record=False`` (the warm-up) keeps only failures.

    A row whose trials timed out ``GIVE_UP_AFTER`` times is not run again; each
    round it misses is listed as a failure with that reason.
    """
    for row in rows:
        n = sizes[row.pattern]
        results: dict[str, TrialResult | str] = {}
        for kind, trial in (("pattern", row.trial), ("bare", row.bare)):
            if row.timeouts >= GIVE_UP_AFTER:
                result = results[kind] = f"not run: {row.timeouts} trials timed out already"
            else:
                result = results[kind] = run_trial(trial, scheme, n, timeout)
            if isinstance(result, str):
                row.timeouts += result.startswith("timed out")
                print(f"  {row.pattern:<14} {kind:<8} FAILED: {result}", flush=True)
                continue
            print(
                f"  {row.pattern:<14} {kind:<8} p50 {fmt_us(result.p(50)):>7} us  "
                f"p99 {fmt_us(result.p(99)):>7} us  p99.9 {fmt_us(result.p(99.9)):>7} us  "
                f"{fmt_rate(result.rate):>9} ops/s",
                flush=True,
            )
        pattern, bare = results["pattern"], results["bare"]
        for kind, result in results.items():
            if isinstance(result, str):
                row.failures.append(f"{kind}{'' if record else ' (warm-up)'}: {result}")
        if not record:
            continue
        if isinstance(pattern, str) or isinstance(bare, str):
            continue  # figures are kept in pairs, so ratios stay paired
        row.p50.append(pattern.p(50))
        row.p99.append(pattern.p(99))
        row.p999.append(pattern.p(99.9))
        row.rate.append(pattern.rate)
        row.latencies.append(pattern.latencies)
        row.bare_p50.append(bare.p(50))
        row.bare_p99.append(bare.p(99))
        row.bare_p999.append(bare.p(99.9))
        row.bare_rate.append(bare.rate)
        row.bare_latencies.append(bare.latencies)


def can_open(scheme: str) -> str | None:
    """``None`` when ``scheme`` forms a two-node mesh here, else why not (one line)."""

    async def probe() -> None:
        async with asyncio.timeout(LINK_TIMEOUT * 2), two_nodes(scheme):
            pass

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def report(scheme: str, rows: list[Row]) -> str:
    table = []
    thin = []
    for row in rows:
        overhead = row.overhead()
        p999, samples = row.pooled_p999()
        note = tail_note(99.9, samples) if samples else None
        if note:
            thin.append(f"  {row.pattern.strip()}: {note}")
        table.append(
            [
                row.pattern,
                row.operation,
                fmt_us(median(row.p50)),
                fmt_us(median(row.p99)),
                fmt_us(p999) + ("*" if note else ""),
                fmt_rate(median(row.rate)),
                fmt_pct(spread(row.rate)),
                fmt_us(median(row.bare_p50)),
                fmt_rate(median(row.bare_rate)),
                "-" if math.isnan(overhead) else f"{overhead * 100:+.0f}%",
                _range(row.ratios()),
                row.verdict(),
            ]
        )
    failed = [f"  {row.pattern.strip()} {f}" for row in rows for f in row.failures]
    return (
        f"{scheme}://\n"
        + render_table(
            [
                "pattern",
                "operation",
                "p50 us",
                "p99 us",
                "p99.9 us",
                "ops/s",
                "spread",
                "bare p50 us",
                "bare ops/s",
                "overhead",
                "per round",
                f"<= {TARGET:.0%}",
            ],
            table,
            [False, False, True, True, True, True, True, True, True, True, True, False],
        )
        + (
            "\np99.9 over every round's operations together; * rests on few samples:\n"
            + "\n".join(thin)
            if thin
            else ""
        )
        + ("\nfailed trials (left out):\n" + "\n".join(failed) if failed else "")
        + (f"\nnot judged: {NOT_JUDGED[scheme][1]}" if scheme in NOT_JUDGED else "")
    )


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _range(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    return f"{min(ratios) * 100:+.0f}..{max(ratios) * 100:+.0f}%"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.patterns",
        description="Latency, throughput and generic-lowering overhead of the six patterns, "
        "two nodes per trial, per transport.",
    )
    parser.add_argument(
        "--transports",
        default=TRANSPORTS,
        help=f"comma-separated schemes (default {TRANSPORTS}); one that cannot form a "
        "two-node mesh in this process is skipped with the reason",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1/10 sizes, 1 round")
    parser.add_argument("--repeats", type=int, help="measured rounds (default 5, quick 1)")
    parser.add_argument(
        "--trial-timeout",
        type=float,
        default=TRIAL_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds one trial may take before it counts as failed (default {TRIAL_TIMEOUT:g})",
    )
    add_output_options(
        parser,
        json_help="also write the results as JSON to PATH (rewritten after every round, so a "
        "run stopped early leaves the rounds it finished)",
    )
    args = parser.parse_args(argv)
    if args.trial_timeout <= 0:
        parser.error("--trial-timeout must be positive")
    args.transports = scheme_list(parser, args.transports, "inproc,tcp,shm")
    args.repeats = args.repeats or (1 if args.quick else 5)
    require_positive(parser, args, "repeats")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print a table per transport; returns 0 (1 with ``--strict`` on a miss)."""
    args = parse_args(argv)
    scale = 10 if args.quick else 1
    sizes = {
        "pub-sub": 20_000 // scale,
        "bus": 20_000 // scale,
        "request-reply": 5_000 // scale,
        "  its hook": 5_000 // scale,
        "pipeline": 5_000 // scale,
        "survey": 500 // scale,
        "hotline": 5_000 // scale,
    }
    load_before = load_avg()
    print(
        run_header("pattern", load_before, loop="asyncio loop") + ", "
        f"transports={','.join(args.transports)}, two nodes in this process, "
        f"repeats={args.repeats}, sizes={sizes} (bursts are 5x the latency count)",
        flush=True,
    )
    skipped = {}
    for scheme in args.transports:
        reason = can_open(scheme)
        if reason is not None:
            skipped[scheme] = reason
            print(f"skipping {scheme}: {reason}", flush=True)
    schemes = [s for s in args.transports if s not in skipped]
    rows = {scheme: make_rows(scheme) for scheme in schemes}
    warm_up = {k: max(1, v // 5) for k, v in sizes.items()}
    for scheme in schemes:
        print(f"warm-up {scheme}:", flush=True)
        run_round(scheme, rows[scheme], warm_up, record=False, timeout=args.trial_timeout)
    for i in range(args.repeats):
        for scheme in schemes:
            print(f"round {i + 1}/{args.repeats} {scheme}:", flush=True)
            run_round(scheme, rows[scheme], sizes, record=True, timeout=args.trial_timeout)
        if args.json:
            write_json(
                args, rows, skipped, sizes, (load_before, load_avg()), rounds=i + 1, quiet=True
            )
    load_after = load_avg()
    print(f"\nload avg before {load_before}, after {load_after}")
    for scheme in schemes:
        print()
        print(report(scheme, rows[scheme]))
    for scheme, reason in skipped.items():
        print(f"\n{scheme}:// skipped: {reason}")
    if args.json:
        write_json(args, rows, skipped, sizes, (load_before, load_after), rounds=args.repeats)
    missed = any(row.verdict() == "MISS" for table in rows.values() for row in table)
    return 1 if args.strict and missed else 0


def write_json(
    args: argparse.Namespace,
    rows: dict[str, list[Row]],
    skipped: dict[str, str],
    sizes: dict[str, int],
    load: tuple[str, str],
    *,
    rounds: int,
    quiet: bool = False,
) -> None:
    """Write the figures so far to ``args.json`` (atomically: a reader never sees half a file).

    ``quiet`` for the rewrite after each round; the last write says where the file is.
    """
    data = {
        "bench": "patterns",
        "rounds_done": rounds,
        "complete": rounds == args.repeats,
        **measured_on({"before": load[0], "after": load[1]}),
        "args": vars(args),
        "sizes": {k.strip(): v for k, v in sizes.items()},
        "target": TARGET,
        "skipped": skipped,
        "not_judged": {scheme: NOT_JUDGED[scheme][1] for scheme in rows if scheme in NOT_JUDGED},
        "transports": {
            scheme: {
                row.pattern.strip(): {
                    "operation": row.operation,
                    "p50_us": row.p50,
                    "p99_us": row.p99,
                    "p999_us": row.p999,
                    "p999_pooled_us": _finite(row.pooled_p999()[0]),
                    "samples": row.pooled_p999()[1],
                    "samples_per_round": [len(r) for r in row.latencies],
                    "ops_per_s": row.rate,
                    "bare_p50_us": row.bare_p50,
                    "bare_p99_us": row.bare_p99,
                    "bare_p999_us": row.bare_p999,
                    "bare_p999_pooled_us": _finite(row.pooled_p999(bare=True)[0]),
                    "bare_samples": row.pooled_p999(bare=True)[1],
                    "bare_ops_per_s": row.bare_rate,
                    "overhead": None if math.isnan(row.overhead()) else row.overhead(),
                    "verdict": row.verdict(),
                    "failures": row.failures,
                }
                for row in table
            }
            for scheme, table in rows.items()
        },
    }
    dump_json(args.json, data, quiet=quiet)


if __name__ == "__main__":
    raise SystemExit(main())
