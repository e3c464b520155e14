"""NNG native request-reply (opt-in, ``native=...,request-reply``): Req0 per peer, Rep0 per node.

Two real nodes in this process (``two_nodes`` of ``nng_native_util``) so the
tests can read the native counters. What the lowering gives up (order between
an ask and the sender's earlier tells) is stated in
:mod:`synaptic_mesh.transports.nng_reqrep`; these tests check what it keeps:
replies matched to their asks, remote errors, "no responders", timeouts and
counted late replies, the generic path when a pipe is missing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pynng
import pytest

from synaptic_mesh import AgentActor, AskTimeout, NoResponders, RemoteError, message, on
from synaptic_mesh.patterns.lowering import is_generic
from synaptic_mesh.patterns.request_reply import ask
from synaptic_mesh.transports.nng import NngTcpTransport
from synaptic_mesh.transports.nng_native import DEFAULT_NATIVE, pack, unpack
from synaptic_mesh.transports.nng_reqrep import LATE_GRACE, NORESP, REQ
from tests.transports.nng_native_util import (
    SCHEMES,
    Chat,
    assert_garbage_dead_lettered,
    assert_no_descriptor_leak,
    two_nodes,
)
from tests.transports.util import until

REQREP = "native=survey,bus,pair,request-reply"


class Doubler(AgentActor):
    """Replies ``n * 2``; ``n < 0`` raises; ``text == "slow"`` answers after 0.3 s."""

    @on(Chat)
    async def double(self, msg: Chat) -> Chat:
        if msg.n < 0:
            raise ValueError(f"negative: {msg.n}")
        if msg.text == "slow":
            await asyncio.sleep(0.3)
        return Chat(msg.n * 2, self.subject)


@message(name="tests.nng_native_reqrep.Big")
class Big:
    n: int
    blob: bytes = b""


class Recorder(AgentActor):
    """Records ``Big`` tells; an ask answers the last one recorded."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    @on(Big)
    async def big(self, msg: Big) -> None:
        self.seen.append(msg.n)

    @on(Chat)
    async def last(self, msg: Chat) -> int:
        return self.seen[-1] if self.seen else -1


async def test_by_default_an_ask_never_overtakes_the_tells_before_it() -> None:
    """The promise the opt-in gives up (per-sender order, tell then ask) holds by default.

    With ``native=...,request-reply`` the same loop saw most asks overtake the
    large tell before them (the ask on Req0, the tell queued on the link).
    """
    async with two_nodes("nng+tcp") as (a, b):
        assert is_generic(a, "request-reply")
        await b.spawn(Recorder, "order.rec")
        await until(lambda: b.transport.id in a.transport.interested_nodes("order.rec"))  # type: ignore[attr-defined]
        for n in range(20):
            a.tell_nowait("order.rec", Big(n, b"x" * 500_000))
            assert await ask(a, "order.rec", Chat(n), timeout=5) == n


def test_request_reply_is_opt_in() -> None:
    assert "request-reply" not in DEFAULT_NATIVE
    chosen = NngTcpTransport(f"nng+tcp://127.0.0.1:0?{REQREP}").capabilities.native
    assert "request-reply" in chosen


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_asks_go_native_and_each_reply_finds_its_ask(scheme: str) -> None:
    async with two_nodes(scheme, REQREP) as (a, b):
        assert not is_generic(a, "request-reply")
        await b.spawn(Doubler, "math.double")
        await until(lambda: b.transport.id in a.transport.interested_nodes("math.double"))  # type: ignore[attr-defined]
        replies = await asyncio.gather(
            *(ask(a, "math.double", Chat(n), timeout=5) for n in range(50))
        )
        assert [r.n for r in replies] == [2 * n for n in range(50)]
        assert {r.text for r in replies} == {"math.double"}
        stats_a, stats_b = a.transport.stats, b.transport.stats  # type: ignore[attr-defined]
        assert (stats_a.sent, stats_a.received, stats_a.fallbacks) == (50, 50, 0), stats_a
        await until(lambda: (stats_b.sent, stats_b.received) == (50, 50), what=f"{stats_b}")


async def test_a_subject_served_here_takes_the_local_fast_path() -> None:
    async with two_nodes("nng+tcp", REQREP) as (a, _b):
        await a.spawn(Doubler, "math.here")
        assert (await ask(a, "math.here", Chat(4), timeout=5)).n == 8
        assert a.transport.stats.sent == 0  # type: ignore[attr-defined]


