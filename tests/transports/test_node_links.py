"""A node on a link transport: remote monitors and bad frames as dead letters."""

from __future__ import annotations

import asyncio
import signal
import time

from synaptic_mesh import AgentActor, Down, Node, message, on
from tests.transports.peer_process import Done, Job
from tests.transports.test_router import child_node
from tests.transports.util import RawPeer, until


@message(name="test_node_links.Watch")
class Watch:
    target: str


class Watcher(AgentActor):
    def __init__(self, downs: list[Down]) -> None:
        self.downs = downs

    @on(Watch)
    async def watch(self, msg: Watch) -> None:
        self.monitor(msg.target)

    @on(Down)
    async def down(self, msg: Down) -> None:
        self.downs.append(msg)


async def test_monitor_of_a_remote_actor_fires_when_its_node_is_killed() -> None:
    downs: list[Down] = []
    url = "tcp://127.0.0.1:0?heartbeat=0.2&misses=3"
    async with Node(url, name="home") as node:
        watcher = await node.spawn(Watcher, "home.watcher", downs)
        child_url = f"tcp://127.0.0.1:0?peers={node.transport.address}&heartbeat=0.2&misses=3"  # type: ignore[attr-defined]
        async with child_node(child_url, "remote.echo") as (proc, _child_id):
            assert await node.ask("remote.echo", Job(1), timeout=5) == Done(1, "child")
            await watcher.ask(Watch("remote.echo"))
            await watcher.ask(Watch("remote.nobody"))
            await until(lambda: Down("remote.nobody", "noproc") in downs)
            assert [d.subject for d in downs] == ["remote.nobody"], "a live remote is not down"
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await until(lambda: len(downs) == 2, timeout=5)
            assert time.monotonic() - killed < 2.0
            down = downs[1]
            assert down.subject == "remote.echo"
            assert down.reason.startswith("noconnection: node ")


async def test_bad_input_from_a_foreign_peer_is_a_dead_letter() -> None:
    async with Node("tcp://127.0.0.1:0", name="home") as node:
        raw = await RawPeer.connect(node.transport.address)  # type: ignore[attr-defined]
        await raw.send(b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n")
        assert await raw.wait_closed()
        await until(lambda: any("bad frame from" in d.reason for d, _ in node.recent_dead_letters))
        letter = next(d for d, _ in node.recent_dead_letters if "bad frame from" in d.reason)
        assert "preamble" in letter.reason
        assert letter.subject == "_mesh.link"
        raw.close()
        await asyncio.sleep(0)


async def test_an_undecodable_envelope_from_a_peer_is_dead_lettered_and_published() -> None:
    """The node receives it in a link's callback (no task): the dead letter must still go out."""
    from synaptic_mesh.transports.tcp import TcpTransport
    from tests.transports.peer_process import Echo
    from tests.transports.util import FAST, Collector

    async with Node("tcp://127.0.0.1:0", name="home") as node:
        await node.spawn(Echo, "svc.echo")
        peer = TcpTransport(f"tcp://127.0.0.1:0?peers={node.transport.address}", **FAST)  # type: ignore[attr-defined]
        await peer.start()
        try:
            dead = Collector()
            await peer.subscribe("_mesh.dead", dead)
            await peer.publish("svc.echo", [b"\xc1 not msgpack"])
            await until(lambda: bool(dead.got), what="the dead letter published on _mesh.dead")
            assert node.stats.decode_errors == 1
            assert await node.ask("svc.echo", Job(1), timeout=3) == Done(1, "")
        finally:
            await peer.close()


@message(name="test_node_links.Note")
class Note:
    n: int


class Sink(AgentActor):
    def __init__(self, got: list[int]) -> None:
        self.got = got

    @on(Note)
    async def note(self, msg: Note) -> None:
        self.got.append(msg.n)


async def test_an_undecodable_envelope_inside_a_msgs_is_dead_lettered_the_rest_delivered() -> None:
    from tests.transports.util import FAST

    got: list[int] = []
    async with Node("tcp://127.0.0.1:0", name="home", transport_options=FAST) as home:
        await home.spawn(Sink, "svc.sink", got)
        url = f"tcp://127.0.0.1:0?peers={home.transport.address}"  # type: ignore[attr-defined]
        async with Node(url, name="far", transport_options=FAST) as far:
            await until(lambda: bool(far.transport.peers_serving("svc.sink")))
            # one turn of the loop: the first tell goes alone, the rest in one MSGS
            await far.tell("svc.sink", Note(1))
            await far.tell("svc.sink", Note(2))
            assert far.transport.publish_now("svc.sink", [b"\xc1 not msgpack"])  # type: ignore[attr-defined]
            await far.tell("svc.sink", Note(3))
            await until(lambda: got == [1, 2, 3], what="the good messages, in order")
            assert home.stats.decode_errors == 1
            assert any("decode error" in d.reason for d, _ in home.recent_dead_letters)
            stats = home.transport.link_stats(far.transport.id)  # type: ignore[attr-defined]
            assert stats.batches_received == 1 and stats.messages_received == 4


async def test_monitor_of_a_remote_actor_fires_when_it_stops_and_its_node_lives() -> None:
    from tests.transports.peer_process import Echo
    from tests.transports.util import FAST

    downs: list[Down] = []
    async with Node("tcp://127.0.0.1:0", name="home", transport_options=FAST) as home:
        watcher = await home.spawn(Watcher, "home.watcher", downs)
        away_url = f"tcp://127.0.0.1:0?peers={home.transport.address}"  # type: ignore[attr-defined]
        async with Node(away_url, name="away", transport_options=FAST) as away:
            await away.spawn(Echo, "remote.echo", "away")
            await away.spawn(Echo, "remote.other", "away")
            assert await home.ask("remote.echo", Job(1), timeout=5) == Done(1, "away")
            await watcher.ask(Watch("remote.echo"))
            await watcher.ask(Watch("remote.other"))
            await away.stop("remote.echo")
            await until(lambda: bool(downs), what="Down for the stopped actor")
            await asyncio.sleep(0.05)
            assert [d.subject for d in downs] == ["remote.echo"], "the other actor lives on"
            assert downs[0].reason.startswith("gone: node ")
