"""Monitors: Down on stop and on crash, once; noproc; demonitor."""

from __future__ import annotations

import asyncio

from synaptic_mesh import AgentActor, Down, Node, Supervisor, child, message, on
from tests.supervisors.kit import Child, Crash, Quit, settled, until


@message(name="test_monitors.Watch")
class Watch:
    target: str


@message(name="test_monitors.Unwatch")
class Unwatch:
    pass


class Watcher(AgentActor):
    capacity = 1  # Down must arrive even when the user lane is full

    def __init__(self, downs: list[Down]) -> None:
        self.downs = downs
        self.reference = 0

    @on(Watch)
    async def watch(self, msg: Watch) -> None:
        self.reference = self.monitor(msg.target)

    @on(Unwatch)
    async def unwatch(self, msg: Unwatch) -> None:
        self.demonitor(self.reference)

    @on(Down)
    async def down(self, msg: Down) -> None:
        self.downs.append(msg)


async def test_down_on_crash_even_when_restarted_and_only_once() -> None:
    downs: list[Down] = []
    tree = Supervisor("core", children=[child(Child, "core.a")])
    async with Node(supervise=tree) as node:
        watcher = await node.spawn(Watcher, "core.watcher", downs)
        await watcher.ask(Watch("core.a"))
        node.ref("core.a").tell_nowait(Crash("oops"))
        await settled(node)
        node.ref("core.a").tell_nowait(Crash("again"))
        await settled(node)
        assert downs == [Down("core.a", "crash: RuntimeError: oops")]


async def test_down_on_normal_stop_and_noproc_for_nobody() -> None:
    downs: list[Down] = []
    async with Node() as node:
        watcher = await node.spawn(Watcher, "core.watcher", downs)
        await node.spawn(Child, "core.a")
        await watcher.ask(Watch("core.a"))
        await watcher.ask(Watch("core.nobody"))
        node.ref("core.a").tell_nowait(Quit())
        await until(lambda: len(downs) == 2)
        assert Down("core.nobody", "noproc") in downs
        assert Down("core.a", "normal: stopped by itself") in downs


async def test_demonitor_cancels_the_down() -> None:
    downs: list[Down] = []
    async with Node() as node:
        watcher = await node.spawn(Watcher, "core.watcher", downs)
        await node.spawn(Child, "core.a")
        await watcher.ask(Watch("core.a"))
        await watcher.ask(Unwatch())
        await node.stop("core.a")
        await node.wait_idle(timeout=5)
        assert downs == []
        assert len(node._monitors) == 0


async def test_monitors_of_a_stopped_watcher_are_dropped() -> None:
    async with Node() as node:
        watcher = await node.spawn(Watcher, "core.watcher", [])
        await node.spawn(Child, "core.a")
        await watcher.ask(Watch("core.a"))
        assert len(node._monitors) == 1
        await node.stop("core.watcher")
        assert len(node._monitors) == 0


async def test_noproc_across_nodes_of_one_hub_only_when_nobody_serves() -> None:
    downs: list[Down] = []
    async with Node("inproc://monitor-hub", name="a") as a, Node("inproc://monitor-hub") as b:
        await b.spawn(Child, "core.far")
        watcher = await a.spawn(Watcher, "core.watcher", downs)
        await watcher.ask(Watch("core.far"))
        await watcher.ask(Watch("core.gone"))
        await until(lambda: len(downs) == 1)
        await asyncio.sleep(0.01)
        assert downs == [Down("core.gone", "noproc")], "core.far lives on the other node"
