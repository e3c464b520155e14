"""Supervision and actor footprint: restart latency, spawn rate, memory per idle actor.

The issue's targets (issue 4, "Speed"), measured in one run:

- **restart**: crash-to-restarted latency of a ``one_for_one`` child in
  process, p50 and p99 over ``--restarts`` restarts; target p50 <= 200 us.
  The clock starts just before the ``tell_nowait`` of the crashing message
  and stops inside the fresh incarnation's ``on_restart``.
- **spawn rate** of ``--actors`` trivial actors (``await node.spawn``, one
  after the other, and also in ``asyncio.gather`` batches as a user spawning
  many at once would write it); target >= 100k spawns/s.
- **memory per idle actor** with ``--actors`` actors alive; target <= 2 KiB.
  Measured as the RSS delta and as tracemalloc's traced bytes, each divided
  by the count; the tracemalloc snapshot is also broken down by where the
  memory was allocated, and one actor's objects are sized one by one with
  ``sys.getsizeof``, so the table says where the bytes go.

Absolute figures move from machine to machine (``shared/BASELINES.md``);
these targets are absolute ones from the issue, so every figure is a median
of ``--repeats`` rounds with its spread. Spawn and memory trials each run in
a fresh interpreter (``python -m synaptic_mesh.bench.supervision --trial``):
memory a previous trial freed would otherwise be reused and hide the RSS
growth. ``bench/README.md`` says how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import linecache
import logging
import math
import os
import subprocess
import sys
import time
import tracemalloc
import types
from collections import deque
from typing import Any

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on
from synaptic_mesh.bench import _cli
from synaptic_mesh.bench._cli import LoopFactory
from synaptic_mesh.bench._stats import (
    fmt_pct,
    fmt_rate,
    fmt_us,
    median,
    percentile,
    render_table,
    spread,
)
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node
from synaptic_mesh.supervisors.spec import Supervisor, child

RESTARTS = 10_000
ACTORS = 100_000
REPEATS = 3
WARMUP_RESTARTS = 200
BATCH = 1_000
"""Spawns awaited together by one ``asyncio.gather`` in the concurrent spawn trial."""
CLOSE_BUDGET = 60.0
"""Seconds a spawn trial waits for ``node.close()``; past that the figure is reported missing."""
TRACE_FRAMES = 16
"""Frames kept per tracemalloc traceback: enough to reach the runtime's call site."""
SAMPLE = 2_000
"""Actors spawned with full tracebacks, on top of ``--actors``, for the breakdown by site."""

TARGET_RESTART_P50_US = 200.0
TARGET_SPAWNS_PER_S = 100_000.0
TARGET_BYTES_PER_ACTOR = 2048.0


# -- the actors ---------------------------------------------------------------------


@message(name="bench.supervision.Crash")
class Crash:
    """Makes the :class:`Crasher` raise."""


@message(name="bench.supervision.Ping")
class Ping:
    """The one message the idle actors could handle (they never get one)."""

    n: int


class Probe:
    """Shared by the bench and the crashing child: where ``on_restart`` reports."""

    __slots__ = ("future", "restarted_ns")

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None
        self.restarted_ns = 0


