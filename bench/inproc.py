"""In-process actor messaging: synaptic_mesh against the floor and its peers, in one run.

Absolute messages/s and microseconds move from run to run and machine to
machine (see ``shared/BASELINES.md``), so this script measures the runtime
*and* the floor (a hand-written asyncio actor) and the peers in the same
process, interleaved round by round, and judges the runtime by ratios:

- tell throughput of ``synaptic_mesh`` >= 50% of ``handactor_waiter`` (the floor)
  and >= 5x ``pykka``;
- ask p50 of ``synaptic_mesh`` <= 2x the floor's.

AutoGen-core's ``SingleThreadedAgentRuntime`` joins the peers when
``autogen-core`` is installed (it is not a dependency); otherwise the run
says why it is absent. ``--json`` writes every figure with its floor, spread
and the targets, which ``synaptic-mesh bench`` (``bench/matrix.py``) reads.

Run ``python -m synaptic_mesh.bench.inproc --help``; ``bench/README.md`` says
what each peer is and how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import pykka

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on
from synaptic_mesh.bench import _cli
from synaptic_mesh.bench._cli import LoopFactory
from synaptic_mesh.bench._stats import (
    fmt_pct,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    median,
    percentile,
    render_table,
    spread,
)
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node

TELL_MESSAGES = 200_000
ASKS = 20_000
REPEATS = 3
CHUNK = 1000
"""Tells sent between two yields to the loop, so the receiver drains as the sender goes."""
ASK_TIMEOUT = 10.0
"""A real ask always has a timeout; it costs the runtime a timer per ask, so the bench pays it."""
FLOOR = "handactor_waiter"
RUNTIME = "synaptic_mesh"
AUTOGEN = "autogen_core"
AUTOGEN_TELLS = 20_000
"""AutoGen-core handles about 10k tells/s here: a trial of 200k would take 20 s, so it gets
at most this many (its rate is still messages per second, from a shorter burst)."""


@message(name="bench.inproc.Ping")
class Ping:
    """The small message every peer sends: one int."""

    n: int


class Sink:
    """The work every peer's handler does: count, signal the N-th message, echo ``n``.

    Kept identical across peers so that the difference between them is the
    runtime's cost, not the handler's.
    """

    __slots__ = ("count", "done", "target")

    def __init__(self, target: int, done: Callable[[], None] | None) -> None:
        self.count = 0
        self.target = target
        self.done = done

    def handle(self, msg: Ping) -> int:
        self.count += 1
        if self.count == self.target and self.done is not None:
            self.done()
        return msg.n


# -- the peers ------------------------------------------------------------------


class MeshSink(AgentActor):
    """``synaptic_mesh``: an ``AgentActor`` whose one handler feeds a :class:`Sink`."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @on(Ping)
    async def ping(self, msg: Ping) -> int:
        return self.sink.handle(msg)


class _FloorActor:
    """What the two hand-written actors share: one task, an ask that is a queued future.

    An ask queues ``(message, future)`` and awaits the future; nothing else:
    no capacity, no supervision, no timeout. Subclasses choose the mailbox.
    """

    def __init__(self, handler: Callable[[Ping], Awaitable[int]]) -> None:
        self._handler = handler
        self._task = asyncio.get_running_loop().create_task(self._run())

    def tell(self, msg: Any) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        raise NotImplementedError

    async def ask(self, msg: Ping) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.tell((msg, future))
        return await future

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class HandActor(_FloorActor):
    """The floor: a ``deque`` mailbox drained by one task, woken by a bare future.

    ``tell`` is one append, plus resolving the future when the task sleeps:
    the least an asyncio actor can do per message.
    """

    def __init__(self, handler: Callable[[Ping], Awaitable[int]]) -> None:
        self._mailbox: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        super().__init__(handler)

    def tell(self, msg: Any) -> None:
        self._mailbox.append(msg)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        handler = self._handler
        while True:
            while mailbox:
                item = mailbox.popleft()
                if type(item) is tuple:
                    msg, future = item
                    future.set_result(await handler(msg))
                else:
                    await handler(item)
            self._waiter = loop.create_future()
            await self._waiter


