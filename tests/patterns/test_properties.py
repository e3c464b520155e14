"""Hypothesis properties of the patterns (inproc, two nodes on one hub where it matters).

- pipeline: every item is processed exactly once by each stage and, with a
  key, in feed order per key at every stage and at the output, for generated
  stage counts, worker counts, prefetch and per-item delays;
- survey: no respondent counted twice and no vote that arrived after the
  deadline, for generated mixes of prompt, late, duplicate and failing
  respondents and quorums;
- bus: every member sees every other member's messages, in per-sender order,
  never its own, for generated interleavings of senders across two nodes;
- hotline: both directions arrive complete and in order while both sides send
  at once, with generated yield points.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synaptic_mesh import (
    AgentActor,
    Hotline,
    Node,
    Pipeline,
    Stage,
    StageWorker,
    message,
    on,
    respond,
)
from synaptic_mesh.patterns.pipeline import feed
from synaptic_mesh.patterns.survey import survey
from tests.patterns.util import hub, until

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- pipeline ---------------------------------------------------------------------------


@message(name="test_props.Item")
class Item:
    key: int
    n: int
    delay: float


class Recorder(StageWorker):
    def __init__(self, log: list[tuple[str, str, int, int]]) -> None:
        self.log = log

    async def process(self, item: Item) -> Item:
        if item.delay:
            await asyncio.sleep(item.delay)
        stage = self.subject.split(".")[-2]
        self.log.append((stage, self.subject, item.key, item.n))
        return item


def item_key(item: Item) -> int:
    return item.key


@SETTINGS
@given(
    workers=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    prefetch=st.integers(1, 3),
    keyed=st.booleans(),
    items=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.0, 0.0005, 0.002])),
        min_size=1,
        max_size=25,
    ),
)
def test_pipeline_exactly_once_per_stage_and_order_per_key(
    workers: list[int], prefetch: int, keyed: bool, items: list[tuple[int, float]]
) -> None:
    asyncio.run(_pipeline(workers, prefetch, keyed, items))


async def _pipeline(
    workers: list[int], prefetch: int, keyed: bool, items: list[tuple[int, float]]
) -> None:
    log: list[tuple[str, str, int, int]] = []
    stages = [
        Stage(f"s{i}", Recorder, workers=count, args=(log,)) for i, count in enumerate(workers)
    ]
    pipe = Pipeline(
        "prop", stages, key=item_key if keyed else None, prefetch=prefetch, output="prop.out"
    )
    done: list[Item] = []
    async with Node(hub()) as node:

        async def keep(item: Item, subject: str) -> None:
            done.append(item)

        await node.subscribe("prop.out", keep)
        await node.start_supervisor(pipe)
        fed = [Item(key, n, delay) for n, (key, delay) in enumerate(items)]
        for item in fed:
            await feed(node, "prop", item)
        await until(lambda: len(done) == len(fed), timeout=10)
        await node.wait_idle(5)
    for stage in (s.name for s in stages):
        seen = [(key, n) for name, _w, key, n in log if name == stage]
        assert sorted(seen) == sorted((i.key, i.n) for i in fed), f"{stage}: exactly once each"
        if keyed:
            for key in {i.key for i in fed}:
                order = [n for name, _w, k, n in log if name == stage and k == key]
                assert order == [i.n for i in fed if i.key == key], f"{stage}, key {key}"
                workers_of_key = {w for name, w, k, _n in log if name == stage and k == key}
                assert len(workers_of_key) == 1
    if keyed:
        for key in {i.key for i in fed}:
            assert [i.n for i in done if i.key == key] == [i.n for i in fed if i.key == key]
    assert sorted(i.n for i in done) == list(range(len(fed)))


# -- survey -----------------------------------------------------------------------------


@message(name="test_props.Poll")
class Poll:
    text: str


class Respondent(AgentActor):
    def __init__(self, kind: str, gate: asyncio.Event) -> None:
        self.kind = kind
        self.gate = gate

    @respond("prop.panel")
    async def answer(self, poll: Poll) -> str:
        if self.kind == "late":
            await self.gate.wait()
        if self.kind == "raise":
            raise RuntimeError("no")
        return self.kind


class Duplicate(Respondent):
    """Answers every survey twice: only the first answer may count."""

    @respond("prop.panel")
    async def again(self, poll: Poll) -> str:
        return "dup again"


@SETTINGS
@given(
    kinds=st.lists(st.sampled_from(["prompt", "late", "dup", "raise"]), max_size=8),
    quorum=st.none() | st.integers(1, 10),
)
def test_survey_never_counts_twice_or_late(kinds: list[str], quorum: int | None) -> None:
    asyncio.run(_survey(kinds, quorum))


async def _survey(kinds: list[str], quorum: int | None) -> None:
    gate = asyncio.Event()
    async with Node(hub()) as node:
        for n, kind in enumerate(kinds):
            cls = Duplicate if kind == "dup" else Respondent
            await node.spawn(cls, f"prop.r{n}.{kind}", kind, gate)
        try:
            result = await survey(node, "prop.panel", Poll("?"), timeout=0.1, quorum=quorum)
        finally:
            gate.set()  # the late votes arrive now: counted as late, never added
        snapshot = list(result)
        answered = [v.respondent for v in result] + [f.respondent for f in result.failures]
        assert len(answered) == len(set(answered)), "a respondent counted twice"
        assert not any(".late" in who for who in answered), "a vote after the deadline counted"
        assert all(v.after <= 0.1 for v in result)
        if quorum is not None and result.quorum_met:
            assert len(result) == quorum
        if not kinds:
            assert result.no_responders
        await node.wait_idle(2)
        assert list(result) == snapshot
        assert node.stats.late_replies >= kinds.count("late")


# -- bus --------------------------------------------------------------------------------


@message(name="test_props.Said")
class Said:
    sender: str
    n: int


class Talker(AgentActor):
    def __init__(self, log: dict[tuple[str, str], list[int]]) -> None:
        self.log = log
        self.next = 0

    async def on_start(self) -> None:
        self.bus = await self.join_bus("propbus", self.heard)

    async def heard(self, msg: Said) -> None:
        assert msg.sender == self.current_sender
        self.log[(self.subject, msg.sender)].append(msg.n)

    @on(str)
    async def say(self, _: str) -> None:
        await self.bus.send(Said(self.subject, self.next))
        self.next += 1


@SETTINGS
@given(
    remote=st.lists(st.booleans(), min_size=2, max_size=5),
    turns=st.lists(st.integers(0, 4), max_size=40),
)
def test_bus_members_see_all_others_in_per_sender_order(
    remote: list[bool], turns: list[int]
) -> None:
    asyncio.run(_bus(remote, turns))


async def _bus(remote: list[bool], turns: list[int]) -> None:
    log: dict[tuple[str, str], list[int]] = defaultdict(list)
    url = hub()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        members = [f"propbus.m{i}" for i in range(len(remote))]
        for member, far in zip(members, remote, strict=True):
            await (b if far else a).spawn(Talker, member, log)
        sent: dict[str, int] = defaultdict(int)
        for turn in turns:
            if turn < len(members):
                a.tell_nowait(members[turn], "say")
                sent[members[turn]] += 1
        await a.wait_idle(5)
        await b.wait_idle(5)
    for receiver in members:
        assert not log[(receiver, receiver)], "a member heard itself"
        for sender in members:
            if sender != receiver:
                assert log[(receiver, sender)] == list(range(sent[sender])), (receiver, sender)


# -- hotline ----------------------------------------------------------------------------


async def talk(line: Hotline, count: int, pauses: list[bool], received: list[Any]) -> None:
    """Send ``count`` numbers then "done" while receiving the other side's until its "done"."""

    async def send() -> None:
        for n in range(count):
            await line.send(n)
            if pauses and pauses[n % len(pauses)]:
                await asyncio.sleep(0)
        await line.send("done")

    async def receive() -> None:
        while (msg := await line.receive()) != "done":
            received.append(msg)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        tg.start_soon(receive)