class Crasher(AgentActor):
    """The supervised child: raises on :class:`Crash`; ``on_restart`` stops the clock."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def on_restart(self, reason: str) -> None:
        probe = self.probe
        probe.restarted_ns = time.perf_counter_ns()
        future = probe.future
        if future is not None and not future.done():
            future.set_result(None)

    @on(Crash)
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("crash for the bench")


class Idle(AgentActor):
    """The trivial actor spawned by the hundred thousand: no state, one handler."""

    @on(Ping)
    async def ping(self, msg: Ping) -> int:
        return msg.n


# -- restart latency ----------------------------------------------------------------


def quiet_runtime_logs() -> None:
    """Send the runtime's log records to a handler that drops them.

    Every crash logs an error with its traceback. Records are still created
    (that is the runtime's cost), but formatting 10k tracebacks onto stderr
    would measure the terminal, and without any handler Python's last-resort
    handler would do exactly that.
    """
    logger = logging.getLogger("synaptic_mesh")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


@dataclasses.dataclass
class RestartResult:
    """One restart trial: per restart, nanoseconds to ``on_restart`` and to the bench resuming."""

    restarted_ns: list[int]
    resumed_ns: list[int]
    seconds: float


async def restart_trial(restarts: int) -> RestartResult:
    """``restarts`` crashes of one ``one_for_one`` child, each awaited until restarted.

    Per crash: ``restarted`` is the time from just before the ``tell_nowait``
    of the crash until ``on_restart`` of the new incarnation runs;
    ``resumed`` until the bench's own task is running again (one more wake-up).
    Between crashes the bench waits, with bare ``sleep(0)`` turns, for the
    supervisor to finish its bookkeeping and the child to sleep on its empty
    mailbox, so that each crash starts from rest.
    """
    probe = Probe()
    tree = Supervisor(
        "bench",
        strategy="one_for_one",
        max_restarts=10 * (restarts + WARMUP_RESTARTS),
        within=3600.0,
        children=[child(Crasher, "bench.crasher", args=(probe,))],
    )
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    restarted: list[int] = []
    resumed: list[int] = []
    async with Node(transport="inproc://", supervise=tree) as node:
        ref = node.ref("bench.crasher")
        cell = node._local["bench.crasher"]
        supervisor = node.supervisor("bench")
        sleep = asyncio.sleep
        crash = Crash()  # one message, sent again and again: built before the clock

        async def one() -> tuple[int, int]:
            probe.future = future = loop.create_future()
            start = clock()
            ref.tell_nowait(crash)
            await future
            end = clock()
            while supervisor.busy or not cell.idle:
                await sleep(0)
            return probe.restarted_ns - start, end - start

        for _ in range(WARMUP_RESTARTS):
            await one()
        gc.collect()
        began = time.perf_counter()
        for _ in range(restarts):
            a, b = await one()
            restarted.append(a)
            resumed.append(b)
        seconds = time.perf_counter() - began
        assert cell.restarts == restarts + WARMUP_RESTARTS, cell.restarts
    return RestartResult(restarted, resumed, seconds)


# -- spawn rate and memory (each in a fresh interpreter) ------------------------------


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


async def _spawn_sequential(node: Node, count: int, prefix: str = "idle") -> None:
    spawn = node.spawn
    for i in range(count):
        await spawn(Idle, f"{prefix}.{i}")


async def _spawn_gathered(node: Node, count: int, prefix: str = "idle") -> None:
    spawn = node.spawn
    for start in range(0, count, BATCH):
        end = min(start + BATCH, count)
        await asyncio.gather(*(spawn(Idle, f"{prefix}.{i}") for i in range(start, end)))


class FloorActor:
    """The floor: the least a task-per-actor runtime can do for an idle actor.

    A ``deque`` mailbox, a task, a future it sleeps on, an entry in a registry
    by subject; spawning awaits a future the task resolves once running, as
    ``node.spawn`` waits for ``on_start``. No cancel scope, no subscription,
    no supervision, no ref: what is left is the event loop's own price.
    """

    __slots__ = ("mailbox", "subject", "task", "waiter")

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.mailbox: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self, started: asyncio.Future[None]) -> None:
        started.set_result(None)
        del started
        while True:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter


async def floor_trial(count: int) -> dict[str, Any]:
    """Spawn ``count`` :class:`FloorActor` one after the other: rate and RSS per actor."""
    loop = asyncio.get_running_loop()
    registry: dict[str, FloorActor] = {}

    async def spawn(subject: str) -> None:
        actor = registry[subject] = FloorActor(subject)
        started = loop.create_future()
        actor.task = loop.create_task(actor.run(started))
        await started

    await spawn("warm.up")
    gc.collect()
    rss_before = rss_bytes()
    began = time.perf_counter()
    for i in range(count):
        await spawn(f"idle.{i}")
    seconds = time.perf_counter() - began
    gc.collect()
    rss_after = rss_bytes()
    for actor in registry.values():
        assert actor.task is not None
        actor.task.cancel()
    await asyncio.gather(*(a.task for a in registry.values() if a.task), return_exceptions=True)
    return {
        "mode": "floor",
        "count": count,
        "seconds": seconds,
        "spawns_per_s": count / seconds,
        "rss_bytes_per_actor": (rss_after - rss_before) / count,
        "gc_collections": 0,
        "close_seconds": math.nan,
    }


async def spawn_trial(count: int, mode: str) -> dict[str, Any]:
    """Spawn ``count`` idle actors and time it; also the RSS they took and the close.

    ``mode``: ``seq`` (one ``await node.spawn`` after the other), ``gather``
    (``asyncio.gather`` batches of :data:`BATCH`), ``nogc`` (``seq`` with the
    cyclic garbage collector disabled while spawning, to separate the
    runtime's own cost from the collector's, which grows with the heap).
    """
    spawn = _spawn_gathered if mode == "gather" else _spawn_sequential
    node = Node(transport="inproc://")
    await node.start()
    try:
        # warm up: the first spawn pays for imports, class tables and caches
        await node.spawn(Idle, "warm.up")
        await node.stop("warm.up")
        gc.collect()
        rss_before = rss_bytes()
        collections_before = sum(s["collections"] for s in gc.get_stats())
        if mode == "nogc":
            gc.disable()
        began = time.perf_counter()
        await spawn(node, count)
        seconds = time.perf_counter() - began
        gc.enable()
        collections = sum(s["collections"] for s in gc.get_stats()) - collections_before
        gc.collect()
        rss_after = rss_bytes()
        assert len(node.actors()) == count
    finally:
        closing = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.shield(node.close()), CLOSE_BUDGET)
        except TimeoutError:
            close_seconds = math.inf  # reported as missing; the trial's process exits
        else:
            close_seconds = time.perf_counter() - closing
    return {
        "mode": mode,
        "count": count,
        "seconds": seconds,
        "spawns_per_s": count / seconds,
        "rss_bytes_per_actor": (rss_after - rss_before) / count,
        "gc_collections": collections,
        "close_seconds": close_seconds,
    }


def _runtime_dirs() -> tuple[str, ...]:
    """Directories of the runtime's own modules (the bench's is not one of them)."""
    from synaptic_mesh.actors import cell
    from synaptic_mesh.runtime import node
    from synaptic_mesh.supervisors import runtime
    from synaptic_mesh.transports import inproc

    modules = (cell, node, runtime, inproc)
    return tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in modules)


def _our_frame(frames: list[tracemalloc.Frame]) -> tracemalloc.Frame | None:
    """The most recent frame of the runtime itself (not the bench) in a traceback."""
    dirs = _runtime_dirs()
    for frame in reversed(frames):
        if frame.filename.startswith(dirs):
            return frame
    return None


def _where(frame: tracemalloc.Frame | None) -> str:
    if frame is None:
        return "-"
    name = os.path.join(*frame.filename.split(os.sep)[-2:])
    return f"{name}:{frame.lineno}"


def _source(frame: tracemalloc.Frame | None) -> str:
    if frame is None:
        return ""
    return linecache.getline(frame.filename, frame.lineno).strip()[:56]


def _is_hub(obj: Any, module_dicts: set[int]) -> bool:
    """Objects every actor shares, where the walk of one actor's objects stops.

    Besides the node, the loop, classes and functions: any container with
    more than :data:`SHARED_SIZE` items (an idle actor owns none that big, but
    a registry of all tasks or all actors is one, and walking through it
    would reach every other actor).
    """
    from synaptic_mesh.transports.base import Transport

    if isinstance(obj, (list, tuple, set, frozenset, dict, deque)) and len(obj) > SHARED_SIZE:
        return True
    return (
        isinstance(obj, (*_HUB_TYPES, Node, Transport, asyncio.AbstractEventLoop))
        or id(obj) in module_dicts
        or type(obj).__name__ in ("TaskKeeper", "SupervisorRuntime", "TaskGroup")
    )


SHARED_SIZE = 64
_HUB_TYPES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
)


def _reach(roots: list[Any], module_dicts: set[int]) -> dict[int, tuple[Any, str]]:
    """Objects reachable from ``roots`` without passing a hub: ``id -> (object, label)``.

    The label names the object by its type and the attribute, frame local or
    container it was first reached through (``Mailbox.user: deque``); an
    instance's ``__dict__`` lends its owner's name to what it holds.
    """
    found: dict[int, tuple[Any, str]] = {}
    # (object, its label, the name its referents are labelled after)
    queue: deque[tuple[Any, str, str]] = deque((r, _kind(r), _kind(r)) for r in roots)
    while queue:
        obj, label, owner = queue.popleft()
        if id(obj) in found or _is_hub(obj, module_dicts):
            continue
        found[id(obj)] = (obj, label)
        names = _attribute_names(obj)
        own_dict = getattr(obj, "__dict__", None) if not isinstance(obj, dict) else None
        for item in gc.get_referents(obj):
            if id(item) in found:
                continue
            if item is own_dict and own_dict is not None:
                queue.append((item, f"{owner}.__dict__", owner))
                continue
            via = names.get(id(item))
            text = f"{owner}.{via}: {_kind(item)}" if via else f"{owner} -> {_kind(item)}"
            queue.append((item, text, _kind(item)))
    return found


def _kind(obj: Any) -> str:
    """A type name for labels; a coroutine is named after its function."""
    if type(obj).__name__ == "coroutine":
        return f"coroutine {obj.cr_code.co_qualname}"
    return type(obj).__qualname__


def _attribute_names(obj: Any) -> dict[int, str]:
    """``id(value) -> name`` for the attributes (slots, ``__dict__``) or str keys of ``obj``."""
    names: dict[int, str] = {}
    if isinstance(obj, dict):
        return {id(v): k for k, v in obj.items() if isinstance(k, str)}
    for klass in type(obj).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if isinstance(slot, str) and not slot.startswith("__"):
                value = getattr(obj, slot, None)
                if value is not None:
                    names.setdefault(id(value), slot)
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        for name, value in attrs.items():
            names.setdefault(id(value), name)
    return names


def _actor_objects(node: Node, subject: str) -> list[Any]:
    """Where one actor's objects hang from: its cell, its task, its ref, its routing entry."""
    cell: Any = node._local[subject]
    roots: list[Any] = [cell]
    task = next((t for t in asyncio.all_tasks() if t.get_name() == subject), None)
    if task is None:  # tasks named otherwise: the one whose coroutine's ``self`` is the cell
        task = next((t for t in asyncio.all_tasks() if _drives(t, cell)), None)
    if task is not None:
        roots.append(task)
    ref = node._refs.get(subject)
    if ref is not None:
        roots.append(ref)
    hub = getattr(node.transport, "_hub", None)
    if hub is not None:
        roots.extend(_table_entries(hub.table, subject))
    return roots


