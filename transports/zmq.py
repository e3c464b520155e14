"""``zmq://host:port``: ZeroMQ ROUTER-DEALER links, routed by the shared subject router.

This is the seed's request-reply layout (a root router and branch routers by
subject prefix) on the project's one subject router
(:mod:`~synaptic_mesh.runtime.router`): a node listens with one ROUTER socket
(one link per DEALER that connects) and dials each peer with a DEALER of its
own; a link message is one ZeroMQ multipart message, frame for frame
(:mod:`~synaptic_mesh.transports.zmq_link`).

URL format: exactly ``tcp://``'s (same parser, same options and topologies)::

    zmq://HOST:PORT?peers=H1:P1,H2:P2                 full mesh (the default role)
    zmq://HOST:PORT?role=root                         tree root
    zmq://HOST:PORT?role=branch&parent=H:P&prefixes=photogrammetry.>
    zmq://?role=leaf&parent=H:P                       leaf (dials its branch, no listener)

Port ``0`` binds a free port (``transport.address`` tells which). Tuning
options are ``tcp://``'s; ``high_water``/``low_water`` do not apply (ZeroMQ
counts its high-water marks in messages: see ``zmq_link.HWM``).

Capabilities: ordered per link, at-most-once (a message in flight when a link
dies is lost), not durable, cross-host, zero-copy on the receiving side
(frames of 64 KiB or more are views over libzmq's buffers) and for ``bytes``
attachments on the sending side, ``knows_interest`` (the router knows every
peer's interest once synced). ``native`` is empty: every pattern, request-reply
included, uses its generic lowering on the router's subjects (the router
already gives an ask one hop per link and a "no responders" verdict; a
ZeroMQ-native REQ/REP lowering is not implemented).

Each transport owns one ZeroMQ context; ``close`` closes every socket and
terminates the context (sockets linger ``zmq_link.LINGER_MS`` at most).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import zmq

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router import RoutedTransport
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.transports.base import Capabilities, LinkConnector
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.tcp import parse_url
from synaptic_mesh.transports.zmq_io import close_all
from synaptic_mesh.transports.zmq_link import ZmqConnector

DEFAULT_MAX_MESSAGE = RouterSettings.max_message


def split_options(url: str, own: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``url`` without the query parameters named in ``own``, and their values.

    Lets a ZeroMQ scheme take options of its own while the rest of the URL
    goes through the shared link URL parser (which refuses unknown options).
    """
    parts = urlsplit(url)
    kept, taken = [], {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in own:
            taken[key] = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept, safe=":,>*[]"))), taken


class ZmqTransport(RoutedTransport):
    """ZeroMQ ROUTER-DEALER links plus the subject router (see module docstring)."""

    scheme: ClassVar[str] = "zmq"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=True,
        zero_copy=True,
        max_message=DEFAULT_MAX_MESSAGE,
        native=frozenset(),
        by_reference=False,
        knows_interest=True,
    )

    def __init__(self, url: str = "zmq://127.0.0.1:0", **options: Any) -> None:
        super().__init__(url, parse_url(url, options, scheme=self.scheme), **options)
        self.capabilities = type(self).capabilities.with_max_message(  # type: ignore[misc]
            self.settings.max_message
        )
        self.ctx: zmq.Context[Any] | None = None

    def link_limits(self) -> LinkLimits:
        """What one link message may hold: the router's header plus a message."""
        s = self.settings
        return LinkLimits(
            max_frame=max(s.max_message, proto.MAX_HEADER),
            max_message=s.max_message + proto.MAX_HEADER,
            max_frames=self.max_frames + 1,
        )

    def connector(self) -> LinkConnector:
        self.ctx = zmq.Context()
        return ZmqConnector(self.ctx, self.link_limits())

    async def close(self) -> None:
        """Close as every routed transport does, then every socket and the context."""
        try:
            await super().close()
        finally:
            await self._close_context()

    async def _close_context(self) -> None:
        ctx, self.ctx = self.ctx, None
        if ctx is None:
            return
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), 1.0)  # type: ignore[attr-defined]
            listener.shut()  # type: ignore[attr-defined]
        close_all(ctx)  # anything left open (a link not yet handed to the router)
        ctx.destroy(linger=None)  # sockets keep their own LINGER (zmq_link.LINGER_MS)
