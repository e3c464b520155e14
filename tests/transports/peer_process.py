"""A node in an OS process of its own, for the kill and restart tests.

``python -m tests.transports.peer_process URL SUBJECT`` starts a ``Node`` on
``URL``, spawns an :class:`Echo` at ``SUBJECT``, prints ``READY <transport
id>`` and runs until its stdin closes (or it is killed, which is the point).
The messages live here so the test and the process register the same types.
"""

from __future__ import annotations

import asyncio
import sys

from synaptic_mesh import AgentActor, Node, message, on


@message(name="tests.links.Job")
class Job:
    n: int


@message(name="tests.links.Done")
class Done:
    n: int
    by: str


class Echo(AgentActor):
    """Answers a ``Job`` with ``Done`` naming the node that did it."""

    def __init__(self, node_name: str = "") -> None:
        self.node_name = node_name

    @on(Job)
    async def job(self, msg: Job) -> Done:
        return Done(msg.n, self.node_name)


async def main(url: str, subject: str) -> None:
    async with Node(url, name="child") as node:
        await node.spawn(Echo, subject, "child")
        print("READY", node.transport.id, flush=True)  # type: ignore[attr-defined]
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