def _drives(task: asyncio.Task[Any], cell: Any) -> bool:
    coro: Any = task.get_coro()
    for _ in range(8):
        if coro is None:
            return False
        if cell in gc.get_referents(coro):
            return True
        coro = getattr(coro, "cr_await", None)
    return False


def _table_entries(table: Any, subject: str) -> list[Any]:
    """The routing table's entries for ``subject`` (the table's layout is private)."""
    entries: list[Any] = []
    for attr in ("_exact", "_subs", "_wild"):
        held = getattr(table, attr, None)
        if isinstance(held, dict):
            value = held.get(subject)
            if isinstance(value, list):
                entries.extend(value)
            elif value is None:
                entries.extend(e for e in held.values() if getattr(e, "pattern", None) == subject)
        elif isinstance(held, list):
            entries.extend(e for e in held if getattr(e, "pattern", None) == subject)
    return entries


def _structural_sizes(node: Node, count: int) -> list[tuple[str, int, int]]:
    """``sys.getsizeof`` of the objects one idle actor holds alone, object by object.

    Walks what one actor's cell, task, ref and routing entry reach (stopping at
    what all actors share: the node, the loop, classes, functions), minus what
    another actor's walk also reaches. Not reachable this way, so not listed:
    entries of weak dictionaries (asyncio's set of all tasks, AnyIO's task
    states) and slots in shared dicts; tracemalloc counts those.
    """
    module_dicts = {id(m.__dict__) for m in list(sys.modules.values()) if m is not None}
    mine = _reach(_actor_objects(node, f"idle.{count // 2}"), module_dicts)
    other = _reach(_actor_objects(node, f"idle.{count // 3}"), module_dicts)
    rows: dict[str, list[int]] = {}
    for key, (obj, label) in mine.items():
        if key in other:
            continue
        row = rows.setdefault(label, [0, 0])
        row[0] += sys.getsizeof(obj)
        row[1] += 1
    return [(label, size, n) for label, (size, n) in rows.items()]


