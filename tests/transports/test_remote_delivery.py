"""A message from another node, handled in the link's callback as the actor's own task.

While an actor sleeps on an empty mailbox, a message that arrives on a link
is handled right in the link's callback (``Dispatcher.run_now``) instead of
waking the actor's task. These tests pin down that nothing an actor can see
differs from a message its task took from the mailbox.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from synaptic_mesh import AgentActor, AskTimeout, Node, RemoteError, message, on

NAME: contextvars.ContextVar[str] = contextvars.ContextVar("NAME", default="unset")


@message(name="test_remote_delivery.Probe")
class Probe:
    """What the handler saw: the task it ran as and a context var set in ``on_start``."""

    text: str


@message(name="test_remote_delivery.Slow")
class Slow:
    n: int
    wait: float


@message(name="test_remote_delivery.Timed")
class Timed:
    limit: float


@message(name="test_remote_delivery.SelfCancel")
class SelfCancel:
    """The handler cancels its own task before its first wait."""


def called_from(name: str) -> bool:
    """Whether a function called ``name`` is on the current call stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class Seer(AgentActor):
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen
        self.task: asyncio.Task[Any] | None = None

    async def on_start(self) -> None:
        self.task = asyncio.current_task()
        NAME.set("set in on_start")

    @on(Probe)
    async def probe(self, msg: Probe) -> str:
        self.seen.append((msg.text, asyncio.current_task() is self.task, NAME.get()))
        self.seen.append(("in the callback", called_from("run_now")))
        NAME.set(msg.text)  # stays in the actor's context, as it would in its task
        return msg.text

    @on(Slow)
    async def slow(self, msg: Slow) -> int:
        self.seen.append(("begin", msg.n))
        if msg.wait:
            await asyncio.sleep(msg.wait)
        self.seen.append(("end", msg.n))
        return msg.n

    @on(Timed)
    async def timed(self, msg: Timed) -> str:
        try:
            async with asyncio.timeout(msg.limit):
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        finally:
            self.seen.append(("left", msg.limit))
        return "slept"

    @on(SelfCancel)
    async def self_cancel(self, msg: SelfCancel) -> str:
        task = asyncio.current_task()
        assert task is self.task
        task.cancel()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            task.uncancel()
            return "caught"
        return "not cancelled"


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[Node, Node]]:
    """``home`` runs the actors; ``away`` sends to them over TCP."""
    async with Node("tcp://127.0.0.1:0", name="home") as home:
        address = home.transport.address  # type: ignore[attr-defined]
        async with Node(f"tcp://127.0.0.1:0?peers={address}", name="away") as away:
            yield home, away


async def test_an_idle_actor_handles_a_remote_ask_as_its_own_task_in_its_context() -> None:
    seen: list[Any] = []
    async with two_nodes() as (home, away):
        cell = await home.spawn(Seer, "svc.seer", seen)
        assert await away.ask("svc.seer", Probe("one"), timeout=5) == "one"
        assert await away.ask("svc.seer", Probe("two"), timeout=5) == "two"
        # A local ask goes through the mailbox and the task: the same view.
        assert await cell.ask(Probe("three"), timeout=5) == "three"
    assert seen == [
        ("one", True, "set in on_start"),
        ("in the callback", True),
        ("two", True, "one"),
        ("in the callback", True),
        ("three", True, "two"),
        ("in the callback", False),
    ]


async def test_a_handler_that_waits_is_finished_by_the_task_before_the_next_message() -> None:
    seen: list[Any] = []
    async with two_nodes() as (home, away):
        await home.spawn(Seer, "svc.seer", seen)
        asks = [
            asyncio.create_task(away.ask("svc.seer", Slow(n, 0.05 if n == 0 else 0), timeout=5))
            for n in range(4)
        ]
        assert await asyncio.gather(*asks) == [0, 1, 2, 3]
    assert seen == [(step, n) for n in range(4) for step in ("begin", "end")]


@pytest.mark.parametrize("limit", [0, 0.02])
async def test_asyncio_timeout_in_a_handler_begun_in_the_callback(limit: float) -> None:
    """``asyncio.timeout`` cancels the task it was entered in: the handler's, even when
    the deadline passes before the task took the handler over (limit 0)."""
    seen: list[Any] = []
    async with two_nodes() as (home, away):
        await home.spawn(Seer, "svc.seer", seen)
        assert await away.ask("svc.seer", Timed(limit), timeout=5) == "timed out"
        assert await away.ask("svc.seer", Probe("after"), timeout=5) == "after"
    assert seen[0] == ("left", limit)


async def test_a_handler_cancelling_its_own_task_before_it_waits_gets_the_cancellation() -> None:
    """The cancellation reaches the drain task while it still sleeps on the mailbox: it is
    passed on to the handler, at its first wait, as in a task that ran it from the start."""
    async with two_nodes() as (home, away):
        await home.spawn(Seer, "svc.seer", [])
        assert await away.ask("svc.seer", SelfCancel(), timeout=5) == "caught"
        assert await away.ask("svc.seer", Probe("still alive"), timeout=5) == "still alive"


async def test_stopping_an_actor_cancels_the_handler_it_began_in_the_callback() -> None:
    seen: list[Any] = []
    async with two_nodes() as (home, away):
        await home.spawn(Seer, "svc.seer", seen)
        ask = asyncio.create_task(away.ask("svc.seer", Slow(7, 30), timeout=1))
        while ("begin", 7) not in seen:
            await asyncio.sleep(0.01)
        await home.stop("svc.seer", timeout=0.05)
        assert "svc.seer" not in home._local
        with pytest.raises(AskTimeout):  # a remote asker learns it by its timeout, as ever
            await ask
    assert ("end", 7) not in seen


async def test_a_handler_that_raises_in_the_callback_is_reported_and_the_actor_goes_on() -> None:
    class Fragile(AgentActor):
        @on(str)
        async def text(self, msg: str) -> str:
            if msg == "boom":
                raise ValueError("boom")
            return msg

    async with two_nodes() as (home, away):
        await home.spawn(Fragile, "svc.fragile")
        with pytest.raises(RemoteError, match="boom"):
            await away.ask("svc.fragile", "boom", timeout=5)
        assert await away.ask("svc.fragile", "fine", timeout=5) == "fine"
        assert home.stats.failures == 1
