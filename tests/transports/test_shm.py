"""``shm://``: Unix-socket links, attachments through shared memory, segment lifecycle.

Everything runs on real Unix sockets and real ``/dev/shm`` segments. Checks
on ``/dev/shm`` look only at segments named after this process's pid or a
child's, so tests of other sessions running at the same time do not matter.
The conformance suite runs on ``shm://`` as well (``ShmCase``), with the peer
in another process.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import shutil
import socket
import stat
import tempfile
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.transport_lookup import open_transport, transport_class
from synaptic_mesh.transports import shm_segments as segments
from synaptic_mesh.transports.base import BadFrame
from synaptic_mesh.transports.shm import ShmTransport, parse_url, socket_name
from synaptic_mesh.transports.shm_link import MARK, RELEASE, SHM, ShmConnector, ShmOptions
from synaptic_mesh.transports.stream_link import LinkLimits
from tests.transports.util import FAST, RawPeer, until, wire

REPO = Path(__file__).resolve().parents[2]
BIG = 600 * 1024  # above the default 64 KiB threshold, below 1 MiB: one 1 MiB segment


def shm_files(*pids: int) -> list[str]:
    """Segments in /dev/shm created by ``pids`` (default: this process)."""
    prefixes = tuple(f"smesh-{pid}-" for pid in (pids or (os.getpid(),)))
    return sorted(n for n in os.listdir(segments.SHM_ROOT) if n.startswith(prefixes))


@pytest.fixture(autouse=True)
def young_heap() -> Iterator[None]:
    """``gc.collect()`` here runs while links heartbeat every 0.1 s: it scans only what the
    test made. A full collection of a long test session's heap can outlast a dead link's
    0.3 s on a slow machine, and the link would be dropped under the test."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A short directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="smesh-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
    assert shm_files() == [], "a test left a segment of this process behind"


@asynccontextmanager
async def shm_nodes(
    directory: Path, *queries: str, **options: Any
) -> AsyncIterator[list[ShmTransport]]:
    """Transports started one after another in ``directory``, closed last first."""
    started: list[ShmTransport] = []
    try:
        for query in queries:
            transport = ShmTransport(f"shm://{directory}{query}", **{**FAST, **options})
            await transport.start()
            started.append(transport)
        yield started
    finally:
        for transport in reversed(started):
            await transport.close()


class Keeper:
    """A handler that keeps the frames it gets (as the user keeping a view would)."""

    def __init__(self) -> None:
        self.got: list[list[Any]] = []

    async def __call__(self, subject: str, frames: Any, reply_to: str | None) -> None:
        self.got.append(list(frames))


def through_segment(frame: Any) -> bool:
    return isinstance(frame, memoryview) and isinstance(frame.obj, segments.ReceivedSegment)


# -- URL, entry point, capabilities ------------------------------------------------------


def test_entry_point_and_truthful_capabilities() -> None:
    assert transport_class("shm:///tmp/x") is ShmTransport
    caps = ShmTransport.capabilities
    assert caps.ordered and caps.zero_copy and caps.knows_interest
    assert caps.delivery == "at-most-once"
    assert not (caps.durable or caps.replay or caps.cross_host or caps.by_reference)
    assert caps.native == frozenset()
    assert open_transport("shm:///tmp/x?max_message=4096").capabilities.max_message == 4096