async def memory_trial(count: int, sample: int) -> dict[str, Any]:
    """Memory of ``count`` idle actors (tracemalloc), and where it goes.

    Allocations are counted over all ``count`` actors with one frame per
    trace (affordable for 100k actors), so growth of shared containers (the
    node's dicts, the routing table) is spread over all of them as it should
    be. One frame only names the line that allocated (often in asyncio or
    AnyIO), so ``sample`` more actors are spawned with full tracebacks to
    learn which line of the runtime led to each allocating line. The trial's
    process exits without closing the node: the spawn trials time the close.
    """
    node = Node(transport="inproc://")
    await node.start()
    await node.spawn(Idle, "warm.up")
    await node.stop("warm.up")
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    gc.collect()
    tracemalloc.start(1)
    first = tracemalloc.take_snapshot()
    await _spawn_sequential(node, count)
    gc.collect()
    second = tracemalloc.take_snapshot()
    tracemalloc.stop()
    by_line = second.filter_traces(ignore).compare_to(first.filter_traces(ignore), "lineno")
    del first, second
    tracemalloc.start(TRACE_FRAMES)
    first = tracemalloc.take_snapshot()
    await _spawn_sequential(node, sample, prefix="sample")
    gc.collect()
    second = tracemalloc.take_snapshot()
    tracemalloc.stop()
    structural = _structural_sizes(node, count)
    # allocating line -> {runtime line that led to it: bytes}, from the sample
    callers: dict[tuple[str, int], dict[str, int]] = {}
    for stat in second.filter_traces(ignore).compare_to(first.filter_traces(ignore), "traceback"):
        frames = list(stat.traceback)
        if stat.size_diff > 0 and frames:
            alloc = frames[-1]
            site = callers.setdefault((alloc.filename, alloc.lineno), {})
            ours = _where(_our_frame(frames))
            site[ours] = site.get(ours, 0) + stat.size_diff
    total = 0
    breakdown = []
    for stat in by_line:
        if stat.size_diff == 0:
            continue
        total += stat.size_diff
        alloc = stat.traceback[0]
        led = callers.get((alloc.filename, alloc.lineno))
        ours = max(led, key=led.__getitem__) if led else "-"
        breakdown.append(
            {
                "runtime_site": ours,
                "allocated_at": f"{_where(alloc)}  {_source(alloc)}",
                "bytes": stat.size_diff / count,
                "blocks": stat.count_diff / count,
            }
        )
    breakdown.sort(key=lambda row: -row["bytes"])
    return {
        "count": count,
        "sample": sample,
        "traced_bytes_per_actor": total / count,
        "breakdown": breakdown,
        "structural": [{"component": c, "bytes": b, "objects": n} for c, b, n in structural],
    }