class QueueActor(_FloorActor):
    """``asyncio_queue``: the same actor with an unbounded ``asyncio.Queue`` mailbox."""

    def __init__(self, handler: Callable[[Ping], Awaitable[int]]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.tell = self._queue.put_nowait  # type: ignore[method-assign]
        super().__init__(handler)

    async def _run(self) -> None:
        get = self._queue.get
        handler = self._handler
        while True:
            item = await get()
            if type(item) is tuple:
                msg, future = item
                future.set_result(await handler(msg))
            else:
                await handler(item)


class PykkaSink(pykka.ThreadingActor):
    """``pykka``: a ``ThreadingActor`` whose ``on_receive`` feeds a :class:`Sink`."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink

    def on_receive(self, msg: Any) -> Any:
        return self.sink.handle(msg)


# -- one trial per peer and measurement -------------------------------------------


async def _send_all(tell: Callable[[Ping], None], msgs: list[Ping]) -> None:
    """Synchronous tells, yielding to the loop every ``CHUNK`` so the receiver keeps up."""
    sleep = asyncio.sleep
    for start in range(0, len(msgs), CHUNK):
        for msg in msgs[start : start + CHUNK]:
            tell(msg)
        await sleep(0)


async def _ask_all(ask: Callable[[Ping], Awaitable[int]], msgs: list[Ping]) -> list[int]:
    """Sequential asks; returns each round trip in nanoseconds."""
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    for msg in msgs:
        start = clock()
        reply = await ask(msg)
        record(clock() - start)
        if reply != msg.n:
            raise AssertionError(f"asked {msg.n}, got {reply!r}")
    return latencies


def _loop_done(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[None], Callable[[], None]]:
    done: asyncio.Future[None] = loop.create_future()
    return done, lambda: done.set_result(None)


async def mesh_tell(msgs: list[Ping]) -> float:
    """Seconds from the first ``tell_nowait`` until the actor handled the last message."""
    done, signal = _loop_done(asyncio.get_running_loop())
    async with Node(transport="inproc://") as node:
        # capacity N+1: tell_nowait never meets a full mailbox (default: 1000, block)
        ref = await node.spawn(
            MeshSink, "bench.sink", Sink(len(msgs), signal), capacity=len(msgs) + 1
        )
        gc.collect()
        start = time.perf_counter()
        await _send_all(ref.tell_nowait, msgs)
        await done
        return time.perf_counter() - start


async def mesh_ask(msgs: list[Ping]) -> list[int]:
    """Round trips of sequential ``ref.ask`` to an actor on the same node (inproc)."""
    async with Node(transport="inproc://") as node:
        ref = await node.spawn(MeshSink, "bench.sink", Sink(-1, None))

        def ask(msg: Ping) -> Awaitable[int]:
            return ref.ask(msg, timeout=ASK_TIMEOUT)

        gc.collect()
        return await _ask_all(ask, msgs)


def _hand_trials(
    actor_class: type[_FloorActor],
) -> tuple[Callable[[list[Ping]], Awaitable[float]], Callable[[list[Ping]], Awaitable[list[int]]]]:
    """The tell and ask trials of a hand-written actor, shaped exactly like the mesh's."""

    async def tell(msgs: list[Ping]) -> float:
        done, signal = _loop_done(asyncio.get_running_loop())
        sink = Sink(len(msgs), signal)

        async def handler(msg: Ping) -> int:
            return sink.handle(msg)

        actor = actor_class(handler)
        try:
            gc.collect()
            start = time.perf_counter()
            await _send_all(actor.tell, msgs)
            await done
            return time.perf_counter() - start
        finally:
            await actor.stop()

    async def ask(msgs: list[Ping]) -> list[int]:
        sink = Sink(-1, None)

        async def handler(msg: Ping) -> int:
            return sink.handle(msg)

        actor = actor_class(handler)
        try:
            gc.collect()
            return await _ask_all(actor.ask, msgs)
        finally:
            await actor.stop()

    return tell, ask


def pykka_tell(msgs: list[Ping]) -> float:
    """Seconds for ``ref.tell`` of every message from this thread until the actor counted all."""
    done = threading.Event()
    ref = PykkaSink.start(Sink(len(msgs), done.set))
    try:
        tell = ref.tell
        gc.collect()
        start = time.perf_counter()
        for msg in msgs:
            tell(msg)
        done.wait()
        return time.perf_counter() - start
    finally:
        ref.stop()


def pykka_ask(msgs: list[Ping]) -> list[int]:
    """Round trips of blocking ``ref.ask`` from this thread (no event loop involved)."""
    ref = PykkaSink.start(Sink(-1, None))
    try:
        clock = time.perf_counter_ns
        ask = ref.ask
        latencies: list[int] = []
        gc.collect()
        for msg in msgs:
            start = clock()
            reply = ask(msg)
            latencies.append(clock() - start)
            if reply != msg.n:
                raise AssertionError(f"asked {msg.n}, got {reply!r}")
        return latencies
    finally:
        ref.stop()


def autogen_trials() -> (
    tuple[Callable[[list[Ping]], Awaitable[float]], Callable[[list[Ping]], Awaitable[list[int]]]]
    | str
):
    """AutoGen-core's in-process runtime as a peer, or why it cannot be one.

    ``SingleThreadedAgentRuntime`` with one ``RoutedAgent`` whose
    ``@message_handler`` feeds a :class:`Sink`. Tell is ``publish_message`` to
    a topic the agent type subscribes to (AutoGen's fire-and-forget send; it is
    a coroutine, so each one is awaited); ask is ``send_message`` to the
    agent's id, which returns the handler's reply. The runtime is started
    before and stopped after each trial, off the clock.
    """
    try:
        import autogen_core as ag
    except ImportError as exc:
        return f"autogen-core is not installed ({exc})"

    class AutogenSink(ag.RoutedAgent):  # type: ignore[misc]
        def __init__(self, sink: Sink) -> None:
            super().__init__("synaptic_mesh bench sink")
            self.sink = sink

        async def ping(self, message: Any, ctx: Any) -> int:
            return self.sink.handle(message)

        # AutoGen routes by the handler's resolved type hints: give it the real classes.
        ping.__annotations__ = {"message": Ping, "ctx": ag.MessageContext, "return": int}
        ping = ag.message_handler(ping)

    async def started(sink: Sink) -> Any:
        runtime = ag.SingleThreadedAgentRuntime()
        await AutogenSink.register(runtime, "bench_sink", lambda: AutogenSink(sink))
        await runtime.add_subscription(ag.TypeSubscription("bench", "bench_sink"))
        runtime.start()
        return runtime

    async def tell(msgs: list[Ping]) -> float:
        done, signal = _loop_done(asyncio.get_running_loop())
        runtime = await started(Sink(len(msgs), signal))
        topic = ag.TopicId("bench", "default")
        publish = runtime.publish_message
        try:
            gc.collect()
            start = time.perf_counter()
            for msg in msgs:
                await publish(msg, topic)
            await done
            return time.perf_counter() - start
        finally:
            await runtime.stop()

    async def ask(msgs: list[Ping]) -> list[int]:
        runtime = await started(Sink(-1, None))
        agent = ag.AgentId("bench_sink", "default")
        send = runtime.send_message

        def one(msg: Ping) -> Awaitable[int]:
            return send(msg, agent)  # type: ignore[no-any-return]

        try:
            gc.collect()
            return await _ask_all(one, msgs)
        finally:
            await runtime.stop()

    return tell, ask


# -- the harness ------------------------------------------------------------------


@dataclasses.dataclass
class Peer:
    """One contender: blocking callables that run a tell or an ask trial."""

    name: str
    on_loop: bool
    tell: Callable[[list[Ping]], float]
    ask: Callable[[list[Ping]], list[int]]
    max_tells: int | None = None  # a slow peer gets a shorter burst (its rate is still per second)
    tell_rates: list[float] = dataclasses.field(default_factory=list)
    ask_p50_us: list[float] = dataclasses.field(default_factory=list)
    ask_p99_us: list[float] = dataclasses.field(default_factory=list)
    ask_p999_us: list[float] = dataclasses.field(default_factory=list)

    def series(self, metric: str) -> list[float]:
        """Per-round values of ``metric`` (``tell`` or ``ask_p50``), in round order."""
        return self.tell_rates if metric == "tell" else self.ask_p50_us

    def label(self, loop_name: str) -> str:
        return (
            f"{self.name} [{loop_name}]" if self.on_loop and loop_name != "asyncio" else self.name
        )


def _on_loop(
    fn: Callable[[list[Ping]], Awaitable[Any]], factory: LoopFactory
) -> Callable[[list[Ping]], Any]:
    """Run each trial on a fresh event loop, so no trial inherits another's tasks or timers."""

    def run(msgs: list[Ping]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(fn(msgs))  # type: ignore[arg-type]

    return run


def build_peers(factory: LoopFactory) -> tuple[list[Peer], str | None]:
    """The contenders, runtime first, and why AutoGen-core is absent (``None``: it is there).

    The asyncio-based ones run on loops made by ``factory``.
    """
    hand_tell, hand_ask = _hand_trials(HandActor)
    queue_tell, queue_ask = _hand_trials(QueueActor)
    peers = [
        Peer(RUNTIME, True, _on_loop(mesh_tell, factory), _on_loop(mesh_ask, factory)),
        Peer(FLOOR, True, _on_loop(hand_tell, factory), _on_loop(hand_ask, factory)),
        Peer("asyncio_queue", True, _on_loop(queue_tell, factory), _on_loop(queue_ask, factory)),
        Peer("pykka", False, pykka_tell, pykka_ask),
    ]
    autogen = autogen_trials()
    if isinstance(autogen, str):
        return peers, autogen
    ag_tell, ag_ask = autogen
    peers.append(
        Peer(
            AUTOGEN,
            True,
            _on_loop(ag_tell, factory),
            _on_loop(ag_ask, factory),
            max_tells=AUTOGEN_TELLS,
        )
    )
    return peers, None


def run_round(peers: list[Peer], tells: list[Ping], asks: list[Ping], *, record: bool) -> None:
    """One tell and one ask trial per peer, back to back, so load drift hits all peers alike."""
    for peer in peers:
        burst = tells[: peer.max_tells] if peer.max_tells else tells
        rate = len(burst) / peer.tell(burst)
        latencies = sorted(peer.ask(asks))
        p50 = percentile(latencies, 50) / 1000
        p99 = percentile(latencies, 99) / 1000
        if record:
            peer.tell_rates.append(rate)
            peer.ask_p50_us.append(p50)
            peer.ask_p99_us.append(p99)
            peer.ask_p999_us.append(percentile(latencies, 99.9) / 1000)
        print(
            f"  {peer.name:<17} tell {fmt_rate(rate):>10} msgs/s"
            f"   ask p50 {fmt_us(p50):>6} us  p99 {fmt_us(p99):>6} us",
            flush=True,
        )


@dataclasses.dataclass
class Target:
    """A goal of the issue, as a ratio of two peers' medians."""

    name: str
    metric: str
    numerator: str
    denominator: str
    goal: float | None  # None: shown for information, not judged
    at_least: bool = True
    ratio: float = math.nan
    per_round: list[float] = dataclasses.field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.goal is None or math.isnan(self.ratio):
            return "info" if self.goal is None else "n/a"
        ok = self.ratio >= self.goal if self.at_least else self.ratio <= self.goal
        return "PASS" if ok else "MISS"


TARGETS = (
    Target("tell throughput vs floor", "tell", RUNTIME, FLOOR, 0.5),
    Target("tell throughput vs asyncio_queue", "tell", RUNTIME, "asyncio_queue", None),
    Target("tell throughput vs pykka", "tell", RUNTIME, "pykka", 5.0),
    Target("ask p50 vs floor", "ask_p50", RUNTIME, FLOOR, 2.0, at_least=False),
    Target("tell throughput vs autogen_core", "tell", RUNTIME, AUTOGEN, None),
    Target("ask p50 vs autogen_core", "ask_p50", RUNTIME, AUTOGEN, None, at_least=False),
)


def judge(peers: dict[str, Peer]) -> list[Target]:
    """Each target's ratio of medians, and the same ratio round by round (paired runs).

    A target naming a peer that did not run (AutoGen-core not installed) is left out.
    """
    judged = []
    for spec in TARGETS:
        if spec.numerator not in peers or spec.denominator not in peers:
            continue
        top = peers[spec.numerator].series(spec.metric)
        bottom = peers[spec.denominator].series(spec.metric)
        judged.append(
            dataclasses.replace(
                spec,
                ratio=median(top) / median(bottom),
                per_round=[a / b for a, b in zip(top, bottom, strict=True)],
            )
        )
    return judged


def report(peers: list[Peer], targets: list[Target], loop_name: str) -> str:
    """The results table (as in ``shared/BASELINES.md``) and the ratios with their verdicts."""
    rows = [
        [
            peer.label(loop_name),
            fmt_rate(median(peer.tell_rates)),
            fmt_pct(spread(peer.tell_rates)),
            fmt_us(median(peer.ask_p50_us)),
            fmt_us(median(peer.ask_p99_us)),
            fmt_us(median(peer.ask_p999_us)),
            fmt_pct(spread(peer.ask_p50_us)),
            str(len(peer.tell_rates)),
        ]
        for peer in peers
    ]
    table = render_table(
        [
            "peer",
            "tell msgs/s (median)",
            "tell spread",
            "ask p50 us",
            "ask p99 us",
            "ask p99.9 us",
            "ask p50 spread",
            "runs",
        ],
        rows,
        [False, True, True, True, True, True, True, True],
    )
    goal_rows = []
    for t in targets:
        what = "ask p50" if t.metric == "ask_p50" else "tell msgs/s"
        goal = "-" if t.goal is None else f"{'>=' if t.at_least else '<='} {t.goal:g}x"
        rounds = (
            f"{fmt_ratio(min(t.per_round))}..{fmt_ratio(max(t.per_round))}" if t.per_round else "-"
        )
        goal_rows.append(
            [
                f"{what}: {t.numerator} / {t.denominator}",
                fmt_ratio(t.ratio),
                rounds,
                goal,
                t.verdict,
            ]
        )
    ratios = render_table(
        ["ratio (medians)", "ratio", "per round", "target", "verdict"],
        goal_rows,
        [False, True, True, True, False],
    )
    return f"{table}\n\n{ratios}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.inproc",
        description="In-process tell throughput and ask latency: synaptic_mesh against "
        "a hand-written asyncio actor (the floor), asyncio.Queue and pykka.",
    )
    parser.add_argument(
        "-n", "--messages", type=int, help=f"tells per trial (default {TELL_MESSAGES:,})"
    )
    parser.add_argument(
        "-m", "--asks", type=int, help=f"sequential asks per trial (default {ASKS:,})"
    )
    parser.add_argument("--repeats", type=int, help=f"measured rounds (default {REPEATS})")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: N=20,000, M=2,000, 1 round"
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run the asyncio-based peers on uvloop"
    )
    _cli.add_output_options(parser)
    args = parser.parse_args(argv)
    _cli.fill_unset(
        args,
        full={"messages": TELL_MESSAGES, "asks": ASKS, "repeats": REPEATS},
        quick={"messages": 20_000, "asks": 2_000, "repeats": 1},
    )
    _cli.require_positive(parser, args, "messages", "asks", "repeats")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when done (1 with ``--strict`` if a target was missed, 2 on bad setup)."""
    args = parse_args(argv)
    loop = _cli.loop_factory(args.uvloop)
    if loop is None:
        return 2
    factory, loop_name = loop

    tells = [Ping(i) for i in range(args.messages)]
    asks = tells[: args.asks] if args.asks <= len(tells) else [Ping(i) for i in range(args.asks)]
    peers, autogen_absent = build_peers(factory)
    load_before = _cli.load_avg()
    print(
        _cli.run_header("in-process", load_before, loop=f"loop={loop_name}") + "\n"
        f"tell: N={args.messages:,} Ping(int) built before the clock, one sender calling "
        f"tell_nowait and yielding every {CHUNK}; synaptic_mesh actor spawned with capacity=N+1 "
        f"(default 1000, block) so tell_nowait never meets a full mailbox\n"
        f"ask: M={args.asks:,} sequential asks (synaptic_mesh with timeout={ASK_TIMEOUT:g} s; "
        f"pykka blocking ref.ask from the main thread); repeats={args.repeats}, rounds interleave "
        f"the peers; gc enabled, collected before each trial",
        flush=True,
    )
    if autogen_absent:
        print(f"{AUTOGEN}: left out: {autogen_absent}", flush=True)
    else:
        print(f"{AUTOGEN}: tell bursts of at most {AUTOGEN_TELLS:,} messages", flush=True)
    try:
        print("warm-up:", flush=True)
        run_round(peers, tells, asks, record=False)
        for i in range(args.repeats):
            print(f"round {i + 1}/{args.repeats}:", flush=True)
            run_round(peers, tells, asks, record=True)
    finally:
        pykka.ActorRegistry.stop_all()
    targets = judge({p.name: p for p in peers})
    load_after = _cli.load_avg()
    print(f"\nload avg before {load_before}, after {load_after}\n")
    print(report(peers, targets, loop_name))
    if args.json:
        write_json(args, peers, targets, loop_name, (load_before, load_after), autogen_absent)
    missed = any(t.verdict == "MISS" for t in targets)
    return 1 if args.strict and missed else 0


def write_json(
    args: argparse.Namespace,
    peers: list[Peer],
    targets: list[Target],
    loop_name: str,
    load: tuple[str, str],
    autogen_absent: str | None = None,
) -> None:
    """``--json``: the settings, every run's figures and the verdicts, for tracking over time.

    ``floor`` and ``runtime`` name the peers the targets compare; ``absent``
    says why a peer that could join (AutoGen-core) did not.
    """
    data = {
        "bench": "inproc",
        **_cli.measured_on({"before": load[0], "after": load[1]}, machine=True, loop=loop_name),
        "messages": args.messages,
        "asks": args.asks,
        "repeats": args.repeats,
        "chunk": CHUNK,
        "mesh_capacity": args.messages + 1,
        "ask_timeout_s": ASK_TIMEOUT,
        "runtime": RUNTIME,
        "floor": FLOOR,
        "absent": {AUTOGEN: autogen_absent} if autogen_absent else {},
        "peers": {
            peer.name: {
                "label": peer.label(loop_name),
                "loop": loop_name if peer.on_loop else "thread",
                "tell_messages": min(args.messages, peer.max_tells or args.messages),
                "tell_msgs_per_s": {
                    "runs": peer.tell_rates,
                    "median": median(peer.tell_rates),
                    "spread": spread(peer.tell_rates),
                },
                "ask_us": {
                    "p50_runs": peer.ask_p50_us,
                    "p99_runs": peer.ask_p99_us,
                    "p999_runs": peer.ask_p999_us,
                    "p50_median": median(peer.ask_p50_us),
                    "p99_median": median(peer.ask_p99_us),
                    "p999_median": median(peer.ask_p999_us),
                    "p50_spread": spread(peer.ask_p50_us),
                    "p99_spread": spread(peer.ask_p99_us),
                },
            }
            for peer in peers
        },
        "targets": [
            {
                "name": t.name,
                "metric": t.metric,
                "numerator": t.numerator,
                "denominator": t.denominator,
                "ratio": t.ratio,
                "per_round": t.per_round,
                "goal": t.goal,
                "at_least": t.at_least,
                "verdict": t.verdict,
            }
            for t in targets
        ],
    }
    _cli.dump_json(args.json, data)


if __name__ == "__main__":
    raise SystemExit(main())