def test_url_formats() -> None:
    config = parse_url("shm:///run/mesh?threshold=1MiB&pool=2G&idle=5", {"node_id": "n1"})
    assert config.directory == Path("/run/mesh") and config.discover
    assert config.settings.listen == "/run/mesh/n1.sock"
    assert (config.shm.threshold, config.shm.pool, config.shm.idle) == (1 << 20, 2 << 30, 5.0)
    listed = parse_url("shm://rel/dir?peers=/a/n2.sock,/b/n3.sock&discover=0", {"heartbeat": 0.5})
    assert listed.directory == Path("rel/dir") and not listed.discover
    assert listed.settings.peers == ("/a/n2.sock", "/b/n3.sock")
    assert listed.settings.heartbeat == 0.5
    branch = parse_url("shm:///m?role=branch&root=/m/root.sock&prefixes=photo.>", {})
    assert branch.settings.parent == "/m/root.sock" and branch.settings.topology == "tree"
    assert ShmTransport("shm:///m?role=leaf&parent=/m/b.sock").discover is False
    assert parse_url("shm://", {}).directory.name.startswith("synaptic-mesh")
    assert socket_name("a/b c-1.2") == "a_b_c-1.2.sock"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("tcp://127.0.0.1:1", "not an shm URL"),
        ("shm:///m?threshold=lots", "not a size"),
        ("shm:///m?threshold=0", "threshold must be >= 1"),
        ("shm:///m?colour=blue", "unknown option 'colour'"),
        ("shm:///m?role=branch", "needs a parent"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ShmTransport(url)


# -- discovery, sockets ------------------------------------------------------------------


async def test_nodes_in_a_directory_discover_each_other_as_a_full_mesh(shm_dir: Path) -> None:
    ghost = socket.socket(socket.AF_UNIX)  # a dead node's socket: refuses connections
    ghost.bind(str(shm_dir / "ghost.sock"))
    ghost.close()
    async with shm_nodes(shm_dir, "", "", "") as (a, b, c):
        assert sorted(a.peer_ids()) == sorted([b.id, c.id])
        assert sorted(c.peer_ids()) == sorted([a.id, b.id])
        assert not (shm_dir / "ghost.sock").exists(), "a stale socket is removed"
        assert stat.S_IMODE((shm_dir / socket_name(a.id)).stat().st_mode) == 0o600
        got = Keeper()
        await c.subscribe("mesh.>", got)
        await a.publish("mesh.x", [b"from a"])
        await b.publish("mesh.x", [b"from b"])
        await until(lambda: len(got.got) == 2)
        assert a.link_stats(b.id).messages_sent == 0, "only interested peers get traffic"
    assert list(shm_dir.glob("*.sock")) == [], "closing removes each node's socket"


async def test_a_live_node_id_is_refused_and_a_stale_one_replaced(shm_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(shm_dir / "twin.sock"))
    stale.close()
    async with shm_nodes(shm_dir, "?node_id=twin") as [twin]:
        assert twin.address == str(shm_dir / "twin.sock")
        again = ShmTransport(f"shm://{shm_dir}?node_id=twin")
        with pytest.raises(OSError) as info:
            await again.start()
        assert info.value.errno == errno.EADDRINUSE


async def test_a_node_that_went_away_is_rediscovered_when_it_comes_back(shm_dir: Path) -> None:
    async with shm_nodes(shm_dir, "?node_id=stay") as [stay]:
        async with shm_nodes(shm_dir, "?node_id=back"):
            await until(lambda: stay.peer_ids() == ["back"])
        await until(lambda: stay.peer_ids() == [])
        async with shm_nodes(shm_dir, "?node_id=back&discover=0"):  # it does not dial: stay does
            await until(lambda: stay.peer_ids() == ["back"], timeout=3)


async def test_a_node_that_cannot_be_linked_is_not_redialled_at_every_listing(
    shm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    async with shm_nodes(shm_dir, "?role=root", ""):  # a tree root and a mesh node
        await asyncio.sleep(0.5)  # five listings of DIR
    refusals = [r for r in caplog.records if "cannot be linked" in r.getMessage()]
    assert 1 <= len(refusals) <= 2, [r.getMessage() for r in refusals]


# -- frames through shared memory ----------------------------------------------------------


async def test_large_frames_arrive_as_read_only_views_and_warm_segments_are_reused(
    shm_dir: Path,
) -> None:
    async with shm_nodes(shm_dir, "", "") as (a, b):
        got = Keeper()
        await b.subscribe("bulk.>", got)
        big = os.urandom(BIG)
        threshold = a.shm.threshold
        await a.publish("bulk.x", [b"env", big, b"s" * (threshold - 1), bytearray(threshold)])
        await until(lambda: len(got.got) == 1)
        frames = got.got[0]
        assert [bytes(f) for f in frames] == [b"env", big, b"s" * (threshold - 1), bytes(threshold)]
        assert [through_segment(f) for f in frames] == [False, True, False, True]
        assert frames[1].readonly
        with pytest.raises(TypeError):
            frames[1][0] = 0
        assert a.shm_stats()["busy"] == 2 and b.shm_stats()["mapped"] == 2
        mapping = weakref.ref(frames[1].obj)
        got.got.clear()
        del frames
        gc.collect()
        assert mapping() is None, "the mapping goes with its last view"
        await until(lambda: a.shm_stats()["busy"] == 0, what="RELEASE reached the sender")
        for _ in range(3):
            await a.publish("bulk.x", [b"env", big])
            await until(lambda: len(got.got) == 1)
            assert bytes(got.got.pop()[1]) == big
            await until(lambda: a.shm_stats()["busy"] == 0)
        stats = a.shm_stats()
        assert (stats["created"], stats["reused"], stats["fallbacks"]) == (2, 3, 0)
        names = shm_files()
        assert len(names) == 2
        for name in names:
            assert stat.S_IMODE((segments.SHM_ROOT / name).stat().st_mode) == 0o600
    assert shm_files() == []


async def test_beyond_the_pool_frames_go_through_the_socket(shm_dir: Path) -> None:
    async with shm_nodes(shm_dir, "", "", pool="1MiB") as (a, b):
        got = Keeper()
        await b.subscribe("bulk.>", got)
        big = os.urandom(BIG)
        await a.publish("bulk.x", [b"1", big])
        await a.publish("bulk.x", [b"2", big])  # the first is still held: no room left
        await until(lambda: len(got.got) == 2)
        assert [through_segment(f[1]) for f in got.got] == [True, False]
        assert all(bytes(f[1]) == big for f in got.got)
        got.got.clear()
        gc.collect()
        await until(lambda: a.shm_stats()["busy"] == 0)
        await a.publish("bulk.x", [b"3", big])
        await until(lambda: len(got.got) == 1)
        assert through_segment(got.got[0][1])
        stats = a.shm_stats()
        assert (stats["created"], stats["reused"], stats["fallbacks"]) == (1, 1, 1)


async def test_idle_segments_are_unlinked(shm_dir: Path) -> None:
    async with shm_nodes(shm_dir, "", "", idle=0.1) as (a, b):
        got = Keeper()
        await b.subscribe("bulk.>", got)
        await a.publish("bulk.x", [b"env", os.urandom(BIG)])
        await until(lambda: len(got.got) == 1)
        assert len(shm_files()) == 1
        got.got.clear()
        gc.collect()
        await until(lambda: shm_files() == [], what="the idle segment is unlinked")
        assert a.shm_stats()["segments"] == 0


async def test_a_kept_view_outlives_the_link_and_close_unlinks_everything(shm_dir: Path) -> None:
    async with shm_nodes(shm_dir, "") as [a]:
        b = ShmTransport(f"shm://{shm_dir}", **FAST)
        await b.start()
        got = Keeper()
        await b.subscribe("bulk.>", got)
        big = os.urandom(BIG)
        await a.publish("bulk.x", [b"env", big])
        await until(lambda: len(got.got) == 1)
        await b.close()  # b's user keeps the view; a's link goes down and unlinks
        await until(lambda: shm_files() == [], what="link down unlinks the segments")
        assert bytes(got.got[0][1]) == big, "the mapping stays valid after the unlink"


async def test_a_frame_in_flight_survives_the_sender_closing(shm_dir: Path) -> None:
    reports: list[BadFrame] = []
    async with shm_nodes(shm_dir, "") as [b]:
        b.on_bad_frame.append(reports.append)
        got = Keeper()
        await b.subscribe("bulk.>", got)
        a = ShmTransport(f"shm://{shm_dir}", **FAST)
        await a.start()
        big = os.urandom(BIG)
        for _ in range(5):
            await a.publish("bulk.x", [b"env", big])
        await a.close()  # at once: segments must outlive the frames in flight
        await until(lambda: len(got.got) == 5)
        assert all(bytes(f[1]) == big for f in got.got) and reports == []
        assert shm_files() == []


async def test_a_graceful_close_keeps_segments_until_the_peer_has_read_them(
    shm_dir: Path,
) -> None:
    """Link level: the sender half-closes and unlinks only after the peer's EOF, and the
    peer maps what it got before it answers the EOF, so the frame is never lost."""
    connector = ShmConnector(LinkLimits(), ShmOptions())
    accepted: list[Any] = []
    listener = await connector.listen(str(shm_dir / "l.sock"), accepted.append)
    sender = await connector.dial(str(shm_dir / "l.sock"), 2.0)
    await until(lambda: accepted, what="link accepted")
    big = os.urandom(BIG)
    await sender.send([b"header", big])
    sender.close()  # at once: the peer has not read a byte yet
    assert len(shm_files()) == 1, "a frame in flight keeps its segment"
    await asyncio.wait_for(sender.wait_closed(), 3)  # the peer read all, then closed
    assert shm_files() == []
    frames = await accepted[0].recv()  # mapped before the unlink: still there
    assert through_segment(frames[1]) and bytes(frames[1]) == big
    await listener.close()


@pytest.mark.parametrize("scheme", ["shm", "tcp"])
async def test_a_message_larger_than_the_window_after_small_ones_does_not_stall(
    shm_dir: Path, scheme: str
) -> None:
    """Regression: the sender used to wait for the *whole* window to be free before a
    message larger than it, while the receiver keeps up to half a window of credit
    until more traffic comes: the second large message waited for ever."""
    first_url = f"shm://{shm_dir}" if scheme == "shm" else "tcp://127.0.0.1:0"
    options = {**FAST, "window_bytes": 64 * 1024}
    first = open_transport(first_url, **options)
    await first.start()
    second_url = first_url if scheme == "shm" else f"tcp://127.0.0.1:0?peers={first.address}"  # type: ignore[attr-defined]
    second = open_transport(second_url, **options)
    try:
        await second.start()
        got = Keeper()
        await first.subscribe("win.>", got)
        big = os.urandom(200_000)
        for i in range(3):
            await second.publish("win.big", [b"env", big])
            await second.publish("win.small", [b"small %d" % i])
        await asyncio.wait_for(until(lambda: len(got.got) == 6), 5)
        assert [bytes(f[-1]) for f in got.got[1::2]] == [b"small 0", b"small 1", b"small 2"]
    finally:
        await second.close()
        await first.close()


# -- bad input ------------------------------------------------------------------------------------


@pytest.fixture
async def healthy_pair(
    shm_dir: Path,
) -> AsyncIterator[tuple[ShmTransport, ShmTransport, list[BadFrame]]]:
    async with shm_nodes(shm_dir, "", "") as (a, b):
        reports: list[BadFrame] = []
        a.on_bad_frame.append(reports.append)
        yield a, b, reports


async def raw_unix_peer(path: str) -> RawPeer:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, path)
    return RawPeer(sock)


def control(*items: Any) -> bytes:
    return bytes([MARK]) + msgpack.packb(list(items))


def shm_msg(name: str, length: int) -> list[bytes]:
    """A SHM message for a MSG whose frame 2 (the attachment) is in segment ``name``."""
    header = proto.msg_header("bad.shm", None, [], 0)
    return [control(SHM, [[2, name, length, 1]]), header, b"envelope", b""]


async def test_bad_shared_memory_input_closes_only_that_link(
    healthy_pair: tuple[ShmTransport, ShmTransport, list[BadFrame]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, reports = healthy_pair
    caplog.set_level(logging.ERROR, logger="synaptic_mesh")
    small = segments.create_segment(65536)  # this process is the raw peer: its pid matches
    try:
        cases = [
            ([control(RELEASE, [["smesh-1-1", 1]])], "RELEASE for unknown segment 'smesh-1-1'"),
            (shm_msg(f"smesh-{os.getpid()}-999999", 4096), "does not exist"),
            (shm_msg(small.name, 1 << 20), "is 65536 bytes, too small for a frame of 1048576"),
            (shm_msg("smesh-1-1", 4096), "was not created by the peer"),
            (shm_msg("../etc/passwd", 4096), "is not a segment name"),
            ([control(SHM, [[0, small.name, 10, 1]]), b"not empty"], "is not empty"),
            ([bytes([MARK]) + b"\xc1 garbage"], "bad shared-memory message"),
            ([control(99, [])], "unknown shm operation 99"),
        ]
        for frames, expected in cases:
            reports.clear()
            raw = await raw_unix_peer(a.address or "")
            await raw.hello()
            await raw.send(wire(frames))
            assert await raw.wait_closed(), expected
            raw.close()
            await until(lambda: reports, what=f"bad frame reported: {expected}")
            assert expected in reports[0].reason, (expected, reports[0].reason)
            assert any(expected in r.getMessage() for r in caplog.records), expected
            await until(lambda: a.peer_ids() == [b.id], what="the raw peer is gone")
        got = Keeper()
        await b.subscribe("still.works", got)
        await a.publish("still.works", [b"env", os.urandom(BIG)])
        await until(lambda: len(got.got) == 1)
        assert through_segment(got.got[0][1])
    finally:
        segments.unlink_segment(small.name)
        small.map.close()


def test_pool_refuses_releases_it_did_not_expect() -> None:
    pool = segments.SegmentPool(8 << 20)
    try:
        segment = pool.acquire(100_000)
        assert segment is not None and segment.capacity == 128 * 1024
        with pytest.raises(segments.BadSegment, match="use 2, but it is use 1"):
            pool.release(segment.name, 2)
        pool.release(segment.name, 1)
        with pytest.raises(segments.BadSegment, match="not in use"):
            pool.release(segment.name, 1)
        assert pool.acquire(90_000) is segment, "a free segment that fits is reused"
        assert pool.acquire(9 << 20) is None, "beyond the pool: None, the socket takes it"
    finally:
        pool.close()
    assert shm_files() == []