def run_trial_here(kind: str, count: int, factory: LoopFactory) -> dict[str, Any]:
    """``--trial``: run one spawn or memory trial in this (fresh) process.

    The loop is not closed afterwards: the process exits right after printing
    the result, and closing the loop would first cancel and wait for whatever
    a close that overran its budget left running, which can take as long again.
    """
    quiet_runtime_logs()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if kind == "memory":
        trial = memory_trial(count, SAMPLE)
    elif kind == "floor":
        trial = floor_trial(count)
    else:
        trial = spawn_trial(count, kind)
    return loop.run_until_complete(trial)


def run_trial_child(kind: str, count: int, uvloop: bool) -> dict[str, Any]:
    """Run one trial in a fresh interpreter and return what it printed as JSON."""
    cmd = [sys.executable, "-m", "synaptic_mesh.bench.supervision", "--trial", kind]
    cmd += ["--actors", str(count)]
    if uvloop:
        cmd.append("--uvloop")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"trial {kind} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the harness ----------------------------------------------------------------------

SPAWN_MODES = ("seq", "gather", "nogc", "floor")


@dataclasses.dataclass
class Rounds:
    """Every round's figures, by metric."""

    restart_p50_us: list[float] = dataclasses.field(default_factory=list)
    restart_p99_us: list[float] = dataclasses.field(default_factory=list)
    resumed_p50_us: list[float] = dataclasses.field(default_factory=list)
    restarts_per_s: list[float] = dataclasses.field(default_factory=list)
    spawns_per_s: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {mode: [] for mode in SPAWN_MODES}
    )
    rss_per_actor: list[float] = dataclasses.field(default_factory=list)
    floor_rss_per_actor: list[float] = dataclasses.field(default_factory=list)
    close_seconds: list[float] = dataclasses.field(default_factory=list)


