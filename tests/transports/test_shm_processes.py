"""``shm://`` across OS processes: a 100 MB numpy array without a copy, and orphans.

The sender of the array and the creator of orphaned segments are child
processes, so the pids in segment names, ``SO_PEERCRED`` and the RELEASE path
back to another process are all real. Helpers come from ``test_shm``.

Note on the 100 MB test: an actor's mailbox loop keeps the last message it
handled until it takes the next one (``actors/dispatch.py``), so the test
sends the actor one more message before it checks that dropping the array
unmapped the segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import stat
import subprocess
import sys
import weakref
import zlib
from pathlib import Path
from typing import Any

import pytest

from synaptic_mesh import AgentActor, Node, message, on
from synaptic_mesh.transports import shm_segments as segments
from tests.transports.test_shm import REPO, shm_dir, shm_files, shm_nodes
from tests.transports.util import until

try:
    import numpy as np
except ImportError:  # numpy is optional: only the 100 MB array test needs it
    np = None

__all__ = ["shm_dir"]  # the fixture, imported for the tests below


# -- a 100 MB numpy attachment between two processes --------------------------------------

SENDER = r"""
import asyncio, json, sys, zlib
import numpy as np
from synaptic_mesh import Node, message

@message(name="tests.shm.Bulk")
class Bulk:
    data: np.ndarray
    crc: int

async def main(url):
    async with Node(url, name="sender") as node:
        data = np.arange(26_214_400, dtype=np.float32) * np.float32(0.5)  # 100 MiB
        for _ in range(2):
            await node.ask("bulk.sink", Bulk(data, zlib.crc32(data)), timeout=30)
            print(json.dumps(node.transport.shm_stats()), flush=True)
            await asyncio.to_thread(sys.stdin.readline)

asyncio.run(main(sys.argv[1]))
"""


@message(name="tests.shm.Bulk")
class Bulk:
    data: np.ndarray  # resolved when first decoded: numpy stays optional for the module
    crc: int


@message(name="tests.shm.Nudge")
class Nudge:
    """A message that only makes the actor take its next message."""


class Sink(AgentActor):
    """Keeps every ``Bulk`` it gets, as a user holding on to the array would."""

    def __init__(self, kept: list[Any]) -> None:
        self.kept = kept

    @on(Bulk)
    async def bulk(self, msg: Bulk) -> str:
        self.kept.append(msg)
        return "ok"

    @on(Nudge)
    async def nudge(self, msg: Nudge) -> str:
        return "ok"


async def test_100mb_numpy_attachment_arrives_intact_without_a_copy(shm_dir: Path) -> None:
    if np is None:
        pytest.skip("numpy is not installed")
    kept: list[Any] = []
    async with Node(f"shm://{shm_dir}", name="sink") as node:  # default heartbeat: numpy blocks
        await node.spawn(Sink, "bulk.sink", kept)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SENDER,
            f"shm://{shm_dir}",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            msg = kept.pop()
            array = msg.data
            assert array.shape == (26_214_400,) and array.dtype == np.float32
            assert zlib.crc32(array) == msg.crc and array[-1] == np.float32(26_214_399 * 0.5)
            assert not array.flags.writeable
            owner: Any = array
            while not isinstance(owner, segments.ReceivedSegment):  # ndarray -> ... -> mapping
                owner = owner.obj if isinstance(owner, memoryview) else owner.base
            assert np.shares_memory(array, np.frombuffer(owner, dtype=np.uint8)), "no copy"
            assert len(owner) == array.nbytes
            assert first["created"] == 1 and node.transport.shm_stats()["mapped"] == 1  # type: ignore[attr-defined]
            assert len(shm_files(proc.pid)) == 1
            mapping = weakref.ref(owner)
            del msg, array, owner
            await node.ask("bulk.sink", Nudge(), timeout=5)  # see the note at the top
            gc.collect()
            assert mapping() is None, "dropping the array unmaps the segment"
            await asyncio.sleep(0.05)  # RELEASE on its way: the next send reuses the segment
            proc.stdin.write(b"again\n")
            second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            assert (second["created"], second["reused"]) == (1, 1), second
            assert zlib.crc32(kept[0].data) == kept[0].crc
            kept.clear()
            proc.stdin.write(b"done\n")
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        assert shm_files(proc.pid) == [], "the sender's segments are gone once it closed"
    assert shm_files(proc.pid, os.getpid()) == []


# -- orphans of a killed process ---------------------------------------------------------------

CREATOR = (
    "import sys\n"
    "from synaptic_mesh.transports.shm_segments import create_segment\n"
    "made = [create_segment(65536) for _ in range(3)]\n"
    "print(' '.join(s.name for s in made), flush=True)\n"
    "sys.stdin.read()\n"
)


def creator() -> tuple[subprocess.Popen[bytes], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CREATOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().split()


async def test_orphans_of_a_killed_process_are_swept_at_start(shm_dir: Path) -> None:
    victim, orphans = creator()
    survivor, alive = creator()
    try:
        assert shm_files(victim.pid) == sorted(orphans) and len(orphans) == 3
        for name in orphans:
            assert stat.S_IMODE((segments.SHM_ROOT / name).stat().st_mode) == 0o600
        victim.send_signal(signal.SIGKILL)  # not reaped yet: a zombie is dead too
        await until(lambda: not segments.pid_alive(victim.pid), what="victim dead")
        async with shm_nodes(shm_dir, ""):
            assert shm_files(victim.pid) == [], "the killed process's segments are swept"
            assert shm_files(survivor.pid) == sorted(alive), "a live process's are kept"
    finally:
        for proc in (victim, survivor):
            proc.kill()
            proc.wait()
    assert set(alive) <= set(segments.sweep_orphans())
    assert shm_files(victim.pid, survivor.pid) == []
