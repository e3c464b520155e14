"""One test per supervision rule, stated as in the OTP supervisor manual."""

from __future__ import annotations

import asyncio
import time

import pytest

from synaptic_mesh import (
    Backoff,
    Node,
    RemoteError,
    Supervisor,
    SupervisorFailed,
    SupervisorStartError,
    child,
)
from tests.supervisors.kit import Bump, Child, Crash, Hang, Quit, incarnations, names, settled


class FailsToStart(Child):
    async def on_start(self) -> None:
        self.events.append(("start", self.subject))
        raise OSError("no API key")


async def test_one_for_one_restarts_only_the_crashed_child_with_fresh_state() -> None:
    events: list[tuple[str, str]] = []
    tree = Supervisor(
        "core",
        children=[child(Child, "core.a", args=[events]), child(Child, "core.b", args=[events])],
    )
    async with Node(supervise=tree) as node:
        a, b = node.ref("core.a"), node.ref("core.b")
        assert [await a.ask(Bump()), await a.ask(Bump()), await b.ask(Bump())] == [1, 2, 1]
        a.tell_nowait(Crash("hallucination"))
        a.tell_nowait(Bump())  # queued behind the crash: survives the restart
        await settled(node)
        assert await a.ask(Bump()) == 2, "state reset by the restart, queued Bump kept"
        assert await b.ask(Bump()) == 2, "the sibling was not touched"
        assert incarnations(node) == {"core.a": 2, "core.b": 1}
        assert events[-2:] == [("stop", "core.a"), ("restart", "core.a")]
        letter, original = node.recent_dead_letters[-1]
        assert letter.reason == "handler raised RuntimeError: hallucination"
        assert original == Crash("hallucination")


async def test_refs_stay_valid_and_asker_of_crash_gets_remote_error() -> None:
    tree = Supervisor("core", children=[child(Child, "core.a")])
    async with Node(supervise=tree) as node:
        ref = node.ref("core.a")
        with pytest.raises(RemoteError, match="boom"):
            await ref.ask(Crash(), timeout=5)
        await settled(node)
        assert await ref.ask(Bump(), timeout=5) == 1


async def test_one_for_all_stops_others_in_reverse_then_restarts_all_in_order() -> None:
    events: list[tuple[str, str]] = []
    specs = [child(Child, f"core.c{i}", args=[events]) for i in range(4)]
    async with Node(supervise=Supervisor("core", "one_for_all", children=specs)) as node:
        events.clear()
        node.ref("core.c1").tell_nowait(Crash())
        await settled(node)
        assert names(events, "stop") == ["core.c1", "core.c3", "core.c2", "core.c0"]
        assert names(events, "restart") == ["core.c0", "core.c1", "core.c2", "core.c3"]
        assert set(incarnations(node).values()) == {2}


async def test_rest_for_one_restarts_the_later_siblings_only() -> None:
    events: list[tuple[str, str]] = []
    specs = [child(Child, f"core.c{i}", args=[events]) for i in range(4)]
    async with Node(supervise=Supervisor("core", "rest_for_one", children=specs)) as node:
        events.clear()
        node.ref("core.c1").tell_nowait(Crash())
        await settled(node)
        assert names(events, "stop") == ["core.c1", "core.c3", "core.c2"]
        assert names(events, "restart") == ["core.c1", "core.c2", "core.c3"]
        assert incarnations(node) == {"core.c0": 1, "core.c1": 2, "core.c2": 2, "core.c3": 2}


async def test_transient_child_exiting_normally_is_not_restarted_but_a_crash_is() -> None:
    specs = [
        child(Child, "core.normal", restart="transient"),
        child(Child, "core.crash", restart="transient"),
    ]
    async with Node(supervise=Supervisor("core", children=specs)) as node:
        node.ref("core.normal").tell_nowait(Quit())
        node.ref("core.crash").tell_nowait(Crash())
        await settled(node)
        assert incarnations(node) == {"core.crash": 2}
        assert [r.name for r in node.supervisor("core").children] == ["core.crash"]