def run_round(args: argparse.Namespace, factory: LoopFactory, rounds: Rounds | None) -> None:
    """One restart trial (this process, fresh loop), then each spawn trial in a fresh process."""
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(restart_trial(args.restarts))
    restarted = sorted(result.restarted_ns)
    resumed = sorted(result.resumed_ns)
    p50 = percentile(restarted, 50) / 1000
    p99 = percentile(restarted, 99) / 1000
    r50 = percentile(resumed, 50) / 1000
    rate = args.restarts / result.seconds
    trials = {mode: run_trial_child(mode, args.actors, args.uvloop) for mode in SPAWN_MODES}
    seq = trials["seq"]
    rates = "  ".join(f"{m} {fmt_rate(t['spawns_per_s'])}/s" for m, t in trials.items())
    print(
        f"  restart p50 {fmt_us(p50)} us  p99 {fmt_us(p99)} us  (bench resumed p50 "
        f"{fmt_us(r50)} us; {fmt_rate(rate)} restarts/s)\n"
        f"  spawn {rates}\n"
        f"  RSS {seq['rss_bytes_per_actor']:,.0f} B/actor (floor "
        f"{trials['floor']['rss_bytes_per_actor']:,.0f})  close {seq['close_seconds']:.2f} s"
        f"  gc runs while spawning {seq['gc_collections']}",
        flush=True,
    )
    if rounds is not None:
        rounds.restart_p50_us.append(p50)
        rounds.restart_p99_us.append(p99)
        rounds.resumed_p50_us.append(r50)
        rounds.restarts_per_s.append(rate)
        for mode, trial in trials.items():
            rounds.spawns_per_s[mode].append(trial["spawns_per_s"])
        rounds.rss_per_actor.append(seq["rss_bytes_per_actor"])
        rounds.floor_rss_per_actor.append(trials["floor"]["rss_bytes_per_actor"])
        rounds.close_seconds.append(seq["close_seconds"])


@dataclasses.dataclass
class Verdict:
    """One reported figure: its median over rounds and, if the issue sets one, its target."""

    name: str
    value: float
    unit: str
    goal: float | None
    at_least: bool
    runs: list[float]

    @property
    def verdict(self) -> str:
        if self.goal is None or math.isnan(self.value):
            return "info" if self.goal is None else "n/a"
        ok = self.value >= self.goal if self.at_least else self.value <= self.goal
        return "PASS" if ok else "MISS"


