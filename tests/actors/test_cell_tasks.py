"""How a cell's task is started, owned and ended (``ActorCell``, ``TaskKeeper``, ``Done``)."""

from __future__ import annotations

import asyncio

import pytest

from synaptic_mesh import ActorStartError, AgentActor, Node, Supervisor, child, message, on
from synaptic_mesh.actors.cell import Done


@message(name="test_cell_tasks.Crash")
class Crash:
    pass


class Slow(AgentActor):
    """``on_start`` waits for the test to let it go (or for ever)."""

    def __init__(self, gate: asyncio.Event, entered: asyncio.Event) -> None:
        self.gate = gate
        self.entered = entered

    async def on_start(self) -> None:
        self.entered.set()
        await self.gate.wait()


class Idle(AgentActor):
    @on(Crash)
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("boom")


async def test_a_cancelled_spawn_stops_the_starting_actor_and_frees_its_subject(
    no_leaks,
) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    async with Node() as node:
        spawning = asyncio.ensure_future(node.spawn(Slow, "slow", gate, entered))
        await entered.wait()
        spawning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spawning
        assert node.actors() == []
        # the subject is free again, and a fresh spawn there works
        gate.set()
        await node.spawn(Slow, "slow", gate, asyncio.Event())
        assert node.actors() == ["slow"]
    await no_leaks()


async def test_closing_the_node_cancels_an_actor_stuck_in_on_start(no_leaks) -> None:
    entered = asyncio.Event()
    node = Node(shutdown_timeout=0.05)
    await node.start()
    spawning = asyncio.ensure_future(node.spawn(Slow, "stuck", asyncio.Event(), entered))
    await entered.wait()
    await node.close()
    with pytest.raises(ActorStartError, match="stopped before on_start returned"):
        await spawning
    assert node.actors() == []
    await no_leaks()


async def test_actor_tasks_are_named_after_their_subject_and_end_with_the_node(no_leaks) -> None:
    tree = Supervisor("s", max_restarts=100, children=[child(Idle, "sup.idle")])
    async with Node(supervise=tree) as node:
        await node.spawn(Idle, "plain.idle")
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert {"plain.idle", "sup.idle"} <= names
        for _ in range(3):  # restarts run in the same task, at the same depth
            node.tell_nowait("sup.idle", Crash())
            await node.wait_idle(2)
        assert node._local["sup.idle"].restarts == 3
        assert sum(t.get_name() == "sup.idle" for t in asyncio.all_tasks()) == 1
    await no_leaks()


async def test_done_is_a_one_shot_event_whose_waiters_are_independent() -> None:
    done = Done()
    assert not done.is_set()
    first = asyncio.ensure_future(done.wait())
    second = asyncio.ensure_future(done.wait())
    await asyncio.sleep(0)
    first.cancel()  # a cancelled waiter leaves the others waiting
    await asyncio.sleep(0)
    assert first.cancelled() and not second.done()
    done.set()
    done.set()  # idempotent
    await second
    assert done.is_set()
    await asyncio.wait_for(done.wait(), 1)  # already set: returns (after one checkpoint)