class Answerer(AgentActor):
    def __init__(self, count: int, pauses: list[bool], received: list[Any]) -> None:
        self.count = count
        self.pauses = pauses
        self.received = received

    async def on_hotline(self, line: Hotline) -> None:
        await talk(line, self.count, self.pauses, self.received)


class Dialer(AgentActor):
    def __init__(self, count: int, pauses: list[bool], received: list[Any]) -> None:
        self.count = count
        self.pauses = pauses
        self.received = received

    @on(str)
    async def dial(self, peer: str) -> None:
        async with self.hotline(peer) as line:
            await talk(line, self.count, self.pauses, self.received)


@SETTINGS
@given(
    to_peer=st.integers(0, 60),
    to_caller=st.integers(0, 60),
    pauses=st.lists(st.booleans(), max_size=8),
    remote=st.booleans(),
)
def test_hotline_order_both_ways(
    to_peer: int, to_caller: int, pauses: list[bool], remote: bool
) -> None:
    asyncio.run(_hotline(to_peer, to_caller, pauses, remote))


async def _hotline(to_peer: int, to_caller: int, pauses: list[bool], remote: bool) -> None:
    url = hub()
    got_by_peer: list[Any] = []
    got_by_caller: list[Any] = []
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        await (b if remote else a).spawn(Answerer, "prop.peer", to_caller, pauses, got_by_peer)
        await a.spawn(Dialer, "prop.caller", to_peer, pauses, got_by_caller)
        await a.ask("prop.caller", "prop.peer", timeout=10)
    assert got_by_peer == list(range(to_peer))
    assert got_by_caller == list(range(to_caller))