def judge(rounds: Rounds, memory: dict[str, Any]) -> list[Verdict]:
    """The figures in report order; the issue's three targets are the ones with a goal."""
    traced = memory["traced_bytes_per_actor"]
    spawns = rounds.spawns_per_s

    def v(name: str, runs: list[float], unit: str, goal: float | None, at_least: bool) -> Verdict:
        return Verdict(name, median(runs), unit, goal, at_least, runs)

    return [
        v(
            "restart p50 (crash -> on_restart)",
            rounds.restart_p50_us,
            "us",
            TARGET_RESTART_P50_US,
            False,
        ),
        v("restart p99", rounds.restart_p99_us, "us", None, False),
        v("restart p50, bench resumed", rounds.resumed_p50_us, "us", None, False),
        v("restarts/s, one after another", rounds.restarts_per_s, "/s", None, True),
        v("spawn rate, sequential", spawns["seq"], "/s", TARGET_SPAWNS_PER_S, True),
        v("spawn rate, gather batches", spawns["gather"], "/s", None, True),
        v("spawn rate, sequential, gc off", spawns["nogc"], "/s", None, True),
        v("spawn rate, floor (bare task)", spawns["floor"], "/s", None, True),
        v("memory per idle actor, tracemalloc", [traced], "B", TARGET_BYTES_PER_ACTOR, False),
        v(
            "memory per idle actor, RSS delta",
            rounds.rss_per_actor,
            "B",
            TARGET_BYTES_PER_ACTOR,
            False,
        ),
        v("memory per actor, floor, RSS delta", rounds.floor_rss_per_actor, "B", None, False),
        v("close the node with all actors", rounds.close_seconds, "s", None, False),
    ]


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return f"> {CLOSE_BUDGET:g} s"
    if unit == "us":
        return f"{fmt_us(value)} us"
    if unit == "/s":
        return f"{fmt_rate(value)}/s"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:.2f} s"


