"""``tcp://host:port``: raw TCP links between nodes, routed by the shared subject router.

URL format (query parameters are optional; keyword options given to the
transport, e.g. ``Node(transport_options={"heartbeat": 0.2})``, override them)::

    tcp://HOST:PORT?peers=H1:P1,H2:P2                 full mesh (the default role)
    tcp://HOST:PORT?role=root                         tree root
    tcp://HOST:PORT?role=branch&parent=H:P&prefixes=photogrammetry.>
    tcp://?role=leaf&parent=H:P                       leaf (dials its branch, no listener)

* ``HOST:PORT`` is the address this node listens on; port ``0`` picks a free
  port (read it back from ``transport.address``). IPv6 hosts go in brackets.
* ``peers``: comma-separated addresses a mesh node dials. Every node listens
  and dials the peers it lists; listing each other both ways is fine.
* ``role``: ``mesh`` | ``root`` | ``branch`` | ``leaf``. ``parent`` (alias
  ``root``) is the address a branch or leaf dials. ``prefixes``:
  comma-separated patterns a branch or leaf advertises to its parent (default
  everything); reply inboxes always pass, so asks from inside get answers.
* Tuning: ``heartbeat`` (seconds, default 1.0), ``misses`` (3),
  ``connect_timeout`` (2.0), ``flush_timeout`` (3.0), ``backoff`` (0.05),
  ``backoff_max`` (2.0), ``window_msgs`` (4096), ``window_bytes`` (16 MiB),
  ``max_message`` (256 MiB), ``high_water`` (1 MiB), ``low_water`` (256 KiB),
  ``node_id`` (default: host-pid-random).

Framing on the wire is :mod:`synaptic_mesh.transports.stream_link`'s: an
8-byte preamble, then per message a u32 frame count, one u32 big-endian length
per frame, and the frames' bytes. TCP_NODELAY is set on every socket.

Capabilities: ordered per link (per publisher and subject while a link
lives), at-most-once (a message in flight when a link dies is lost), not
durable, cross-host, not zero-copy (bytes are copied into the socket; large
frames are received without a further copy), ``knows_interest`` (the router
knows every peer's interest once synced). ``max_message`` follows the
``max_message`` option, so ``transport.capabilities`` may differ from the
class default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router import RoutedTransport
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.transports.base import Capabilities, Link, LinkConnector, LinkListener
from synaptic_mesh.transports.stream_link import LinkLimits, StreamLink, StreamListener

DEFAULT_MAX_MESSAGE = RouterSettings.max_message


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ``ValueError`` if malformed."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {address!r} must be host:port")
    return host.strip("[]"), int(port)


def parse_url(url: str, options: dict[str, Any], scheme: str = "tcp") -> RouterSettings:
    """Settings from a ``tcp://`` URL (see module docstring), ``options`` winning.

    Other host:port link transports (``zmq://``) share this format: they pass
    their own ``scheme``.
    """
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ValueError(f"not a {scheme} URL: {url!r}")
    values: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        values["parent" if key == "root" else key] = value
    if parts.netloc:
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        if port is None:
            raise ValueError(f"{url!r} needs a port ({scheme}://host:port, 0 for any free one)")
        values["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    values.update({"parent" if k == "root" else k: v for k, v in options.items()})
    for key in ("peers", "parent"):
        addresses = values.get(key)
        if isinstance(addresses, str):
            for address in addresses.split(","):
                if address.strip():
                    split_address(address)
    return RouterSettings.from_options(values)


class TcpConnector(LinkConnector):
    """Listens and dials TCP sockets carrying :class:`StreamLink` framing."""

    def __init__(self, limits: LinkLimits) -> None:
        self.limits = limits

    async def listen(self, address: str, accept: Callable[[Link], None]) -> LinkListener:
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: StreamLink(self.limits, "accepted", accept), host, port, reuse_address=True
        )
        bound = server.sockets[0].getsockname()
        name = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
        return StreamListener(server, name)

    async def dial(self, address: str, timeout: float) -> Link:
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        _, link = await asyncio.wait_for(
            loop.create_connection(lambda: StreamLink(self.limits, "dialed"), host, port),
            timeout or None,
        )
        return link


class TcpTransport(RoutedTransport):
    """Raw TCP links plus the subject router (see module docstring)."""

    scheme: ClassVar[str] = "tcp"
    sends_now: ClassVar[bool] = True  # stream links take a message at once (try_send)
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=True,
        zero_copy=False,
        max_message=DEFAULT_MAX_MESSAGE,
        native=frozenset(),
        by_reference=False,
        knows_interest=True,
    )

    def __init__(self, url: str = "tcp://127.0.0.1:0", **options: Any) -> None:
        super().__init__(url, parse_url(url, options), **options)
        self.capabilities = type(self).capabilities.with_max_message(  # type: ignore[misc]
            self.settings.max_message
        )

    def connector(self) -> LinkConnector:
        s = self.settings
        return TcpConnector(
            LinkLimits(
                max_frame=max(s.max_message, proto.MAX_HEADER),
                max_message=s.max_message + proto.MAX_HEADER,
                max_frames=self.max_frames + 1,
                high_water=s.high_water,
                low_water=s.low_water,
            )
        )
