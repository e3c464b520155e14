"""Actors and helpers shared by the supervision tests.

Every child writes its lifecycle into a shared ``events`` list, so a test
can check which children restarted and in which order they stopped and
started again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from synaptic_mesh import AgentActor, Node, message, on
from synaptic_mesh.supervisors.runtime import SupervisorRuntime


@message(name="test_sup.Crash")
class Crash:
    why: str = "boom"


@message(name="test_sup.Quit")
class Quit:
    """Ask the child to stop itself (a normal exit)."""


@message(name="test_sup.Bump")
class Bump:
    """Increment and return the child's counter (state that a restart resets)."""


@message(name="test_sup.Hang")
class Hang:
    seconds: float


EVENTS: list[tuple[str, str]] = []


class Child(AgentActor):
    def __init__(self, events: list[tuple[str, str]] | None = None) -> None:
        self.events = EVENTS if events is None else events
        self.counter = 0

    async def on_start(self) -> None:
        self.events.append(("start", self.subject))

    async def on_restart(self, reason: str) -> None:
        self.events.append(("restart", self.subject))

    async def on_stop(self) -> None:
        self.events.append(("stop", self.subject))

    @on(Crash)
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.why)

    @on(Quit)
    async def quit(self, msg: Quit) -> None:
        self.stop()

    @on(Bump)
    async def bump(self, msg: Bump) -> int:
        self.counter += 1
        return self.counter

    @on(Hang)
    async def hang(self, msg: Hang) -> None:
        await asyncio.sleep(msg.seconds)


async def settled(node: Node, timeout: float = 5.0) -> None:
    """Wait until every supervisor has handled every exit and all actors are idle."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [
            s
            for s in list(node._supervisors.values())
            if s._events or s._pumping or s._lock.locked()
        ]
        waiting = [c for c in node._local.values() if c.awaiting_instruction]
        if not busy and not waiting and (node.failure or _idle(node)):
            await asyncio.sleep(0.002)
            if not any(s._events or s._pumping for s in list(node._supervisors.values())):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"supervision did not settle: busy={busy} waiting={waiting}")
        await asyncio.sleep(0.001)


def _idle(node: Node) -> bool:
    return node._idle_now()


def incarnations(node: Node) -> dict[str, int]:
    """Current incarnation number of every live actor."""
    return {s: c.incarnation for s, c in node._local.items()}


def names(events: list[tuple[str, str]], kind: str) -> list[str]:
    return [name for k, name in events if k == kind]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def sup(node: Node, name: str) -> SupervisorRuntime:
    return node.supervisor(name)
