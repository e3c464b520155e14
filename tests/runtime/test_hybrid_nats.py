"""The seed's hybrid deployment on real servers: agents split across ``nats://`` and
``shm://``, a bridge between them, and bulk data between co-located agents kept off NATS.

Uses the NATS server at ``$SYNAPTIC_MESH_NATS_URL`` (default 127.0.0.1:4222)
under a fresh subject prefix, so concurrent runs never see each other.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np

from synaptic_mesh import AgentActor, Node, on
from synaptic_mesh.runtime.deployment import node_transport, parse_deployment
from synaptic_mesh.runtime.hybrid import HybridTransport
from synaptic_mesh.runtime.messages import message
from tests.conftest import skip_or_fail
from tests.runtime.test_hybrid import Counter, News
from tests.transports.peer_process import Done, Echo, Job
from tests.transports.util import until

NATS = os.environ.get("SYNAPTIC_MESH_NATS_URL", "nats://127.0.0.1:4222")


@message(name="tests.hybrid_nats.Cloud")
class Cloud:
    points: np.ndarray


class CloudSink(AgentActor):
    """Answers with the sum of the last row: reads the array where it arrived."""

    @on(Cloud)
    async def cloud(self, msg: Cloud) -> float:
        return float(msg.points[-1].sum())


@asynccontextmanager
async def setup() -> AsyncIterator[tuple[str, str]]:
    """A NATS URL under a fresh prefix, and a fresh shm:// URL."""
    url = f"{NATS}?prefix=t{uuid.uuid4().hex[:10]}"
    probe = Node(url, name="probe")
    try:
        await asyncio.wait_for(probe.start(), 5)
    except Exception as exc:
        skip_or_fail(f"NATS server at {NATS} unreachable: {exc!r}")
    await probe.close()
    path = tempfile.mkdtemp(prefix="smesh-hn-", dir="/tmp")
    try:
        yield url, f"shm://{path}"
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_asks_and_publishes_cross_a_nats_shm_bridge_both_ways(tmp_path) -> None:
    async with setup() as (nats_url, shm_url):
        text = f"""
[node]
name = "bridge"
transport = "{nats_url}"

[[route]]
subjects = "photo.>"
transport = "{shm_url}"

[[bridge]]
subjects = "core.>"
source = "{shm_url}"
target = "{nats_url}"

[[bridge]]
subjects = "photo.>"
source = "{nats_url}"
target = "{shm_url}"
"""
        dep = parse_deployment(
            text + '[[actor]]\nclass = "m:A"\nsubject = "x.y"\n', tmp_path / "d.toml"
        )
        async with (
            Node(node_transport(dep), name="bridge"),
            Node(nats_url, name="cloud") as cloud,
            Node(shm_url, name="local") as local,
        ):
            await cloud.spawn(Echo, "core.claude", "cloud")
            await local.spawn(Echo, "photo.mesher", "local")
            assert await local.ask("core.claude", Job(1), timeout=5) == Done(1, "cloud")
            assert await cloud.ask("photo.mesher", Job(2), timeout=5) == Done(2, "local")
            on_cloud: list[str] = []
            on_local: list[str] = []
            await cloud.spawn(Counter, "core.news", on_cloud)
            await local.spawn(Counter, "photo.news", on_local)
            await local.tell("core.news", News("shm to nats"))
            await cloud.tell("photo.news", News("nats to shm"))
            await until(lambda: on_cloud and on_local, what="both publishes crossed")
            await asyncio.sleep(0.1)
            assert (on_cloud, on_local) == (["shm to nats"], ["nats to shm"])


async def test_a_100_mb_attachment_between_co_located_agents_stays_off_nats(tmp_path) -> None:
    async with setup() as (nats_url, shm_url):
        text = f"""
[node]
transport = "{nats_url}"

[[route]]
subjects = ">"
transport = "{shm_url}"
min_size = 1048576
when_served = true

[[actor]]
class = "m:A"
subject = "x.y"
"""
        dep = parse_deployment(text, tmp_path / "deploy.toml")
        async with (
            Node(node_transport(dep), name="a") as a,
            Node(node_transport(dep), name="b") as b,
        ):
            await b.spawn(CloudSink, "photo.sink")
            await b.spawn(Echo, "photo.echo", "b")
            hybrid = a.transport
            assert isinstance(hybrid, HybridTransport)
            nats_client = hybrid.members[nats_url].client  # type: ignore[attr-defined]
            shm = hybrid.members[shm_url]
            await until(lambda: bool(shm.peers_serving("photo.sink")), what="b seen on shm")
            assert await a.ask("photo.echo", Job(1), timeout=5) == Done(1, "b")  # small: NATS
            sent_before = nats_client.stats["out_bytes"]
            points = np.ones((25_000_000 // 4, 4), dtype=np.float32)  # 100 MB
            points[-1] = [1, 2, 3, 4]
            assert await a.ask("photo.sink", Cloud(points), timeout=60) == 10.0
            carried = nats_client.stats["out_bytes"] - sent_before
            assert carried < 64 * 1024, f"{carried} bytes of the transfer went through NATS"
            assert await a.ask("photo.echo", Job(2), timeout=5) == Done(2, "b")
            assert nats_client.stats["out_bytes"] > sent_before, "small messages still use NATS"
