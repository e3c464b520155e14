"""Bus: every member hears every other member, never itself; membership rules."""

from __future__ import annotations

from synaptic_mesh import AgentActor, MeshError, Node, message, on
from synaptic_mesh.runtime.subjects import InvalidSubject
from tests.patterns.util import hub, until


@message(name="test_bus.Line")
class Line:
    text: str


class Member(AgentActor):
    def __init__(self, log: list[tuple[str, str | None, str]]) -> None:
        self.log = log

    async def on_start(self) -> None:
        self.membership = await self.join_bus("room", self.heard)

    async def heard(self, msg: Line) -> None:
        self.log.append((self.subject, self.current_sender, msg.text))

    @on(Line)
    async def say(self, msg: Line) -> None:
        await self.membership.send(msg)

    @on(str)
    async def command(self, text: str) -> str:
        if text == "leave":
            await self.membership.leave()
        elif text == "send-after-leave":
            try:
                await self.membership.send(Line("late"))
            except MeshError as exc:
                return str(exc)
        elif text == "join-again":
            try:
                await self.join_bus("room", self.heard)
            except ValueError as exc:
                return str(exc)
        elif text == "bad-name":
            try:
                await self.join_bus("a.b", self.heard)
            except InvalidSubject as exc:
                return exc.reason
        return "ok"


async def test_members_hear_others_not_themselves() -> None:
    log: list[tuple[str, str | None, str]] = []
    async with Node(hub()) as node:
        for name in ("m1", "m2", "m3"):
            await node.spawn(Member, f"room.{name}", log)
        await node.tell("room.m1", Line("hello"))
        await node.wait_idle(2)
        assert sorted(log) == [("room.m2", "room.m1", "hello"), ("room.m3", "room.m1", "hello")]


async def test_leaving_and_errors() -> None:
    log: list[tuple[str, str | None, str]] = []
    async with Node(hub()) as node:
        for name in ("m1", "m2"):
            await node.spawn(Member, f"room.{name}", log)
        assert "already a member" in await node.ask("room.m1", "join-again", timeout=2)
        assert "one token" in await node.ask("room.m1", "bad-name", timeout=2)
        await node.ask("room.m2", "leave", timeout=2)
        assert "has left bus 'room'" in await node.ask("room.m2", "send-after-leave", timeout=2)
        await node.tell("room.m1", Line("anyone?"))
        await node.wait_idle(2)
        assert log == []


async def test_membership_ends_when_the_member_stops() -> None:
    log: list[tuple[str, str | None, str]] = []
    async with Node(hub()) as node:
        for name in ("m1", "m2"):
            await node.spawn(Member, f"room.{name}", log)
        await node.stop("room.m2")
        await node.tell("room.m1", Line("still there?"))
        await node.wait_idle(2)
        assert log == []
        await node.spawn(Member, "room.m3", log)
        await node.tell("room.m1", Line("hi m3"))
        await until(lambda: log == [("room.m3", "room.m1", "hi m3")])