async def test_temporary_child_is_never_restarted() -> None:
    specs = [child(Child, "core.t1", restart="temporary"), child(Child, "core.p")]
    async with Node(supervise=Supervisor("core", children=specs)) as node:
        node.ref("core.t1").tell_nowait(Crash())
        await settled(node)
        assert incarnations(node) == {"core.p": 1}


async def test_temporary_sibling_is_removed_by_a_one_for_all_restart() -> None:
    specs = [child(Child, "core.p"), child(Child, "core.t", restart="temporary")]
    async with Node(supervise=Supervisor("core", "one_for_all", children=specs)) as node:
        node.ref("core.p").tell_nowait(Crash())
        await settled(node)
        assert incarnations(node) == {"core.p": 2}


async def test_permanent_child_exiting_normally_is_restarted() -> None:
    async with Node(supervise=Supervisor("core", children=[child(Child, "core.p")])) as node:
        node.ref("core.p").tell_nowait(Quit())
        await settled(node)
        assert incarnations(node) == {"core.p": 2}


async def test_intensity_exceeded_fails_the_root_and_stops_the_node() -> None:
    events: list[tuple[str, str]] = []
    specs = [child(Child, "core.a", args=[events]), child(Child, "core.b", args=[events])]
    tree = Supervisor("core", max_restarts=2, within=10, children=specs)
    node = Node(supervise=tree)
    await node.start()
    for _ in range(2):
        node.ref("core.a").tell_nowait(Crash())
        await settled(node)
    assert node.running and incarnations(node)["core.a"] == 3
    node.ref("core.a").tell_nowait(Crash("third strike"))
    with pytest.raises(SupervisorFailed) as info:
        await node.wait_idle(timeout=5)
    assert info.value.chain == [
        "core: more than 2 restarts within 10 s",
        "core.a: RuntimeError: third strike",
    ]
    await node.close()
    assert not node.running
    # the crashed child's incarnation ended first; then the survivors, in reverse order
    assert events[-2:] == [("stop", "core.a"), ("stop", "core.b")]


async def test_restarts_outside_the_window_do_not_count() -> None:
    tree = Supervisor("core", max_restarts=1, within=0.2, children=[child(Child, "core.a")])
    async with Node(supervise=tree) as node:
        for _ in range(3):
            node.ref("core.a").tell_nowait(Crash())
            await settled(node)
            await asyncio.sleep(0.25)
        assert node.failure is None
        assert incarnations(node) == {"core.a": 4}


async def test_nested_supervisor_failure_escalates_to_its_parent() -> None:
    events: list[tuple[str, str]] = []
    inner = Supervisor(
        "inner", max_restarts=0, within=10, children=[child(Child, "inner.a", args=[events])]
    )
    outer = Supervisor(
        "outer",
        "one_for_one",
        max_restarts=5,
        within=10,
        children=[child(Child, "outer.x", args=[events]), inner],
    )
    async with Node(supervise=outer) as node:
        first_inner = node.supervisor("inner")
        node.ref("inner.a").tell_nowait(Crash("deep"))
        await settled(node)
        assert first_inner.state == "failed"
        assert first_inner.failure is not None
        assert first_inner.failure.chain == [
            "inner: more than 0 restarts within 10 s",
            "inner.a: RuntimeError: deep",
        ]
        fresh = node.supervisor("inner")
        assert fresh is not first_inner and fresh.state == "running"
        assert incarnations(node) == {"outer.x": 1, "inner.a": 1}, "a new cell, a fresh start"
        assert await node.ref("inner.a").ask(Bump()) == 1


