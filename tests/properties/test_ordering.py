"""Property: per-sender FIFO, exactly once, for generated interleavings (inproc, tcp).

Several senders each send a numbered sequence to several receivers, mixing
``await tell``, ``tell_nowait`` and ``ask``, yielding to the loop at generated
points, some from the receivers' own node (the local fast path) and some from
a second node on the same hub, or linked over TCP (through the transport). Every
receiver must see each sender's messages in the order sent, each exactly once.
Over TCP, tells sent without a pause travel gathered in MSGS and the receivers'
small mailboxes fill in the middle of one, so its delivery waits part-way. A
receiver's handler may wait a few loop turns: an ask that found it idle was
begun in the link's callback, and its task finishes it while later messages
queue behind.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synaptic_mesh import AgentActor, MailboxFull, Node, message, on


@message(name="test_ordering.Numbered")
class Numbered:
    sender: str
    n: int
    wait: int = 0  # loop turns the handler waits before it records the message


class Receiver(AgentActor):
    capacity = 16  # small, so the block policy and back-pressure are exercised

    def __init__(self, log: dict[str, list[int]]) -> None:
        self.log = log

    @on(Numbered)
    async def got(self, msg: Numbered) -> int:
        for _ in range(msg.wait):
            await asyncio.sleep(0)
        self.log[msg.sender].append(msg.n)
        return msg.n


SendOp = st.sampled_from(["tell", "tell_nowait", "ask"])
SenderPlan = st.tuples(
    st.booleans(),  # from the remote node?
    st.integers(min_value=0, max_value=2),  # receiver index
    st.lists(
        st.tuples(  # how to send, loop turns to pause after, turns the handler waits
            SendOp, st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=2)
        ),
        min_size=1,
        max_size=40,
    ),
)

_hubs = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plans=st.lists(SenderPlan, min_size=1, max_size=6))
def test_per_sender_fifo_exactly_once(plans) -> None:
    url = f"inproc://ordering-{next(_hubs)}"
    asyncio.run(_run(plans, url, url))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plans=st.lists(SenderPlan, min_size=1, max_size=6))
def test_per_sender_fifo_exactly_once_over_tcp(plans) -> None:
    asyncio.run(_run(plans, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0?peers={home}"))


async def _run(plans, home_url: str, away_url: str) -> None:
    logs = [defaultdict(list) for _ in range(3)]
    async with Node(home_url, name="home") as home:
        address = getattr(home.transport, "address", "")
        async with Node(away_url.format(home=address), name="away") as away:
            await _exchange(plans, home, away, logs)
    for k, (_remote, target, ops) in enumerate(plans):
        assert logs[target][f"s{k}"] == list(range(len(ops)))
    total = sum(len(ops) for _, _, ops in plans)
    assert sum(len(v) for log in logs for v in log.values()) == total


async def _exchange(plans, home: Node, away: Node, logs: list[dict[str, list[int]]]) -> None:
    for i in range(3):
        await home.spawn(Receiver, f"recv.r{i}", logs[i])
    for i in range(3):  # a linked node learns of them through interest
        await _served(away, f"recv.r{i}")

    async def sender(name: str, remote: bool, target: int, ops) -> None:
        node = away if remote else home
        ref = node.ref(f"recv.r{target}")
        for n, (op, pause, wait) in enumerate(ops):
            msg = Numbered(name, n, wait)
            if op == "tell":
                await ref.tell(msg)
            elif op == "ask":
                assert await ref.ask(msg, timeout=10) == n
            else:
                while True:
                    try:
                        ref.tell_nowait(msg)
                        break
                    except MailboxFull:
                        await asyncio.sleep(0)
            for _ in range(pause):
                await asyncio.sleep(0)

    await asyncio.gather(
        *(sender(f"s{k}", remote, target, ops) for k, (remote, target, ops) in enumerate(plans))
    )
    total = sum(len(ops) for _, _, ops in plans)
    for _ in range(2000):  # tells from the linked node may still be on their way
        if sum(len(v) for log in logs for v in log.values()) >= total:
            break
        await asyncio.sleep(0.005)
    await home.wait_idle(timeout=10)
    await away.wait_idle(timeout=10)


async def _served(node: Node, subject: str) -> None:
    peers_serving = getattr(node.transport, "peers_serving", None)
    for _ in range(500):
        if peers_serving is None or peers_serving(subject):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{subject} never became known to {node.name}")
