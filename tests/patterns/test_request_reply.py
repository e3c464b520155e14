"""Request-reply: a late reply is dropped and counted, never handed to another ask."""

from __future__ import annotations

import asyncio

import pytest

from synaptic_mesh import AgentActor, AskTimeout, Node, message, on
from synaptic_mesh.patterns.request_reply import ask
from tests.patterns.util import hub, until


@message(name="test_rr.Work")
class Work:
    n: int
    seconds: float = 0.0


class Worker(AgentActor):
    concurrency = 4  # so a slow ask and a quick one overlap

    @on(Work)
    async def work(self, msg: Work) -> int:
        await asyncio.sleep(msg.seconds)
        return msg.n


@pytest.mark.parametrize("across", [False, True], ids=["local", "through-inbox"])
async def test_late_replies_never_reach_a_later_ask(across: bool) -> None:
    url = hub()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        await (b if across else a).spawn(Worker, "rr.worker")
        for n in range(5):
            with pytest.raises(AskTimeout):
                await ask(a, "rr.worker", Work(n, 0.15), timeout=0.02)
        # The five late replies (0..4) land while these asks wait; each must get its own.
        answers = await asyncio.gather(
            *(ask(a, "rr.worker", Work(100 + n, 0.01 * (n % 5)), timeout=2) for n in range(40))
        )
        assert answers == [100 + n for n in range(40)]
        await until(lambda: a.stats.late_replies == 5)
        assert not a._pending and not a._collectors


async def test_serving_many_asks_keeps_no_state_per_ask() -> None:
    """Each reply goes to a one-time inbox slot: the serving node keeps no sequence
    counter for it (it would grow by one entry per ask served, for ever)."""
    url = hub()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        await b.spawn(Worker, "rr.worker")
        answers = [await ask(a, "rr.worker", Work(n), timeout=2) for n in range(200)]
        assert answers == list(range(200))
        assert len(b._seq) <= 2, f"{len(b._seq)} sequence counters after 200 asks"
        assert not a._pending
