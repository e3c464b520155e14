"""Actors and messages of the pattern conformance suite.

As in ``tests.conformance.actors``: the peer node may live in another OS
process, so these are spawned by class with plain-data arguments and report
what they see by messages to a ``Probe`` (from ``tests.conformance.actors``)
on the test's node, never through shared objects.
"""

from __future__ import annotations

import anyio

from synaptic_mesh import (
    AgentActor,
    Ballot,
    HotlineBusy,
    HotlineClosed,
    Pipeline,
    Stage,
    StageWorker,
    message,
    on,
    respond,
)
from tests.conformance.actors import Heard


@message(name="pattern_conformance.Job")
class Job:
    key: str
    n: int


@message(name="pattern_conformance.Say")
class Say:
    """Ask a bus member to send ``count`` numbered messages."""

    count: int


@message(name="pattern_conformance.Said")
class Said:
    member: str
    n: int


@message(name="pattern_conformance.Question")
class Question:
    text: str


@message(name="pattern_conformance.Call")
class CallPeer:
    """Ask a ``Caller`` (or the PAIR tests' ``Talker``) to open a line to ``peer`` and exchange
    ``count`` messages; ``hold``: seconds the line stays open after them (each actor's docs)."""

    peer: str
    count: int
    hold: float = 0.0


@message(name="pattern_conformance.Stop")
class StopListening:
    pass


class DynamicListener(AgentActor):
    """Subscribes to ``pattern`` in ``on_start``; ``StopListening`` unsubscribes."""

    def __init__(self, probe: str, pattern: str) -> None:
        self.probe = probe
        self.pattern = pattern

    async def on_start(self) -> None:
        await self.subscribe(self.pattern, self.heard)

    async def heard(self, msg: Job) -> None:
        await self.tell(self.probe, Heard(self.subject, self.current_subject, str(msg.n)))

    @on(StopListening)
    async def stop_listening(self, msg: StopListening) -> int:
        return await self.unsubscribe(self.pattern)


class Member(AgentActor):
    """A member of bus ``room``: reports what it hears; ``Say(n)`` sends n messages."""

    def __init__(self, probe: str, bus: str = "room") -> None:
        self.probe = probe
        self.bus_name = bus

    async def on_start(self) -> None:
        self.member = await self.join_bus(self.bus_name, self.heard)

    async def heard(self, msg: Said) -> None:
        text = f"{msg.member}:{msg.n}:{self.current_sender}"
        await self.tell(self.probe, Heard(self.subject, "bus", text))

    @on(Say)
    async def say(self, msg: Say) -> None:
        for n in range(msg.count):
            await self.member.send(Said(self.subject, n))


class Voter(AgentActor):
    """Answers surveys of ``council`` with a ``Ballot``; raises when ``choice`` is ``"raise"``."""

    def __init__(self, choice: str, confidence: float = 1.0) -> None:
        self.choice = choice
        self.confidence = confidence

    @respond("council")
    async def vote(self, question: Question) -> Ballot:
        if self.choice == "raise":
            raise ValueError(f"{self.subject} refuses to vote")
        return Ballot(self.choice, self.confidence, f"{self.subject} on {question.text}")


class LineEcho(AgentActor):
    """Answers hotlines: echoes each message back; ``"die"`` makes it raise."""

    async def on_hotline(self, line) -> None:  # type: ignore[no-untyped-def]
        async for msg in line:
            if msg == "die":
                raise RuntimeError("told to die")
            await line.send(f"echo {msg}")


class Caller(AgentActor):
    """Opens a line on ``CallPeer`` and reports every reply and how the line ended."""

    def __init__(self, probe: str) -> None:
        self.probe = probe

    async def report(self, what: str) -> None:
        await self.tell(self.probe, Heard(self.subject, "line", what))

    @on(CallPeer)
    async def call(self, msg: CallPeer) -> None:
        try:
            async with self.hotline(msg.peer, heartbeat=0.5) as line:
                for n in range(msg.count):
                    await line.send(str(n))
                for _ in range(msg.count):
                    await self.report(await line.receive())
                if msg.hold > 0:
                    with anyio.move_on_after(msg.hold):  # listening: a close shows at once
                        await self.report(f"unexpected {await line.receive()}")
                await line.send("die" if msg.hold < 0 else "bye")
                await self.report(f"then {await line.receive()}")
        except HotlineBusy as exc:
            await self.report(f"busy: {exc}")
        except HotlineClosed as exc:
            await self.report(f"closed: {exc.reason}")


# -- a pipeline hosted on the peer --------------------------------------------------


class Tag(StageWorker):
    """Stage worker that reports ``stage:key:n`` to the probe and passes the job on."""

    def __init__(self, probe: str) -> None:
        self.probe = probe

    async def process(self, job: Job) -> Job:
        stage = self.subject.split(".")[-2]
        await self.tell(self.probe, Heard(self.subject, stage, f"{job.key}:{job.n}"))
        return job


def job_key(job: Job) -> str:
    return job.key


class PipelineHost(AgentActor):
    """Starts pipeline ``name`` (two ``Tag`` stages) on its own node in ``on_start``."""

    def __init__(self, probe: str, name: str, workers: int, keyed: bool) -> None:
        self.spec = Pipeline(
            name,
            [Stage("first", Tag, args=(probe,)), Stage("second", Tag, args=(probe,))],
            workers=workers,
            key=job_key if keyed else None,
            prefetch=2,
            output=f"{name}.done",
        )

    async def on_start(self) -> None:
        await self.node.start_supervisor(self.spec)
