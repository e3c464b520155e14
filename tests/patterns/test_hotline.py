"""Hotline: exclusive, ordered, and closing with a reason whichever way it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synaptic_mesh import (
    AgentActor,
    Hotline,
    HotlineBusy,
    HotlineClosed,
    HotlineRefused,
    Node,
    message,
    on,
)
from tests.patterns.util import hub, until


@message(name="test_hotline.Open")
class Open:
    peer: str
    plan: str = "echo"  # echo | leave | raise | hold


class Gemini(AgentActor):
    """Echoes on the line; ``"hang up"`` returns (a normal close); records how lines ended."""

    def __init__(self, ends: list[tuple[str, bool, str]]) -> None:
        self.ends = ends

    async def on_hotline(self, line: Hotline) -> None:
        try:
            async for msg in line:
                if msg == "hang up":
                    return
                await line.send(f"echo {msg}")
        except HotlineClosed as exc:
            self.ends.append(("raised", exc.normal, exc.reason))
            raise
        self.ends.append(("ended", line.closed_normally, line.closed_reason or ""))

    @on(float)
    async def busy(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Claude(AgentActor):
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    @on(Open)
    async def call(self, msg: Open) -> None:
        try:
            async with self.hotline(msg.peer, heartbeat=0.05) as line:
                self.line = line
                if msg.plan == "raise":
                    raise ValueError("changed my mind")
                for n in range(3):
                    await line.send(n)
                for _ in range(3):
                    self.log.append(await line.receive())
                if msg.plan == "hold":
                    async for extra in line:
                        self.log.append(extra)
                    self.log.append(("ended", line.closed_reason))
                if msg.plan == "peer-hangs-up":
                    await line.send("hang up")
                    async for extra in line:
                        self.log.append(extra)
                    self.log.append(("ended", line.closed_reason))
                    with pytest.raises(HotlineClosed):
                        await line.send("too late")
        except (HotlineBusy, HotlineRefused, HotlineClosed, ValueError) as exc:
            self.log.append((type(exc).__name__, str(exc)))


async def spawn_pair(node: Node) -> tuple[list[Any], list[tuple[str, bool, str]]]:
    log: list[Any] = []
    ends: list[tuple[str, bool, str]] = []
    await node.spawn(Gemini, "core.gemini", ends)
    await node.spawn(Claude, "core.claude", log)
    return log, ends


async def test_caller_hangs_up_and_the_peer_sees_a_normal_end() -> None:
    async with Node(hub()) as node:
        log, ends = await spawn_pair(node)
        await node.ask("core.claude", Open("core.gemini"), timeout=5)
        assert log == ["echo 0", "echo 1", "echo 2"]
        await until(lambda: len(ends) == 1)
        assert ends == [("ended", True, "core.claude hung up")]


async def test_peer_hangs_up_and_the_caller_iteration_ends() -> None:
    async with Node(hub()) as node:
        log, _ends = await spawn_pair(node)
        await node.ask("core.claude", Open("core.gemini", "peer-hangs-up"), timeout=5)
        assert log == ["echo 0", "echo 1", "echo 2", ("ended", "core.gemini hung up")]


async def test_a_caller_that_raises_closes_the_line_with_its_reason() -> None:
    async with Node(hub()) as node:
        log, ends = await spawn_pair(node)
        await node.ask("core.claude", Open("core.gemini", "raise"), timeout=5)
        assert log == [("ValueError", "changed my mind")]
        await until(lambda: len(ends) == 1)
        assert ends == [("raised", False, "core.claude left: ValueError: changed my mind")]
        assert node.stats.failures == 0, "the caller went away: not the peer's failure"


async def test_a_killed_peer_closes_the_line_and_the_caller_sees_why() -> None:
    async with Node(hub()) as node:
        log, _ends = await spawn_pair(node)
        call = asyncio.create_task(node.ask("core.claude", Open("core.gemini", "hold"), timeout=5))
        await until(lambda: len(log) == 3)
        await node.stop("core.gemini", timeout=0.05)  # on_hotline does not return: killed
        await call
        assert log[3] == ("HotlineClosed", "core.gemini was killed")


async def test_a_vanished_peer_node_is_detected_by_the_heartbeat() -> None:
    url = hub()
    async with Node(url, name="a") as a, Node(url, name="b") as b:
        log: list[Any] = []
        await b.spawn(Gemini, "core.gemini", [])
        await a.spawn(Claude, "core.claude", log)
        call = asyncio.create_task(a.ask("core.claude", Open("core.gemini", "hold"), timeout=5))
        await until(lambda: len(log) == 3)
        await b.transport.close()  # b falls silent without a word, as a dead process would
        await call
        assert log[3] == (
            "HotlineClosed",
            "no word from core.gemini for 0.15 s (its node may be gone)",
        )


async def test_busy_refused_and_self() -> None:
    class Lonely(AgentActor):
        pass

    async with Node(hub()) as node:
        log, _ends = await spawn_pair(node)
        other_log: list[Any] = []
        await node.spawn(Claude, "core.other", other_log)
        await node.spawn(Lonely, "core.lonely")
        first = asyncio.create_task(node.ask("core.claude", Open("core.gemini", "hold"), timeout=5))
        await until(lambda: len(log) == 3)
        await node.ask("core.other", Open("core.gemini"), timeout=5)
        assert other_log == [("HotlineBusy", "core.gemini is on a hotline with core.claude")]
        await node.ask("core.other", Open("core.lonely"), timeout=5)
        await node.ask("core.other", Open("core.nobody"), timeout=5)
        assert [kind for kind, _ in other_log[1:]] == ["HotlineRefused", "HotlineRefused"]
        claude = node._local["core.claude"].actor
        await claude.line.close()
        await first
        with pytest.raises(ValueError):
            async with claude.hotline("core.claude"):
                pass


async def test_a_line_queued_for_a_peer_that_stops_is_closed_with_the_reason() -> None:
    async with Node(hub()) as node:
        log, _ends = await spawn_pair(node)
        await node.tell("core.gemini", 10.0)  # busy: the line waits in its mailbox
        call = asyncio.create_task(node.ask("core.claude", Open("core.gemini"), timeout=5))
        await asyncio.sleep(0.05)
        await node.stop("core.gemini", timeout=0.05)
        await call
        kind, reason = log[0]
        assert kind == "HotlineClosed" and reason.startswith("core.gemini ended (")


async def test_the_same_caller_opening_again_is_answered_once_its_line_closed() -> None:
    """A caller's hang-up may travel apart from its next request (a native PAIR line has a
    socket of its own): the peer answers a request from the caller it is on a line with
    once that line has closed, instead of refusing it as busy."""
    async with Node(hub()) as node:
        await spawn_pair(node)
        claude = node._local["core.claude"].actor
        async with claude.hotline("core.gemini") as first:
            await first.send("a")
            assert await first.receive() == "echo a"

            async def hang_up_soon() -> None:
                await asyncio.sleep(0.1)
                await first.close()

            closing = asyncio.create_task(hang_up_soon())
            async with claude.hotline("core.gemini") as second:  # asked while the first is open
                assert first.closed
                await second.send("b")
                assert await second.receive() == "echo b"
            await closing


async def test_the_same_caller_still_holding_its_line_is_busy_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synaptic_mesh.patterns import hotline

    monkeypatch.setattr(hotline, "REOPEN_GRACE", 0.1)
    async with Node(hub()) as node:
        await spawn_pair(node)
        claude = node._local["core.claude"].actor
        async with claude.hotline("core.gemini") as first:
            started = asyncio.get_running_loop().time()
            with pytest.raises(HotlineBusy, match=r"on a hotline with core\.claude"):
                async with claude.hotline("core.gemini"):
                    pass
            assert asyncio.get_running_loop().time() - started >= 0.1
            await first.send("still here")
            assert await first.receive() == "echo still here"