def report(verdicts: list[Verdict], memory: dict[str, Any], top: int) -> str:
    """The figures with their verdicts, then where an idle actor's memory goes."""
    rows = []
    for v in verdicts:
        goal = "-" if v.goal is None else f"{'>=' if v.at_least else '<='} {_fmt(v.goal, v.unit)}"
        runs = str(len(v.runs))
        rows.append([v.name, _fmt(v.value, v.unit), fmt_pct(spread(v.runs)), runs, goal, v.verdict])
    table = render_table(
        ["figure", "median", "spread", "runs", "target", "verdict"],
        rows,
        [False, True, True, True, True, False],
    )
    shown = memory["breakdown"][:top]
    rest = sum(row["bytes"] for row in memory["breakdown"][top:])
    site_rows = [
        [row["runtime_site"], row["allocated_at"], f"{row['bytes']:,.1f}", f"{row['blocks']:.2f}"]
        for row in shown
    ]
    site_rows.append(["(the other sites)", "", f"{rest:,.1f}", ""])
    site_rows.append(["total", "", f"{memory['traced_bytes_per_actor']:,.1f}", ""])
    sites = render_table(
        ["runtime line (innermost)", "allocated at", "B/actor", "blocks/actor"],
        site_rows,
        [False, False, True, True],
    )
    structural = sorted(memory["structural"], key=lambda row: -row["bytes"])
    struct_rows = [
        [row["component"], str(row["objects"]), f"{row['bytes']:,}"] for row in structural
    ]
    objects = sum(row["objects"] for row in structural)
    struct_rows.append(["sum", str(objects), f"{sum(row['bytes'] for row in structural):,}"])
    parts = render_table(
        ["object (reached as)", "objects", "bytes"], struct_rows, [False, True, True]
    )
    return (
        f"{table}\n\nwhere an idle actor's memory goes: tracemalloc over {memory['count']:,} "
        f"actors by allocating line, each with the runtime line that led to it (learnt from "
        f"{memory['sample']:,} more actors traced with full tracebacks)\n\n{sites}\n\n"
        f"the same, object by object: sys.getsizeof of what one actor alone holds (weak-dict "
        f"entries and shared dict slots are not reachable this way)\n\n{parts}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.supervision",
        description="Crash-to-restarted latency, spawn rate and memory per idle actor.",
    )
    parser.add_argument(
        "-r", "--restarts", type=int, help=f"restarts per trial (default {RESTARTS:,})"
    )
    parser.add_argument(
        "-a", "--actors", type=int, help=f"actors per spawn trial (default {ACTORS:,})"
    )
    parser.add_argument("--repeats", type=int, help=f"measured rounds (default {REPEATS})")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1,000 restarts, 10,000 actors, 1 round"
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    _cli.add_output_options(parser)
    parser.add_argument("--top", type=int, default=25, help="allocation sites to list (default 25)")
    parser.add_argument("--trial", choices=(*SPAWN_MODES, "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _cli.fill_unset(
        args,
        full={"restarts": RESTARTS, "actors": ACTORS, "repeats": REPEATS},
        quick={"restarts": 1_000, "actors": 10_000, "repeats": 1},
    )
    _cli.require_positive(parser, args, "restarts", "actors", "repeats")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when done (1 with ``--strict`` if a target was missed, 2 on bad setup)."""
    args = parse_args(argv)
    loop = _cli.loop_factory(args.uvloop)
    if loop is None:
        return 2
    factory, loop_name = loop
    if args.trial is not None:
        print(json.dumps(run_trial_here(args.trial, args.actors, factory)), flush=True)
        os._exit(0)  # a close that overran its budget may have left actors behind

    quiet_runtime_logs()
    load_before = _cli.load_avg()
    print(
        _cli.run_header("supervision", load_before, loop=f"loop={loop_name}") + "\n"
        f"restart: {args.restarts:,} crashes of a one_for_one child (after {WARMUP_RESTARTS} "
        f"unrecorded), clock from tell_nowait(Crash()) to on_restart; runtime logs go to a "
        f"NullHandler\n"
        f"spawn: {args.actors:,} idle actors, `await node.spawn` one by one (seq), in "
        f"asyncio.gather batches of {BATCH:,} (gather), one by one with gc off (nogc), and the "
        f"floor (a bare asyncio task per actor); each trial in a fresh interpreter\n"
        f"memory: RSS delta of the seq trial / actors; tracemalloc over {args.actors:,} actors "
        f"in a fresh interpreter (once); repeats={args.repeats}, gc enabled unless said",
        flush=True,
    )
    print("warm-up:", flush=True)
    warm = argparse.Namespace(**vars(args))
    warm.restarts, warm.actors = min(args.restarts, 2_000), min(args.actors, 10_000)
    run_round(warm, factory, None)
    rounds = Rounds()
    for i in range(args.repeats):
        print(f"round {i + 1}/{args.repeats}:", flush=True)
        run_round(args, factory, rounds)
    print("memory (tracemalloc):", flush=True)
    memory = run_trial_child("memory", args.actors, args.uvloop)
    verdicts = judge(rounds, memory)
    load_after = _cli.load_avg()
    print(f"\nload avg before {load_before}, after {load_after}\n")
    print(report(verdicts, memory, args.top))
    if args.json:
        write_json(args, loop_name, rounds, memory, verdicts, (load_before, load_after))
    missed = any(v.verdict == "MISS" for v in verdicts)
    return 1 if args.strict and missed else 0


def write_json(
    args: argparse.Namespace,
    loop_name: str,
    rounds: Rounds,
    memory: dict[str, Any],
    verdicts: list[Verdict],
    load: tuple[str, str],
) -> None:
    """``--json``: settings, every round's figures, the memory breakdown and the verdicts."""
    data = {
        "bench": "supervision",
        **_cli.measured_on({"before": load[0], "after": load[1]}, machine=True, loop=loop_name),
        "restarts": args.restarts,
        "actors": args.actors,
        "repeats": args.repeats,
        "batch": BATCH,
        "rounds": dataclasses.asdict(rounds),
        "memory": memory,
        "targets": [
            {
                "name": v.name,
                "median": v.value,
                "unit": v.unit,
                "runs": v.runs,
                "spread": spread(v.runs),
                "goal": v.goal,
                "at_least": v.at_least,
                "verdict": v.verdict,
            }
            for v in verdicts
        ],
    }
    _cli.dump_json(args.json, data)


if __name__ == "__main__":
    raise SystemExit(main())
