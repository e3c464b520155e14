"""Hybrid nodes: a routes table over several transports, replies back the way they came, bridges.

The meshes here are ``tcp://`` (standing for the wide-area transport) and
``shm://`` (co-located nodes); ``tests/transports/test_nats_hybrid.py`` runs
the NATS and shared-memory deployment the seed describes. Which transport
carried a message is read from the router's per-link counters.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from synaptic_mesh import AgentActor, DeploymentError, Node, NoResponders, on
from synaptic_mesh.runtime.deployment import node_transport, parse_deployment
from synaptic_mesh.runtime.hybrid import Bridge, HybridTransport, Route
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.router import RoutedTransport
from tests.transports.peer_process import Done, Echo, Job
from tests.transports.util import FAST, until


@message(name="tests.hybrid.Blob")
class Blob:
    data: bytes


@message(name="tests.hybrid.News")
class News:
    text: str


class Sizer(AgentActor):
    @on(Blob)
    async def blob(self, msg: Blob) -> int:
        return len(msg.data)


class Counter(AgentActor):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    @on(News)
    async def news(self, msg: News) -> None:
        self.seen.append(msg.text)


def sent(transport: Any) -> int:
    """MSGs this routed transport sent over all its links."""
    assert isinstance(transport, RoutedTransport)
    return sum(transport.link_stats(peer).messages_sent for peer in transport.peer_ids())


@asynccontextmanager
async def shm_dir() -> AsyncIterator[str]:
    path = tempfile.mkdtemp(prefix="smesh-hy-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def triangle(bridges: bool = False) -> AsyncIterator[tuple[Node, Node, Node, str, str]]:
    """``y`` on tcp only, ``x`` on shm only, hybrid ``h`` on both (tcp default,
    ``photo.>`` over shm); with ``bridges``, ``h`` joins them both ways."""
    async with shm_dir() as path, Node("tcp://127.0.0.1:0", name="y", transport_options=FAST) as y:
        tcp_url = f"tcp://127.0.0.1:0?peers={y.transport.address}"  # type: ignore[attr-defined]
        shm_url = f"shm://{path}"
        links = [
            Bridge(("core.>",), source=shm_url, target=tcp_url),
            Bridge(("photo.>",), source=tcp_url, target=shm_url),
        ]
        hybrid = HybridTransport(tcp_url, [Route(("photo.>",), shm_url)], links if bridges else ())
        async with Node(hybrid, name="h") as h, Node(shm_url, name="x") as x:
            yield h, x, y, tcp_url, shm_url


async def test_routes_pick_the_transport_and_replies_go_back_the_way_they_came() -> None:
    async with triangle() as (h, x, y, tcp_url, shm_url):
        hybrid = h.transport
        assert isinstance(hybrid, HybridTransport)
        tcp, shm = hybrid.members[tcp_url], hybrid.members[shm_url]
        await x.spawn(Echo, "photo.mesher", "x")
        await y.spawn(Echo, "core.claude", "y")
        await h.spawn(Echo, "hub.echo", "h")

        before = sent(tcp), sent(shm)
        assert await h.ask("photo.mesher", Job(1), timeout=3) == Done(1, "x")
        assert (sent(tcp), sent(shm)) == (before[0], before[1] + 1), "photo.> goes over shm"
        assert await h.ask("core.claude", Job(2), timeout=3) == Done(2, "y")
        assert (sent(tcp), sent(shm)) == (before[0] + 1, before[1] + 1), "the rest over tcp"

        # an agent on each mesh reaches the hybrid node's actor, and hears back
        assert await x.ask("hub.echo", Job(3), timeout=3) == Done(3, "h")
        assert await y.ask("hub.echo", Job(4), timeout=3) == Done(4, "h")
        with pytest.raises(NoResponders):  # x is not bridged to tcp: core.* is out of its reach
            await x.ask("core.claude", Job(5), timeout=3)


async def test_bridges_carry_asks_and_publishes_both_ways_once() -> None:
    async with triangle(bridges=True) as (h, x, y, _tcp, _shm):
        await x.spawn(Echo, "photo.mesher", "x")
        await y.spawn(Echo, "core.claude", "y")
        assert await x.ask("core.claude", Job(1), timeout=3) == Done(1, "y")
        assert await y.ask("photo.mesher", Job(2), timeout=3) == Done(2, "x")

        on_y: list[str] = []
        on_x: list[str] = []
        on_h: list[str] = []
        await y.spawn(Counter, "core.news", on_y)
        await x.spawn(Counter, "photo.news", on_x)
        await h.spawn(Counter, "core.local", on_h)  # served on both meshes, and bridged
        await x.tell("core.news", News("from x"))
        await y.tell("photo.news", News("from y"))
        await x.tell("core.local", News("to h"))
        await until(lambda: on_y and on_x and on_h, what="bridged tells arrive")
        await asyncio.sleep(0.1)  # a duplicate would arrive by now
        assert (on_y, on_x, on_h) == (["from x"], ["from y"], ["to h"])

        with pytest.raises(NoResponders):  # the far mesh's verdict crosses back at once
            await x.ask("core.nobody", Job(3), timeout=3)


async def test_large_messages_take_the_shared_memory_route_when_a_peer_there_serves_them() -> None:
    async with shm_dir() as path:
        shm_url = f"shm://{path}"
        big = Route((">",), shm_url, min_size=1 << 20, when_served=True)
        # two co-located nodes with the same routes: tcp by default, shm for big messages
        async with Node(HybridTransport("tcp://127.0.0.1:0", [big]), name="a") as a:
            tcp = a.transport.members["tcp://127.0.0.1:0"]  # type: ignore[attr-defined]
            shm = a.transport.members[shm_url]  # type: ignore[attr-defined]
            b_tcp = f"tcp://127.0.0.1:0?peers={tcp.address}"
            async with Node(HybridTransport(b_tcp, [big]), name="b") as b:
                await b.spawn(Sizer, "photo.sizer")
                await until(lambda: bool(shm.peers_serving("photo.sizer")), what="b seen on shm")
                before = sent(tcp), sent(shm)
                assert await a.ask("photo.sizer", Blob(b"x" * 100), timeout=5) == 100
                assert (sent(tcp), sent(shm)) == (before[0] + 1, before[1]), "small: the default"
                payload = bytes(3 << 20)
                assert await a.ask("photo.sizer", Blob(payload), timeout=10) == len(payload)
                assert (sent(tcp), sent(shm)) == (before[0] + 1, before[1] + 1), "large: shm"
                with pytest.raises(NoResponders):  # nobody on shm serves it: the default route
                    await a.ask("photo.nobody", Blob(payload), timeout=5)
                assert sent(shm) == before[1] + 1


async def test_hybrid_capabilities_are_what_every_member_promises() -> None:
    async with shm_dir() as path:
        hybrid = HybridTransport("tcp://127.0.0.1:0", [Route(("a.>",), f"shm://{path}")])
        caps = hybrid.capabilities
        members = list(hybrid.members.values())
        assert caps.max_message == max(m.capabilities.max_message for m in members)
        assert caps.zero_copy is False  # tcp copies
        assert caps.native == frozenset() and caps.by_reference is False
        assert caps.knows_interest is True


def test_routes_and_bridges_in_a_deployment_file(tmp_path: Path) -> None:
    text = """