async def test_remote_errors_and_no_responders_behave_as_on_the_generic_path() -> None:
    async with two_nodes("nng+tcp", REQREP) as (a, b):
        await b.spawn(Doubler, "math.double")
        await until(lambda: b.transport.id in a.transport.interested_nodes("math.double"))  # type: ignore[attr-defined]
        with pytest.raises(RemoteError, match="negative: -1") as caught:
            await ask(a, "math.double", Chat(-1), timeout=5)
        assert caught.value.remote_type == "ValueError"
        assert a.transport.stats.received == 1  # type: ignore[attr-defined]
        with pytest.raises(NoResponders):
            await ask(a, "math.nobody", Chat(1), timeout=5)
        assert any(d.reason == "no responders" for d, _ in a.recent_dead_letters)


async def test_a_serving_node_without_the_subject_answers_no_responders() -> None:
    """A request for a subject the node no longer serves gets ``NORESP`` at once."""
    async with two_nodes("nng+tcp", REQREP) as (_a, b):
        limits = b.transport.native.limits  # type: ignore[attr-defined]
        url = b.transport.native.endpoints["rep"]  # type: ignore[attr-defined]
        reply_to = f"_nng.rep.{b.transport.id}.x.1"  # type: ignore[attr-defined]
        with pynng.Req0(dial=url, recv_timeout=2000) as foreign:
            await asyncio.sleep(0.1)
            await foreign.asend(pack([REQ, "math.gone", reply_to, 1.0, []], [b"env"], limits))
            header, _ = unpack(await foreign.arecv(), limits)
        assert header == [NORESP]


async def test_a_late_reply_is_dropped_and_counted() -> None:
    async with two_nodes("nng+tcp", REQREP) as (a, b):
        await b.spawn(Doubler, "math.double")
        await until(lambda: b.transport.id in a.transport.interested_nodes("math.double"))  # type: ignore[attr-defined]
        with pytest.raises(AskTimeout):
            await ask(a, "math.double", Chat(1, "slow"), timeout=0.1)
        await until(lambda: a.stats.late_replies == 1, what="the late reply counted")
        assert (await ask(a, "math.double", Chat(2), timeout=5)).n == 4, "the next ask is fine"
        assert LATE_GRACE > 0.3


async def test_a_peer_without_a_req0_pipe_is_asked_on_the_generic_path() -> None:
    async with two_nodes("nng+tcp", REQREP) as (a, b):
        await b.spawn(Doubler, "math.double")
        await until(lambda: b.transport.id in a.transport.interested_nodes("math.double"))  # type: ignore[attr-defined]
        assert (await ask(a, "math.double", Chat(1), timeout=5)).n == 2
        lowering = a.transport.lowerings["request-reply"]  # type: ignore[attr-defined]
        lowering._requester(b.transport.id).undial(b.transport.id)  # type: ignore[attr-defined]
        assert (await ask(a, "math.double", Chat(2), timeout=5)).n == 4
        assert a.transport.stats.fallbacks == 1 and a.transport.stats.sent == 1  # type: ignore[attr-defined]


async def test_garbage_on_the_rep_endpoint_is_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with two_nodes("nng+tcp", REQREP) as (a, b):
        await assert_garbage_dead_lettered(b, "rep", pynng.Req0, "native request", caplog)
        await b.spawn(Doubler, "math.double")  # the node goes on
        await until(lambda: b.transport.id in a.transport.interested_nodes("math.double"))  # type: ignore[attr-defined]
        assert (await ask(a, "math.double", Chat(3), timeout=5)).n == 6


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_request_reply_sockets_leak_no_file_descriptor(scheme: str, no_leaks: Any) -> None:
    async def cycle() -> None:
        async with two_nodes(scheme, REQREP) as (a, b):
            await b.spawn(Doubler, "math.double")
            await until(lambda: b.transport.id in a.transport.interested_nodes("math.double"))  # type: ignore[attr-defined]
            assert (await ask(a, "math.double", Chat(1), timeout=5)).n == 2
            with pytest.raises(AskTimeout):  # a context still waiting when the node closes
                await ask(a, "math.double", Chat(1, "slow"), timeout=0.05)

    await assert_no_descriptor_leak(cycle)
    await no_leaks()
