"""NNG native lowerings: survey on Surveyor0/raw Respondent0, bus on Bus0; the shared plumbing.

The PAIR hotline, pub-sub, request-reply and pipeline lowerings have their own
files (``test_nng_native_<pattern>.py``); all of them share the helpers of
:mod:`tests.transports.nng_native_util` (``two_nodes`` and the rest).

Two real nodes in this process on real NNG sockets, so the tests can read
each transport's native counters (``transport.stats``); the pattern
conformance suite runs the same patterns with the peer in another process.
Bad input comes from a foreign pynng socket that dials a native endpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pynng
import pytest

from synaptic_mesh import AgentActor, Node, respond
from synaptic_mesh.patterns.bus import BUS_PREFIX
from synaptic_mesh.patterns.survey import survey
from synaptic_mesh.transports.nng import NngIpcTransport, NngTcpTransport
from synaptic_mesh.transports.nng_native import DEFAULT_NATIVE, pack, split_native, unpack
from synaptic_mesh.transports.nng_survey import LATE_GRACE
from tests.conformance.actors import Heard, Probe
from tests.patterns.actors import Member, Question, Say, Voter
from tests.transports.nng_native_util import (
    GARBAGE,
    SCHEMES,
    Chat,
    assert_flood_losses_counted,
    assert_garbage_dead_lettered,
    assert_no_descriptor_leak,
    settled,  # noqa: F401 (test_nng_native_pair imports it from here)
    two_nodes,
)
from tests.transports.util import until


class GuildVoter(AgentActor):
    """A respondent in queue group ``workers`` of ``guild``: the group answers once."""

    @respond("guild", queue="workers")
    async def vote(self, question: Question) -> str:
        return self.subject


class SlowVoter(AgentActor):
    @respond("slow")
    async def vote(self, question: Question) -> str:
        await asyncio.sleep(0.3)
        return "late"


# -- the native option --------------------------------------------------------------------


def test_native_option_chooses_the_lowered_patterns() -> None:
    assert split_native("nng+tcp://h:1?peers=x:2", {}) == (
        "nng+tcp://h:1?peers=x:2",
        DEFAULT_NATIVE,
    )
    assert split_native("nng+ipc:///p.sock?native=bus&peers=/q", {}) == (
        "nng+ipc:///p.sock?peers=/q",
        frozenset({"bus"}),
    )
    assert split_native("nng+tcp://h:1?native=", {}) == ("nng+tcp://h:1", frozenset())
    options: dict[str, Any] = {"native": "survey"}
    assert split_native("nng+tcp://h:1?native=bus", options)[1] == frozenset({"survey"})
    assert options == {}, "the keyword option is taken out"
    every = "survey, bus, pair, pub-sub, request-reply, pipeline"
    with pytest.raises(ValueError, match=f"native=bogus: NNG lowers only {every} natively"):
        split_native("nng+tcp://h:1?native=survey,bogus", {})


def test_capabilities_follow_the_option_and_the_role() -> None:
    assert NngTcpTransport.capabilities.native == DEFAULT_NATIVE
    for url, expected in [
        ("nng+tcp://127.0.0.1:0", set()),  # every native lowering is opt-in
        ("nng+tcp://127.0.0.1:0?native=pair", {"pair"}),
        ("nng+tcp://127.0.0.1:0?native=pair,pipeline", {"pair", "pipeline"}),
        ("nng+tcp://127.0.0.1:0?native=survey", {"survey"}),
        ("nng+tcp://127.0.0.1:0?native=", set()),
        ("nng+tcp://127.0.0.1:0?role=root", set()),  # a tree: not every node reaches every node
        ("nng+tcp://?role=leaf&parent=127.0.0.1:9", set()),
    ]:
        transport = NngTcpTransport(url)
        assert transport.capabilities.native == expected, url
        for name in ("request-reply", "pub-sub", "pipeline", "bus", "survey", "pair"):
            assert (transport.native_lowering(name) is not None) == (name in expected), (url, name)
    assert NngIpcTransport("nng+ipc:///tmp/x.sock?native=bus").capabilities.native == {"bus"}


def test_wire_format_round_trip_and_refusals() -> None:
    limits = NngTcpTransport().native_limits()
    header, frames = unpack(pack(["V"], [b"env", b"att"], limits), limits)
    assert header == ["V"] and frames == [b"env", b"att"]
    for data, reason in [
        (b"\x00", "no frame count"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x00", "bad frame count 1"),
        (b"\x00\x00\x00\x02\x00\x00\x00\x05\x00\x00\x00\x01ab", "add up to 6 bytes"),
        (b"\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00\xc1", "header is not msgpack"),
    ]:
        with pytest.raises(ValueError, match=reason):
            unpack(data, limits)


# -- survey ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_survey_goes_native_and_counts_every_voter_of_a_node(scheme: str) -> None:
    """Three voters on ``b`` answer one NNG survey three times (a raw Respondent0)."""
    async with two_nodes(scheme) as (a, b):
        for n in range(3):
            await b.spawn(Voter, f"council.b{n}", "red")
        await a.spawn(Voter, "council.a0", "blue")
        result = await survey(a, "council", Question("colour?"), timeout=0.5)
        assert sorted(result.respondents) == [
            "council.a0",
            "council.b0",
            "council.b1",
            "council.b2",
        ]
        # a: sent the question and its own voter's vote; got the question and four votes.
        # b: got the question once and sent three votes (a raw respondent answers again).
        stats_a, stats_b = a.transport.stats, b.transport.stats  # type: ignore[attr-defined]
        assert (stats_a.sent, stats_a.received, stats_a.fallbacks) == (2, 5, 0), stats_a
        assert (stats_b.sent, stats_b.received) == (3, 1), stats_b


async def test_a_queue_group_answers_once_per_survey_across_nodes() -> None:
    async with two_nodes("nng+tcp") as (a, b):
        await a.spawn(GuildVoter, "guild.a0")
        await b.spawn(GuildVoter, "guild.b0")
        await b.spawn(GuildVoter, "guild.b1")
        seen: list[str] = []
        for _ in range(6):
            result = await survey(a, "guild", Question("who?"), timeout=0.3)
            assert len(result) == 1, result
            seen.append(result[0].value)
        assert {"guild.a0"} < set(seen), "the group's member on b must get its turn"
        assert a.transport.stats.fallbacks == 0  # type: ignore[attr-defined]


async def test_concurrent_surveys_do_not_cancel_each_other() -> None:
    """One pynng context per survey: a new survey does not end the one before."""
    async with two_nodes("nng+ipc") as (a, b):
        for n in range(2):
            await b.spawn(Voter, f"council.b{n}", "red")
        results = await asyncio.gather(
            *(survey(a, "council", Question(f"q{i}"), timeout=0.5) for i in range(5))
        )
        assert [sorted(r.respondents) for r in results] == [["council.b0", "council.b1"]] * 5


async def test_votes_after_the_deadline_are_counted_late() -> None:
    async with two_nodes("nng+tcp") as (a, b):
        await b.spawn(SlowVoter, "slow.v")
        result = await survey(a, "slow", Question("hurry?"), timeout=0.1)
        assert len(result) == 0 and not result.no_responders
        await until(lambda: a.stats.late_replies == 1, what="the late vote counted")
        assert LATE_GRACE > 0.3


async def test_a_peer_without_a_native_pipe_is_asked_on_the_generic_path() -> None:
    async with two_nodes("nng+tcp") as (a, b):
        await b.spawn(Voter, "council.b0", "red")
        lowering = a.transport.lowerings["survey"]  # type: ignore[attr-defined]
        lowering.surveyor.undial(b.transport.id)  # type: ignore[attr-defined]
        result = await survey(a, "council", Question("still there?"), timeout=1.0)
        assert result.respondents == ["council.b0"]
        assert a.transport.stats.fallbacks == 1  # type: ignore[attr-defined]


# -- bus ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_bus_goes_native_in_order_never_to_the_sender(scheme: str) -> None:
    async with two_nodes(scheme) as (a, b):
        log: list[Heard] = []
        await a.spawn(Probe, "probe.log", log)
        for node, member in ((a, "room.a1"), (b, "room.b1"), (b, "room.b2")):
            await node.spawn(Member, member, "probe.log")
        for member in ("room.a1", "room.b1"):
            await a.tell(member, Say(30))
        await until(lambda: len(log) == 2 * 2 * 30, what="every member heard the others")
        for receiver, sender in [
            ("room.a1", "room.b1"),
            ("room.b1", "room.a1"),
            ("room.b2", "room.a1"),
            ("room.b2", "room.b1"),
        ]:
            heard = [
                int(h.text.split(":")[1])
                for h in log
                if h.actor == receiver and h.text.startswith(sender + ":")
            ]
            assert heard == list(range(30)), (receiver, sender)
        assert not [h for h in log if h.text.startswith(h.actor + ":")], "a member heard itself"
        for node in (a, b):
            stats = node.transport.stats  # type: ignore[attr-defined]
            assert stats.sent == 30 and stats.fallbacks == 0 and stats.gaps == 0, stats


async def test_bus_losses_at_a_full_queue_are_counted_as_gaps() -> None:
    """Bus0 drops silently at a full pipe queue: the sequence numbers count every loss."""
    async with two_nodes("nng+tcp") as (a, b):
        lowering_a = a.transport.lowerings["bus"]  # type: ignore[attr-defined]
        lowering_b = b.transport.lowerings["bus"]  # type: ignore[attr-defined]
        await assert_flood_losses_counted(
            b,
            lambda handler: lowering_b.join(b, "flood", "flood.b", handler),
            lambda chat: lowering_a.send(a, "flood", "flood.a", chat),
        )


async def bus_message_arrives(a: Node, b: Node, bus: str) -> None:
    """Member ``<bus>.b`` joins ``bus`` on ``b``; wait until a message ``<bus>.a`` sends from
    ``a`` reaches it (and nothing else does)."""
    heard: list[str] = []

    async def keep(subject: str, frames: Any, reply_to: str | None) -> None:
        heard.append(subject)

    await b.transport.lowerings["bus"].join(b, bus, f"{bus}.b", keep)  # type: ignore[attr-defined]
    await a.transport.lowerings["bus"].send(a, bus, f"{bus}.a", Chat(1))  # type: ignore[attr-defined]
    await until(lambda: heard == [f"{BUS_PREFIX}.{bus}.{bus}.a"], what="bus message")


# -- mixed deployments ----------------------------------------------------------------------


async def test_a_node_without_native_sockets_is_served_on_the_generic_path() -> None:
    """``native=`` on one node: the other learns it has no endpoints and falls back at once."""
    async with two_nodes("nng+tcp", b_query="native=") as (a, b):
        assert b.transport.capabilities.native == frozenset()  # type: ignore[attr-defined]
        await until(lambda: b.transport.id in a.transport.native.peers, what="tables exchanged")  # type: ignore[attr-defined]
        await b.spawn(Voter, "council.b0", "red")
        log: list[Heard] = []
        await a.spawn(Probe, "probe.log", log)
        await a.spawn(Member, "room.a1", "probe.log")
        await b.spawn(Member, "room.b1", "probe.log")
        started = asyncio.get_running_loop().time()
        result = await survey(a, "council", Question("mixed?"), timeout=1.0)
        await a.tell("room.a1", Say(5))
        await a.tell("room.b1", Say(5))
        await until(lambda: len(log) == 10, what="both members heard the other")
        assert asyncio.get_running_loop().time() - started < 1.9, "no wait for a pipe never made"
        assert result.respondents == ["council.b0"]
        assert sorted({h.actor for h in log}) == ["room.a1", "room.b1"]
        stats = a.transport.stats  # type: ignore[attr-defined]
        assert stats.fallbacks == 6 and stats.sent == 0, stats


# -- bad input ----------------------------------------------------------------------------


FOREIGN = {
    "survey": (pynng.Surveyor0, "survey question"),
    "bus": (pynng.Bus0, "bus message"),
}


@pytest.mark.parametrize("endpoint", list(FOREIGN))
async def test_garbage_on_a_native_endpoint_is_dead_lettered(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with two_nodes("nng+tcp") as (a, b):
        kind, expected = FOREIGN[endpoint]
        letter = await assert_garbage_dead_lettered(b, endpoint, kind, expected, caplog)
        assert letter.detail == GARBAGE.hex()
        assert b.transport.stats.bad_frames == 1  # type: ignore[attr-defined]
        await b.spawn(Voter, "council.b0", "red")  # the node goes on
        result = await survey(a, "council", Question("fine?"), timeout=0.5)
        assert result.respondents == ["council.b0"]


async def test_a_bus_header_that_is_not_a_list_is_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A well-framed message whose header is a msgpack map: refused, and the bus goes on."""
    async with two_nodes("nng+tcp") as (a, b):
        garbage = pack({"kind": "B"}, [b"env"], b.transport.native.limits)  # type: ignore[attr-defined]
        await assert_garbage_dead_lettered(
            b, "bus", pynng.Bus0, "bus message", caplog, garbage=garbage, reason="not a bus"
        )
        await bus_message_arrives(a, b, "on")
        assert b.transport.stats.received == 1  # type: ignore[attr-defined]


# -- closing releases every socket ----------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_native_sockets_leak_no_file_descriptor(scheme: str, no_leaks: Any) -> None:
    async def cycle() -> None:
        async with two_nodes(scheme) as (a, b):
            await b.spawn(Voter, "council.b0", "red")
            assert len(await survey(a, "council", Question("?"), timeout=0.3)) == 1
            await bus_message_arrives(a, b, "fd")

    await assert_no_descriptor_leak(cycle)
    await no_leaks()
