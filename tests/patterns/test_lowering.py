"""The lowering hook: native when declared and supplied, generic otherwise."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest

from synaptic_mesh import AgentActor, Node, message, on, respond
from synaptic_mesh.patterns.lowering import PATTERNS, SURVEY, is_generic, lowering_for
from synaptic_mesh.patterns.request_reply import GenericRequestReply
from synaptic_mesh.patterns.survey import GenericSurvey, survey
from synaptic_mesh.transports.base import Capabilities
from synaptic_mesh.transports.inproc import InprocTransport
from tests.patterns.util import hub


@message(name="test_lowering.Q")
class Q:
    text: str


class Voter(AgentActor):
    @respond("lowering.council")
    async def vote(self, q: Q) -> str:
        return "yes"


class RecordingSurvey(GenericSurvey):
    """A 'native' survey lowering: the generic one, counting its calls."""

    def __init__(self) -> None:
        self.surveys: list[str] = []
        self.respondents: list[str] = []

    async def survey(self, node: Any, group: str, question: Any, **kw: Any) -> None:
        self.surveys.append(group)
        await super().survey(node, group, question, **kw)

    async def attach_respondent(self, node: Any, group: str, handler: Any, **kw: Any) -> Any:
        self.respondents.append(group)
        return await super().attach_respondent(node, group, handler, **kw)


class NativeSurveyTransport(InprocTransport):
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=False,
        zero_copy=True,
        max_message=2**31,
        native=frozenset({SURVEY}),
        by_reference=True,
        knows_interest=True,
    )

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.native = RecordingSurvey()

    def native_lowering(self, pattern: str) -> object | None:
        return self.native if pattern == SURVEY else None


class LyingTransport(NativeSurveyTransport):
    def native_lowering(self, pattern: str) -> object | None:
        return None


async def test_inproc_declares_no_native_lowering_and_supplies_none() -> None:
    assert InprocTransport.capabilities.native == frozenset()
    async with Node(hub()) as node:
        for name in PATTERNS:
            assert node.transport.native_lowering(name) is None
            assert is_generic(node, name)


async def test_a_declared_native_lowering_is_used_by_both_sides() -> None:
    transport = NativeSurveyTransport(hub())
    async with Node(transport) as node:
        await node.spawn(Voter, "lowering.v1")
        result = await survey(node, "lowering.council", Q("?"), timeout=2, quorum=1)
        assert [v.value for v in result] == ["yes"]
        assert transport.native.surveys == ["lowering.council"]
        assert transport.native.respondents == ["lowering.council"]
        assert not is_generic(node, SURVEY)
        assert is_generic(node, "bus")


async def test_declared_but_not_supplied_falls_back_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Node(LyingTransport(hub())) as node:
        with caplog.at_level(logging.WARNING, "synaptic_mesh.patterns"):
            chosen = lowering_for(node, SURVEY, GenericSurvey)
        assert isinstance(chosen, GenericSurvey)
        assert "declares a native survey lowering but supplies none" in caplog.text
        assert lowering_for(node, SURVEY, GenericSurvey) is chosen  # cached per node


async def test_unknown_pattern_name_is_refused() -> None:
    async with Node(hub()) as node:
        with pytest.raises(ValueError, match="unknown pattern"):
            lowering_for(node, "gossip", GenericRequestReply)


class Echo(AgentActor):
    @on(Q)
    async def echo(self, q: Q) -> str:
        return q.text


async def test_actor_ask_goes_through_the_request_reply_lowering() -> None:
    class Asker(AgentActor):
        @on(str)
        async def relay(self, text: str) -> str:
            return await self.ask("lowering.echo", Q(text), timeout=2)

    async with Node(hub()) as node:
        await node.spawn(Echo, "lowering.echo")
        await node.spawn(Asker, "lowering.asker")
        assert await node.ask("lowering.asker", "hi", timeout=2) == "hi"
        assert isinstance(node.lowerings["request-reply"], GenericRequestReply)
