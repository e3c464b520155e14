"""Pattern conformance: every pattern on every transport of ``tests/conformance/transports.py``.

The actors under test live on the peer ``b`` (spawned by class from
``tests.patterns.actors``) and the test drives node ``a``, so every message
crosses the transport; what ``b``'s actors see comes back by messages to a
``Probe`` on ``a``. A transport joins by adding its case to ``CASES``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from synaptic_mesh import AskTimeout, PipelineClosed
from synaptic_mesh.patterns.lowering import PATTERNS
from synaptic_mesh.patterns.pipeline import feed
from synaptic_mesh.patterns.survey import survey
from tests.conformance.actors import Echo, Heard, Ping, Pong, Slow
from tests.conformance.transports import TransportCase
from tests.patterns.actors import (
    Caller,
    CallPeer,
    DynamicListener,
    Job,
    LineEcho,
    Member,
    PipelineHost,
    Question,
    Say,
    StopListening,
    Voter,
)
from tests.patterns.util import assert_once_per_stage_in_key_order, probe_on, until


async def test_capabilities_native_is_truthful(case: TransportCase) -> None:
    async with case.transports() as (transport, _other):
        for name in PATTERNS:
            native = transport.native_lowering(name)
            declared = name in transport.capabilities.native
            assert (native is not None) == declared, f"{name}: declared {declared}, got {native}"


async def test_late_reply_never_reaches_the_next_ask(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        await b.spawn(Echo, "core.echo")
        with pytest.raises(AskTimeout):
            await a.ask("core.echo", Slow(0.2), timeout=0.05)
        # The slow reply ("finally") arrives while this ask waits: it must not be taken for it.
        started = time.monotonic()
        while time.monotonic() - started < 0.4:
            assert await a.ask("core.echo", Ping(7), timeout=2) == Pong(7, "core.echo")
            await asyncio.sleep(0.01)
        await until(lambda: a.stats.late_replies == 1)


async def test_dynamic_subscription_until_unsubscribed(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(DynamicListener, "tot.listener", "probe.log", "tot.*.exploration")
        await a.publish("tot.b1.exploration", Job("k", 1))
        await a.publish("tot.b1.other", Job("k", 2))
        await until(lambda: len(log) == 1)
        assert log[0] == Heard("tot.listener", "tot.b1.exploration", "1")
        assert await a.ask("tot.listener", StopListening(), timeout=5) == 1
        await a.publish("tot.b2.exploration", Job("k", 3))
        await a.ask("tot.listener", StopListening(), timeout=5)  # a round trip after the publish
        await asyncio.sleep(0.05)
        assert len(log) == 1


async def test_bus_members_hear_all_others_in_order_never_themselves(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await a.spawn(Member, "room.a1", "probe.log")
        await b.spawn(Member, "room.b1", "probe.log")
        await b.spawn(Member, "room.b2", "probe.log")
        members = ["room.a1", "room.b1", "room.b2"]
        await asyncio.sleep(0.05)  # interest reaches every node
        for member in members:
            await a.tell(member, Say(20))
        await until(lambda: len(log) == 3 * 2 * 20)
        heard: dict[tuple[str, str], list[int]] = defaultdict(list)
        for h in log:
            sender, n, current_sender = h.text.split(":")
            assert sender == current_sender
            assert sender != h.actor, "a member heard itself"
            heard[(h.actor, sender)].append(int(n))
        for receiver in members:
            for sender in members:
                if sender != receiver:
                    assert heard[(receiver, sender)] == list(range(20)), (receiver, sender)


async def test_survey_counts_each_respondent_once_and_meets_quorum(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        for n, choice in enumerate(["red", "red", "blue"]):
            await b.spawn(Voter, f"council.v{n}", choice)
        await b.spawn(Voter, "council.bad", "raise")
        result = await survey(a, "council", Question("colour?"), timeout=1.0)  # no quorum: 1 s
        assert sorted(result.respondents) == ["council.v0", "council.v1", "council.v2"]
        assert [f.respondent for f in result.failures] == ["council.bad"]
        assert result.failures[0].error_type == "ValueError"
        assert not result.quorum_met
        started = time.monotonic()
        quick = await survey(a, "council", Question("again?"), timeout=5, quorum=2)
        assert quick.quorum_met and len(quick) == 2
        assert time.monotonic() - started < 2.5, "the quorum must end the survey early"


async def test_survey_with_no_respondents(case: TransportCase) -> None:
    async with case.pair() as (a, _b):
        started = time.monotonic()
        result = await survey(a, "nobody.listens", Question("anyone?"), timeout=1.0)
        assert len(result) == 0 and not result.failures
        if case.capabilities.knows_interest:
            assert result.no_responders
            assert time.monotonic() - started < 0.5, "no responders must not wait for the deadline"


async def test_pipeline_each_item_once_per_stage_in_key_order(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        done: list[Job] = []

        async def collect(job: Job, subject: str) -> None:
            done.append(job)

        await a.subscribe("ingest.done", collect)
        await b.spawn(PipelineHost, "ingest.host", "probe.log", "ingest", 3, True)
        jobs = [Job(f"k{n % 4}", n) for n in range(40)]
        for job in jobs:
            await feed(a, "ingest", job, timeout=10)
        await until(lambda: len(done) == len(jobs) and len(log) == 2 * len(jobs))
        await asyncio.sleep(0.05)
        assert_once_per_stage_in_key_order(log, jobs)
        for key in {j.key for j in jobs}:
            assert [j.n for j in done if j.key == key] == [j.n for j in jobs if j.key == key]


async def test_pipeline_without_key_shares_the_work(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(PipelineHost, "jobs.host", "probe.log", "jobs", 2, False)
        for n in range(30):
            await feed(a, "jobs", Job("any", n), timeout=10)
        await until(lambda: len(log) == 60)
        for stage in ("first", "second"):
            assert sorted(int(h.text.split(":")[1]) for h in log if h.subject == stage) == list(
                range(30)
            )
        with pytest.raises(PipelineClosed):
            await feed(a, "no.such.pipeline", Job("x", 0), timeout=2)


async def test_hotline_order_both_ways_and_busy(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Caller, "core.claude", "probe.log")
        await a.spawn(Caller, "core.other", "probe.log")
        await a.tell("core.claude", CallPeer("core.gemini", 30, hold=0.3))
        await until(lambda: len([h for h in log if h.actor == "core.claude"]) >= 30)
        await a.tell("core.other", CallPeer("core.gemini", 1))
        await until(lambda: any(h.actor == "core.other" for h in log))
        other = [h.text for h in log if h.actor == "core.other"]
        assert other[0].startswith("busy: core.gemini is on a hotline with core.claude")
        await until(lambda: len([h for h in log if h.actor == "core.claude"]) == 31)
        claude = [h.text for h in log if h.actor == "core.claude"]
        assert claude == [f"echo {n}" for n in range(30)] + ["then echo bye"]


async def test_hotline_peer_that_raises_closes_the_line_with_the_reason(
    case: TransportCase,
) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Caller, "core.claude", "probe.log")
        await a.tell("core.claude", CallPeer("core.gemini", 2, hold=-1))
        await until(lambda: len(log) == 3)
        assert [h.text for h in log] == [
            "echo 0",
            "echo 1",
            "closed: core.gemini raised RuntimeError: told to die",
        ]


async def test_hotline_peer_node_closing_closes_the_line(case: TransportCase) -> None:
    async with case.pair() as (a, b):
        log = await probe_on(a)
        await b.spawn(LineEcho, "core.gemini")
        await a.spawn(Caller, "core.claude", "probe.log")
        await a.tell("core.claude", CallPeer("core.gemini", 1, hold=30))
        await until(lambda: len(log) == 1)
        await b.close()
        await until(lambda: len(log) == 2, timeout=10)
        assert log[1].text.startswith("closed: core.gemini")
