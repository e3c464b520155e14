"""Survey: votes before the deadline, each respondent once, quorum, and the edge cases."""

from __future__ import annotations

import asyncio
import time

import pytest

from synaptic_mesh import (
    AgentActor,
    Node,
    Supervisor,
    child,
    message,
    on,
    respond,
    subscribe,
)
from synaptic_mesh.patterns.survey import survey
from tests.patterns.util import hub, until


@message(name="test_survey.Q")
class Q:
    text: str


class Voter(AgentActor):
    def __init__(self, answer: str, gate: asyncio.Event | None = None) -> None:
        self.answer = answer
        self.gate = gate

    @respond("panel")
    async def vote(self, q: Q) -> str:
        if self.gate is not None:
            await self.gate.wait()
        if self.answer == "raise":
            raise ValueError("no opinion")
        return self.answer


class Twice(AgentActor):
    """Answers the same group from two methods: only its first answer counts."""

    @respond("panel")
    async def first(self, q: Q) -> str:
        return "first"

    @respond("panel")
    async def second(self, q: Q) -> str:
        return "second"


class Listener(AgentActor):
    """A plain @subscribe handler on the group: hears the question, its reply is no vote."""

    def __init__(self, heard: list[str]) -> None:
        self.heard = heard

    @subscribe("panel")
    async def question(self, q: Q) -> str:
        self.heard.append(q.text)
        return "not a vote"


async def test_votes_each_respondent_once_in_arrival_order() -> None:
    async with Node(hub()) as node:
        heard: list[str] = []
        await node.spawn(Voter, "panel.a", "yes")
        await node.spawn(Voter, "panel.b", "no")
        await node.spawn(Twice, "panel.twice")
        await node.spawn(Listener, "panel.listener", heard)
        result = await survey(node, "panel", Q("ok?"), timeout=0.5)
        assert sorted(result.respondents) == ["panel.a", "panel.b", "panel.twice"]
        assert dict((v.respondent, v.value) for v in result)["panel.twice"] in ("first", "second")
        assert result.duplicates == 1
        assert result.ignored == 1 and heard == ["ok?"]
        assert not result.quorum_met and result.quorum is None
        assert all(0 <= v.after <= 0.5 for v in result)


async def test_quorum_returns_early_and_later_votes_are_late() -> None:
    async with Node(hub()) as node:
        gate = asyncio.Event()
        await node.spawn(Voter, "panel.fast1", "a")
        await node.spawn(Voter, "panel.fast2", "b")
        await node.spawn(Voter, "panel.slow", "c", gate)
        started = time.monotonic()
        result = await survey(node, "panel", Q("?"), timeout=10, quorum=2)
        assert time.monotonic() - started < 5
        assert result.quorum_met and sorted(result.respondents) == ["panel.fast1", "panel.fast2"]
        gate.set()  # the slow vote now arrives after the survey returned
        await until(lambda: node.stats.late_replies == 1)
        assert len(result) == 2


async def test_zero_respondents_returns_at_once() -> None:
    async with Node(hub()) as node:
        started = time.monotonic()
        result = await survey(node, "panel", Q("anyone?"), timeout=5, quorum=1)
        assert time.monotonic() - started < 1
        assert result.no_responders and len(result) == 0 and not result.quorum_met


async def test_quorum_larger_than_the_group_waits_for_the_deadline() -> None:
    async with Node(hub()) as node:
        await node.spawn(Voter, "panel.a", "yes")
        await node.spawn(Voter, "panel.b", "yes")
        started = time.monotonic()
        result = await survey(node, "panel", Q("?"), timeout=0.3, quorum=5)
        assert time.monotonic() - started >= 0.3
        assert len(result) == 2 and not result.quorum_met


async def test_a_respondent_that_raises_is_a_failure_and_its_supervisor_restarts_it() -> None:
    tree = Supervisor(
        "panel",
        children=[
            child(Voter, "panel.good", args=("yes",)),
            child(Voter, "panel.bad", args=("raise",)),
        ],
    )
    async with Node(hub()) as node:
        await node.start_supervisor(tree)
        result = await survey(node, "panel", Q("?"), timeout=0.5, quorum=2)
        assert result.respondents == ["panel.good"]
        assert [(f.respondent, f.error_type, f.message) for f in result.failures] == [
            ("panel.bad", "ValueError", "no opinion")
        ]
        await until(lambda: node._local["panel.bad"].restarts == 1)
        again = await survey(node, "panel", Q("again?"), timeout=0.5)
        assert again.respondents == ["panel.good"] and len(again.failures) == 1


async def test_a_question_taken_after_its_deadline_is_skipped() -> None:
    answered: list[str] = []

    class Busy(AgentActor):
        @on(float)
        async def hold(self, seconds: float) -> None:
            await asyncio.sleep(seconds)

        @respond("panel")
        async def vote(self, q: Q) -> str:
            answered.append(q.text)
            return "late"

    async with Node(hub()) as node:
        await node.spawn(Busy, "panel.busy")
        await node.tell("panel.busy", 0.3)
        result = await survey(node, "panel", Q("quick?"), timeout=0.1)
        assert len(result) == 0
        await node.wait_idle(2)
        assert answered == []  # skipped: no work for a survey nobody waits for
        assert node.stats.late_replies == 0


async def test_bad_arguments() -> None:
    async with Node(hub()) as node:
        with pytest.raises(ValueError):
            await survey(node, "panel", Q("?"), timeout=0)
        with pytest.raises(ValueError):
            await survey(node, "panel", Q("?"), timeout=1, quorum=0)
    with pytest.raises(TypeError):

        class Wrong(AgentActor):
            @respond("panel")
            def vote(self, q: Q) -> str:  # not async
                return "x"


class Witness(AgentActor):
    """Records who asked and on what subject; raises on the question "raise"."""

    def __init__(self, seen: list[tuple[str | None, str]]) -> None:
        self.seen = seen

    @respond("panel")
    async def vote(self, q: Q) -> str:
        self.seen.append((self.current_sender, self.current_subject))
        if q.text == "raise":
            raise ValueError("no opinion")
        return "yes"


class Surveyor(AgentActor):
    @on(Q)
    async def ask_panel(self, q: Q) -> int:
        return len(await self.survey("panel", q, timeout=0.5, quorum=1))


async def test_a_respondent_knows_its_surveyor_and_a_crash_reports_the_question() -> None:
    seen: list[tuple[str | None, str]] = []
    async with Node(hub()) as node:
        await node.spawn(Witness, "panel.witness", seen)
        await node.spawn(Surveyor, "chair")
        assert await node.ask("chair", Q("?")) == 1
        assert seen == [("chair", "panel")]
        assert await node.ask("chair", Q("raise")) == 0
        raised = [
            (letter, msg)
            for letter, msg in node.recent_dead_letters
            if letter.reason.startswith("handler raised ValueError")
        ]
        assert [msg for _, msg in raised] == [Q("raise")], "the question, not its mailbox wrapper"
        assert node._local["panel.witness"].current is None
