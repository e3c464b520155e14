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

A pipeline runs its credit on the node of its supervisor subtree, so a
producer on another node reaches it through its gate on ``b``: ``feed`` (one
item at a time, returning once the first stage took it: the latency
columns) or a ``Feeder`` keeping ``FEED_WINDOW`` feeds in flight (the
throughput, as a remote producer streams items).

The overhead is the median over rounds of the paired ratio (twin's rate over
the pattern's, minus 1), each round running the pattern and its twin back to
back, so load from other processes hits both alike; the per-round range is
shown next to it. ``  its hook`` isolates request-reply's lowering hook (the
pattern's ``ask`` against ``node.ask``, both through the inbox): the generic
request-reply lowering *is* the node's inbox, whose own cost the row above
compares with two bare publishes.

Latency: operations one at a time, each timed (p50, p99). Throughput:
pub-sub, bus and pipeline send a burst (a loop of awaited sends, timed to the
last delivery; the pipeline's through a ``Feeder``); request-reply, survey and
hotline are closed loops (one operation at a time), so their rate is
``1 / mean latency``. Each trial gets a fresh event loop and fresh nodes; a
trial that fails or exceeds ``TRIAL_TIMEOUT`` (a lost message) is printed and
left out of the table.

Run ``python -m synaptic_mesh.bench.patterns --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
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
from synaptic_mesh.patterns.feeder import Feeder
from synaptic_mesh.patterns.hotline import Hotline, open_hotline
from synaptic_mesh.patterns.pipeline import Pipeline, Stage, feed
from synaptic_mesh.patterns.survey import respond, survey
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node
from synaptic_mesh.runtime.transport_lookup import transport_class

TARGET = 0.20
FEED_WINDOW = 64
"""Feeds in flight in the pipeline's burst (a ``Feeder``), as many as the stage's credit."""
RESPONDENTS = 50
TRANSPORTS = "inproc,tcp,shm"
TRIAL_TIMEOUT = 120.0
"""Seconds one trial may take; past it a message was lost (or the machine is swamped)."""
LINK_TIMEOUT = 10.0
_names = itertools.count(1)


@message(name="bench.patterns.Ping")
class Ping:
    n: int


# -- the mesh ---------------------------------------------------------------------------------


def _first_url(scheme: str, tmp: str | None) -> str:
    """Where ``a`` starts: a fresh hub, a fresh directory, a broker prefix, or a listener."""
    if scheme == "inproc":
        return f"inproc://bench-patterns-{next(_names)}"
    if scheme == "shm":
        return f"shm://{tmp}"
    if scheme.endswith("ipc"):
        return f"{scheme}://{tmp}/a.sock"
    if scheme.startswith("nats"):
        base = os.environ.get("SYNAPTIC_MESH_NATS_URL", "nats://127.0.0.1:4222")
        host = base.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        prefix = f"bench{os.getpid()}x{next(_names)}x{os.urandom(3).hex()}"
        durable = "&durable=bench.>" if scheme == "nats+js" else ""  # JetStream: bench subjects
        return f"{scheme}://{host}?prefix={prefix}{durable}"
    if scheme == "zmq+pubsub":
        return f"{scheme}://127.0.0.1:0?proxy=1"
    return f"{scheme}://127.0.0.1:0"


def _second_url(scheme: str, first: str, a: Node) -> str:
    """Where ``b`` starts: the same hub, directory or broker, or dialing ``a``'s address."""
    if scheme in ("inproc", "shm") or scheme.startswith("nats"):
        return first
    address = getattr(a.transport, "address", None)
    if not address:
        raise RuntimeError(f"{scheme}:// reports no address after start, so b cannot dial a")
    if scheme == "zmq+pubsub":
        return f"{scheme}://{address}"
    if scheme.endswith("ipc"):
        return f"{first.rsplit('/', 1)[0]}/b.sock?peers={address}"
    return f"{scheme}://127.0.0.1:0?peers={address}"


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
    needs_dir = scheme == "shm" or scheme.endswith("ipc")
    tmp = tempfile.mkdtemp(prefix="smesh-bp-", dir="/tmp") if needs_dir else None
    try:
        first = _first_url(scheme, tmp)
        async with Node(first, name="a") as a:
            try:
                async with Node(_second_url(scheme, first, a), name="b") as b:
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
        await b.start_supervisor(Pipeline("bench", [Stage("s", work)], prefetch=64))

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
    rate: list[float] = field(default_factory=list)
    bare_p50: list[float] = field(default_factory=list)
    bare_rate: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """Per round: the twin's rate over the pattern's, minus 1 (paired: drift cancels)."""
        return [b / p - 1 for p, b in zip(self.rate, self.bare_rate, strict=True)]

    def overhead(self) -> float:
        """Cost over the bare twin: the median of the paired per-round ratios."""
        ratios = self.ratios()
        return median(ratios) if ratios else math.nan

    def verdict(self) -> str:
        overhead = self.overhead()
        return "-" if math.isnan(overhead) else ("PASS" if overhead <= TARGET else "MISS")


def make_rows() -> list[Row]:
    """A fresh set of rows (one per pattern) for one transport."""
    return [
        Row("pub-sub", "publish -> subscriber", publish_pattern, publish_bare),
        Row("bus", "member.send -> 1 member", bus_pattern, publish_bare),
        Row("request-reply", "ask", ask_pattern, round_trip_bare),
        Row("  its hook", "pattern ask vs node.ask", ask_pattern, ask_node),
        Row("pipeline", "feed -> 1 stage", pipeline_pattern, queue_bare),
        Row("survey", f"{RESPONDENTS} respondents, quorum", survey_pattern, survey_bare),
        Row("hotline", "send + receive", hotline_pattern, round_trip_bare),
    ]


def _stats(latencies: list[int]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return percentile(ordered, 50) / 1000, percentile(ordered, 99) / 1000


async def _guarded(trial: Trial, scheme: str, n: int) -> tuple[list[int], float]:
    async with asyncio.timeout(TRIAL_TIMEOUT):
        return await trial(scheme, n)


def run_trial(trial: Trial, scheme: str, n: int) -> tuple[float, float, float] | str:
    """``(p50 us, p99 us, ops/s)`` of one trial on a fresh loop, or why it failed."""
    gc.collect()
    try:
        latencies, rate = asyncio.run(_guarded(trial, scheme, n))
    except TimeoutError:
        return f"timed out after {TRIAL_TIMEOUT:.0f} s (a message lost?)"
    except Exception as exc:  # one broken trial must not lose the others' figures
        return f"{type(exc).__name__}: {exc}"
    return (*_stats(latencies), rate)


def run_round(scheme: str, rows: list[Row], sizes: dict[str, int], *, record: bool) -> None:
    for row in rows:
        n = sizes[row.pattern]
        results = {}
        for kind, trial in (("pattern", row.trial), ("bare", row.bare)):
            result = results[kind] = run_trial(trial, scheme, n)
            if isinstance(result, str):
                print(f"  {row.pattern:<14} {kind:<8} FAILED: {result}", flush=True)
                continue
            p50, p99, rate = result
            print(
                f"  {row.pattern:<14} {kind:<8} p50 {fmt_us(p50):>7} us  p99 {fmt_us(p99):>7} us"
                f"  {fmt_rate(rate):>9} ops/s",
                flush=True,
            )
        pattern, bare = results["pattern"], results["bare"]
        if not record:
            continue
        for kind, result in results.items():
            if isinstance(result, str):
                row.failures.append(f"{kind}: {result}")
        if isinstance(pattern, str) or isinstance(bare, str):
            continue  # figures are kept in pairs, so ratios stay paired
        row.p50.append(pattern[0])
        row.p99.append(pattern[1])
        row.rate.append(pattern[2])
        row.bare_p50.append(bare[0])
        row.bare_rate.append(bare[2])


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
    for row in rows:
        overhead = row.overhead()
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
        + ("\nfailed trials (left out):\n" + "\n".join(failed) if failed else "")
    )


def _range(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    return f"{min(ratios) * 100:+.0f}..{max(ratios) * 100:+.0f}%"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


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
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.transports = list(
        dict.fromkeys(t.strip() for t in args.transports.split(",") if t.strip())
    )
    if not args.transports:
        parser.error("--transports needs at least one scheme, e.g. inproc,tcp,shm")
    args.repeats = args.repeats or (1 if args.quick else 5)
    if args.repeats < 1:
        parser.error("--repeats must be positive")
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
    load_before = _load()
    print(
        f"synaptic_mesh pattern bench: Python {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, asyncio loop, load avg {load_before}, "
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
    rows = {scheme: make_rows() for scheme in schemes}
    for scheme in schemes:
        print(f"warm-up {scheme}:", flush=True)
        run_round(scheme, rows[scheme], {k: max(1, v // 5) for k, v in sizes.items()}, record=False)
    for i in range(args.repeats):
        for scheme in schemes:
            print(f"round {i + 1}/{args.repeats} {scheme}:", flush=True)
            run_round(scheme, rows[scheme], sizes, record=True)
    load_after = _load()
    print(f"\nload avg before {load_before}, after {load_after}")
    for scheme in schemes:
        print()
        print(report(scheme, rows[scheme]))
    for scheme, reason in skipped.items():
        print(f"\n{scheme}:// skipped: {reason}")
    if args.json:
        write_json(args, rows, skipped, sizes, (load_before, load_after))
    missed = any(row.verdict() == "MISS" for table in rows.values() for row in table)
    return 1 if args.strict and missed else 0


def write_json(
    args: argparse.Namespace,
    rows: dict[str, list[Row]],
    skipped: dict[str, str],
    sizes: dict[str, int],
    load: tuple[str, str],
) -> None:
    data = {
        "bench": "patterns",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg": {"before": load[0], "after": load[1]},
        "args": vars(args),
        "sizes": {k.strip(): v for k, v in sizes.items()},
        "target": TARGET,
        "skipped": skipped,
        "transports": {
            scheme: {
                row.pattern.strip(): {
                    "operation": row.operation,
                    "p50_us": row.p50,
                    "p99_us": row.p99,
                    "ops_per_s": row.rate,
                    "bare_p50_us": row.bare_p50,
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
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    raise SystemExit(main())
