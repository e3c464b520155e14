"""The transports every conformance test runs on: add a case here to join.

A case opens two started nodes on one mesh (``async with case.pair() as (a, b)``)
and names the transport's URL scheme. Later transports append a case whose
nodes live in separate processes or talk through a real broker.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from synaptic_mesh.transports.base import Transport

from synaptic_mesh import Node

_names = itertools.count(1)


@dataclass(frozen=True)
class TransportCase:
    """How to open a two-node mesh on one transport."""

    name: str
    url_template: str  # "{n}" is replaced by a fresh number per mesh

    def url(self) -> str:
        return self.url_template.format(n=next(_names))

    @asynccontextmanager
    async def pair(self, **node_options: Any) -> AsyncIterator[tuple[Node, Node]]:
        url = self.url()
        async with (
            Node(url, name="a", **node_options) as a,
            Node(url, name="b", **node_options) as b,
        ):
            yield a, b

    @asynccontextmanager
    async def transports(self) -> AsyncIterator[tuple[Transport, Transport]]:
        """Two started raw transports on one mesh, for SPI-level tests."""
        from synaptic_mesh.runtime.transport_lookup import open_transport

        url = self.url()
        first, second = open_transport(url), open_transport(url)
        await first.start()
        await second.start()
        try:
            yield first, second
        finally:
            await second.close()
            await first.close()


CASES = [
    TransportCase("inproc", "inproc://conformance-{n}"),
]
