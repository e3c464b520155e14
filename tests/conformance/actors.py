"""Actors and messages of the conformance suite.

They live in an importable module of their own because the peer node may run
in another OS process: it spawns them by class path, and they report what
they see by messages to a ``Probe`` on the test's own node, never through
shared Python objects.
"""

from __future__ import annotations

import asyncio

from synaptic_mesh import AgentActor, message, on, subscribe


@message(name="conformance.Ping")
class Ping:
    n: int


@message(name="conformance.Pong")
class Pong:
    n: int
    by: str


@message(name="conformance.Explore")
class Explore:
    branch: str
    idea: str


@message(name="conformance.Slow")
class Slow:
    seconds: float


@message(name="conformance.Boom")
class Boom:
    text: str


@message(name="conformance.Report")
class Report:
    """Ask an Echo what it has seen."""


@message(name="conformance.Seen")
class Seen:
    numbers: list[int]


@message(name="conformance.Heard")
class Heard:
    """What a remote actor reports to the probe."""

    actor: str
    subject: str
    text: str


class Echo(AgentActor):
    """Replies to pings, remembers them, sleeps on Slow, raises on Boom."""

    def __init__(self, probe: str | None = None) -> None:
        self.seen: list[int] = []
        self.probe = probe

    @on(Ping)
    async def ping(self, msg: Ping) -> Pong:
        self.seen.append(msg.n)
        return Pong(msg.n, self.subject)

    @on(Slow)
    async def slow(self, msg: Slow) -> str:
        await asyncio.sleep(msg.seconds)
        return "finally"

    @on(Boom)
    async def boom(self, msg: Boom) -> None:
        raise ValueError(msg.text)

    @on(Report)
    async def report(self, msg: Report) -> Seen:
        return Seen(list(self.seen))

    async def on_stop(self) -> None:
        if self.probe is not None:
            await self.tell(self.probe, Heard(self.subject, self.subject, "stopped"))


class Explorer(AgentActor):
    """Reports every exploration it hears to the probe."""

    def __init__(self, probe: str) -> None:
        self.probe = probe

    @subscribe("tot.*.exploration")
    async def explored(self, msg: Explore) -> None:
        await self.tell(self.probe, Heard(self.subject, self.current_subject, msg.idea))


class Worker(AgentActor):
    """A member of queue group ``workers`` on ``jobs.>``; reports each job."""

    def __init__(self, probe: str) -> None:
        self.probe = probe

    @subscribe("jobs.>", queue="workers")
    async def work(self, msg: Ping) -> None:
        await self.tell(self.probe, Heard(self.subject, self.current_subject, str(msg.n)))


class Probe(AgentActor):
    """Collects ``Heard`` reports on the test's node."""

    capacity = 100_000

    def __init__(self, log: list[Heard]) -> None:
        self.log = log

    @on(Heard)
    async def heard(self, msg: Heard) -> None:
        self.log.append(msg)