async def test_nested_escalation_up_to_the_root_names_the_whole_chain() -> None:
    inner = Supervisor("inner", max_restarts=0, children=[child(Child, "inner.a")])
    outer = Supervisor("outer", max_restarts=0, children=[inner])
    node = Node(supervise=outer)
    await node.start()
    node.ref("inner.a").tell_nowait(Crash("root cause"))
    with pytest.raises(SupervisorFailed) as info:
        await node.wait_idle(timeout=5)
    assert info.value.chain == [
        "outer: more than 0 restarts within 5 s",
        "inner: more than 0 restarts within 5 s",
        "inner.a: RuntimeError: root cause",
    ]
    assert "outer" in str(info.value) and "root cause" in str(info.value)
    await node.close()


async def test_start_failure_aborts_the_tree_and_stops_started_children() -> None:
    events: list[tuple[str, str]] = []
    specs = [
        child(Child, "core.ok", args=[events]),
        child(FailsToStart, "core.bad", args=[events]),
        child(Child, "core.never", args=[events]),
    ]
    with pytest.raises(SupervisorStartError, match=r"core\.bad.*no API key"):
        async with Node(supervise=Supervisor("core", children=specs)):
            pass
    assert events == [("start", "core.ok"), ("start", "core.bad"), ("stop", "core.ok")]


async def test_shutdown_is_reverse_order_and_a_stuck_child_is_cancelled_after_its_timeout() -> None:
    events: list[tuple[str, str]] = []
    specs = [
        child(Child, "core.first", args=[events]),
        child(Child, "core.stuck", args=[events], shutdown=0.2),
        child(Child, "core.last", args=[events]),
    ]
    node = Node(supervise=Supervisor("core", children=specs))
    await node.start()
    node.ref("core.stuck").tell_nowait(Hang(30))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    await node.close()
    elapsed = time.monotonic() - started
    assert 0.15 < elapsed < 2.0, elapsed
    assert names(events, "stop") == ["core.last", "core.stuck", "core.first"]


async def test_simple_one_for_one_pool() -> None:
    tree = Supervisor(
        "pool", "simple_one_for_one", children=[child(Child, "pool.worker", restart="transient")]
    )
    async with Node(supervise=tree) as node:
        pool = node.supervisor("pool")
        assert pool.children == []
        w1 = await pool.start_child()
        w2 = await pool.start_child(subject="pool.special")
        assert (w1.address, w2.address) == ("pool.worker.1", "pool.special")
        w1.tell_nowait(Crash())
        await settled(node)
        assert incarnations(node) == {"pool.worker.1": 2, "pool.special": 1}
        await pool.terminate_child("pool.worker.1")
        assert node.actors() == ["pool.special"]
        with pytest.raises(LookupError):
            await pool.terminate_child("pool.nobody")


async def test_backoff_waits_longer_for_consecutive_restarts() -> None:
    backoff = Backoff(initial=0.05, factor=2.0, max=1.0, jitter=0.0)
    tree = Supervisor(
        "core", max_restarts=10, within=10, backoff=backoff, children=[child(Child, "core.a")]
    )
    async with Node(supervise=tree) as node:
        gaps = []
        for _ in range(3):
            started = time.monotonic()
            node.ref("core.a").tell_nowait(Crash())
            await settled(node)
            gaps.append(time.monotonic() - started)
        assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2, gaps


def test_backoff_delay_is_capped_and_jittered() -> None:
    import random

    backoff = Backoff(initial=0.1, factor=3, max=1.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(1, 8)]
    assert all(0 <= d <= 1.5 for d in delays)
    assert delays[0] < 0.151
    assert len({round(d, 6) for d in delays[4:]}) > 1, "jitter spreads capped delays"
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


def test_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="strategy"):
        Supervisor("s", "one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="restart type"):
        child(Child, "a", restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        Supervisor("s", "simple_one_for_one", children=[])
    with pytest.raises(ValueError, match="used twice"):
        Supervisor("s", children=[child(Child, "a"), child(Child, "a")])
