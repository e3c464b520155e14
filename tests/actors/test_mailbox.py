"""Mailbox policies, the system lane, and concurrency, through a real node."""

from __future__ import annotations

import asyncio

import pytest

from synaptic_mesh import AgentActor, MailboxFull, Node, TransportClosed, message, on
from synaptic_mesh.actors.mailbox import Mailbox


@message(name="test_mailbox.Item")
class Item:
    n: int


@message(name="test_mailbox.Hold")
class Hold:
    pass


class Gate(AgentActor):
    """Holds on its first message until released, recording what it handles."""

    def __init__(self, gate: asyncio.Event, seen: list[int]) -> None:
        self.gate = gate
        self.seen = seen

    @on(Hold)
    async def hold(self, msg: Hold) -> None:
        await self.gate.wait()

    @on(Item)
    async def item(self, msg: Item) -> None:
        self.seen.append(msg.n)


async def held_gate(node: Node, overflow: str, capacity: int = 3):
    gate = asyncio.Event()
    seen: list[int] = []
    ref = await node.spawn(Gate, "box.gate", gate, seen, capacity=capacity, overflow=overflow)
    ref.tell_nowait(Hold())
    await asyncio.sleep(0.01)  # the actor is now inside hold(), its mailbox empty
    return ref, gate, seen


async def test_block_policy_tell_nowait_raises_and_tell_waits() -> None:
    async with Node() as node:
        ref, gate, seen = await held_gate(node, "block")
        for n in range(3):
            ref.tell_nowait(Item(n))
        with pytest.raises(MailboxFull) as info:
            ref.tell_nowait(Item(99))
        assert info.value.capacity == 3
        blocked = asyncio.ensure_future(ref.tell(Item(3)))
        await asyncio.sleep(0.02)
        assert not blocked.done(), "tell must wait for a free slot"
        gate.set()
        await blocked
        await node.wait_idle(timeout=5)
        assert seen == [0, 1, 2, 3]


async def test_drop_newest_keeps_the_old_and_dead_letters_the_new() -> None:
    async with Node() as node:
        ref, gate, seen = await held_gate(node, "drop_newest")
        for n in range(5):
            ref.tell_nowait(Item(n))
        await ref.tell(Item(5))
        gate.set()
        await node.wait_idle(timeout=5)
        assert seen == [0, 1, 2]
        dropped = [m.n for d, m in node.recent_dead_letters if "drop_newest" in d.reason]
        assert dropped == [3, 4, 5]


async def test_drop_oldest_keeps_the_newest() -> None:
    async with Node() as node:
        ref, gate, seen = await held_gate(node, "drop_oldest")
        for n in range(6):
            ref.tell_nowait(Item(n))
        gate.set()
        await node.wait_idle(timeout=5)
        assert seen == [3, 4, 5]
        dropped = [m.n for d, m in node.recent_dead_letters if "drop_oldest" in d.reason]
        assert dropped == [0, 1, 2]


async def test_fail_policy_raises_on_both_forms() -> None:
    async with Node() as node:
        ref, gate, seen = await held_gate(node, "fail")
        for n in range(3):
            await ref.tell(Item(n))
        with pytest.raises(MailboxFull):
            ref.tell_nowait(Item(3))
        with pytest.raises(MailboxFull):
            await ref.tell(Item(4))
        gate.set()
        await node.wait_idle(timeout=5)
        assert seen == [0, 1, 2]


async def test_system_lane_overtakes_a_full_user_lane() -> None:
    async with Node() as node:
        ref, gate, seen = await held_gate(node, "block")
        for n in range(3):
            ref.tell_nowait(Item(n))
        stopping = asyncio.ensure_future(ref.stop(timeout=5))
        await asyncio.sleep(0.01)
        gate.set()
        await stopping
        assert seen == [], "stop must overtake the queued user messages"
        lost = [m.n for d, m in node.recent_dead_letters if "stopped" in d.reason]
        assert lost == [0, 1, 2], "queued messages become dead letters, not silence"
        assert node.local_mailbox("box.gate") is None
        assert "box.gate" not in node.actors()


class Parallel(AgentActor):
    concurrency = 3

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    @on(Item)
    async def item(self, msg: Item) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.02)
        self.running -= 1
        return msg.n


class Serial(Parallel):
    concurrency = 1


@pytest.mark.parametrize(("actor_class", "expected_peak"), [(Parallel, 3), (Serial, 1)])
async def test_concurrency_bounds_messages_in_flight(actor_class, expected_peak) -> None:
    async with Node() as node:
        ref = await node.spawn(actor_class, "box.parallel")
        replies = await asyncio.gather(*(ref.ask(Item(n), timeout=5) for n in range(9)))
        assert replies == list(range(9))
        assert node._local["box.parallel"].actor.peak == expected_peak


async def test_concurrency_override_per_spawn() -> None:
    async with Node() as node:
        ref = await node.spawn(Serial, "box.parallel", concurrency=2)
        await asyncio.gather(*(ref.ask(Item(n), timeout=5) for n in range(6)))
        assert node._local["box.parallel"].actor.peak == 2


def test_mailbox_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox("x", capacity=0)
    with pytest.raises(ValueError, match="overflow policy"):
        Mailbox("x", overflow="explode")  # type: ignore[arg-type]


async def test_closed_mailbox_refuses_and_wakes_blocked_senders() -> None:
    box = Mailbox("x", capacity=1)
    box.put_nowait(1)
    waiting = asyncio.ensure_future(box.put(2))
    await asyncio.sleep(0)
    assert box.close() == [1]
    with pytest.raises(TransportClosed):
        await waiting
    with pytest.raises(TransportClosed):
        box.put_nowait(3)
