"""A conformance peer node in an OS process of its own.

``python -m tests.conformance.remote_peer URL NAME`` starts a ``Node`` on
``URL`` with a control actor at ``_ctl.NAME`` that spawns actors by class
path, reports the node's counters and closes the node on request; it prints
``READY`` once the control actor is reachable and exits when the node has
closed or its stdin closes. :class:`RemotePeer` is the test side.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from synaptic_mesh import AgentActor, Node, message, on
from synaptic_mesh.runtime.deployment import load_class

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


@message(name="conformance.ctl.Spawn")
class Spawn:
    class_path: str
    subject: str
    args: list[Any]


@message(name="conformance.ctl.Stats")
class Stats:
    pass


@message(name="conformance.ctl.Close")
class Close:
    pass


class Control(AgentActor):
    """Spawns, reports and closes on behalf of the test in the other process."""

    def __init__(self, closing: asyncio.Event) -> None:
        self.closing = closing

    @on(Spawn)
    async def spawn(self, msg: Spawn) -> str:
        await self.node.spawn(load_class(msg.class_path), msg.subject, *msg.args)
        return msg.subject

    @on(Stats)
    async def stats(self, msg: Stats) -> dict[str, int]:
        return asdict(self.node.stats)

    @on(Close)
    async def close(self, msg: Close) -> str:
        self.closing.set()
        return "closing"


async def serve(url: str, name: str) -> None:
    closing = asyncio.Event()
    async with Node(url, name=name) as node:
        await node.spawn(Control, f"_ctl.{name}", closing)
        print("READY", flush=True)
        stdin_closed = asyncio.ensure_future(asyncio.to_thread(sys.stdin.read))
        await asyncio.wait(
            [stdin_closed, asyncio.ensure_future(closing.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        await node.stop(f"_ctl.{name}")  # its reply to Close is on its way out
        node.shutdown_timeout = 2.0
    stdin_closed.cancel()
    os._exit(0)  # the stdin reader thread cannot be interrupted


class RemotePeer:
    """The test's handle on a peer process (see ``transports.Peer``)."""

    def __init__(self, driver: Node, url: str, name: str) -> None:
        self.driver = driver
        self.url = url
        self.name = name
        self.process: asyncio.subprocess.Process | None = None
        self.control = f"_ctl.{name}"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # uvloop runs Python's after-fork hooks in the child before it execs; a garbage
        # collection there that finalizes a closed test's pynng socket makes nng panic
        # ("not fork-reentrant safe"). Nothing is left to collect if it is collected now.
        gc.collect()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.conformance.remote_peer",
            self.url,
            self.name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT)
        if line.strip() != b"READY":
            await self.kill()
            raise RuntimeError(f"peer process did not start: {line!r}")

    async def spawn(self, actor_class: type, subject: str, *args: Any) -> None:
        path = f"{actor_class.__module__}:{actor_class.__qualname__}"
        await self.driver.ask(self.control, Spawn(path, subject, list(args)), timeout=10)

    async def stats(self) -> dict[str, int]:
        return await self.driver.ask(self.control, Stats(), timeout=10)

    async def close(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.driver.ask(self.control, Close(), timeout=5)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