[node]
transport = "tcp://127.0.0.1:0"

[[route]]
subjects = ["photogrammetry.>"]
transport = "shm:///tmp/smesh-routes"

[[route]]
subjects = ">"
transport = "shm:///tmp/smesh-routes"
min_size = 1048576
when_served = true

[[bridge]]
subjects = ["core.>", "tot.>"]
source = "shm:///tmp/smesh-routes"
target = "tcp://127.0.0.1:0"

[[actor]]
class = "agents:A"
subject = "core.a"
"""
    dep = parse_deployment(text, tmp_path / "deploy.toml")
    assert dep.routes == (
        Route(("photogrammetry.>",), "shm:///tmp/smesh-routes"),
        Route((">",), "shm:///tmp/smesh-routes", min_size=1048576, when_served=True),
    )
    assert dep.bridges == (
        Bridge(("core.>", "tot.>"), "shm:///tmp/smesh-routes", "tcp://127.0.0.1:0"),
    )
    transport = node_transport(dep)
    assert isinstance(transport, HybridTransport)
    assert sorted(transport.members) == ["shm:///tmp/smesh-routes", "tcp://127.0.0.1:0"]


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('[[route]]\nsubjects = "a.>"\ntransport = "tcp://127.0.0.1:0"\nmin_sise = 1', "min_size"),
        ('[[route]]\nsubjects = "a..b"\ntransport = "tcp://127.0.0.1:0"', "a..b"),
        ('[[route]]\nsubjects = []\ntransport = "tcp://127.0.0.1:0"', "non-empty"),
        ('[[route]]\nsubjects = "a.>"\ntransport = "carrier-pigeon://x"', "unknown transport"),
        ('[[route]]\nsubjects = "a.>"', "'transport'"),
        (
            '[[bridge]]\nsubjects = "a.>"\nsource = "tcp://127.0.0.1:0"\ntarget = "tcp://127.0.0.1:0"',
            "two different transports",
        ),
    ],
)
def test_bad_route_and_bridge_tables_name_the_problem(
    tmp_path: Path, table: str, error: str
) -> None:
    node = '[node]\ntransport = "tcp://127.0.0.1:0"\n\n'
    text = f'{node}{table}\n\n[[actor]]\nclass = "m:A"\nsubject = "a.b"\n'
    with pytest.raises(DeploymentError, match=error.replace(".", r"\.").replace("*", r"\*")):
        parse_deployment(text, tmp_path / "deploy.toml")
