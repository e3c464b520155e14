"""``nng+tcp://host:port`` and ``nng+ipc://path``: NNG links, routed by the shared subject router.

URL format: the same query options as ``tcp://`` (keyword options given to the
transport, e.g. ``Node(transport_options={"heartbeat": 0.2})``, override them)::

    nng+tcp://HOST:PORT?peers=H1:P1,H2:P2             full mesh (the default role)
    nng+tcp://HOST:PORT?role=root                     tree root
    nng+tcp://HOST:PORT?role=branch&parent=H:P&prefixes=photogrammetry.>
    nng+tcp://?role=leaf&parent=H:P                   leaf (dials its branch, no listener)

    nng+ipc:///run/mesh/a.sock?peers=/run/mesh/b.sock  full mesh over IPC (Unix sockets)
    nng+ipc:///run/mesh/root.sock?role=root
    nng+ipc://?role=leaf&parent=/run/mesh/root.sock

* ``nng+tcp``: ``HOST:PORT`` is where the node listens (port ``0``: a free
  one, read back from ``transport.address``); addresses are ``host:port``,
  IPv6 hosts in brackets. Parsed by ``tcp://``'s own parser.
* ``nng+ipc``: the path is everything between ``nng+ipc://`` and ``?``
  (percent-decoded; relative to the working directory unless absolute);
  addresses in ``peers``/``parent`` are paths. Each accepted link also listens
  on ``PATH.N``, so keep ``PATH`` under about 100 bytes. An empty path (not
  for a leaf) picks a fresh one, as port 0 does for TCP:
  ``nng-<node-id>.sock`` in ``$XDG_RUNTIME_DIR/synaptic-mesh``, else in
  ``/tmp/synaptic-mesh-<uid>`` (created 0700); read it from ``transport.address``.
* Options and tuning exactly as ``tcp://``: ``role``, ``peers``, ``parent``
  (alias ``root``), ``prefixes``, ``heartbeat``, ``misses``,
  ``connect_timeout``, ``flush_timeout``, ``backoff``, ``backoff_max``,
  ``window_msgs``, ``window_bytes``, ``max_message``, ``high_water``,
  ``low_water``, ``node_id``.

How links are made (a ``Rep0`` rendezvous, then one monogamous ``Pair1``
socket per link) is in :mod:`~synaptic_mesh.transports.nng_connector`; how a
link's frames travel as one NNG message, and why not one polyamorous socket
per node, in :mod:`~synaptic_mesh.transports.nng_link`.

Capabilities: ordered per link, at-most-once (a message in flight when a link
dies is lost), not durable, no replay, cross-host for ``nng+tcp`` only, not
zero-copy (a frame is copied into the NNG message; large frames are received
without a further copy), ``knows_interest`` (the router knows its peers'
interest). ``max_message`` follows the ``max_message`` option.

Native lowerings: none (not done). Every pattern runs on its generic lowering
over the router and these Pair1 links, and keeps every promise the pattern
conformance suite checks. NNG's own protocol sockets were weighed and not
used, because each would weaken a promise or duplicate the router:

* Pub0/Sub0 and Bus0 are best-effort: a pipe whose queue is full silently
  loses the message, and Sub0 filters at the receiver, so every message goes
  to every node. The router loses nothing while a link lives, sends only where
  interest is, and pushes back on a fast publisher. Bus0 does not forward
  either, so a tree topology could not use it.
* Surveyor0/Respondent0: a cooked respondent answers a survey once, but a node
  may host several voters of one group; a new survey cancels the previous one
  on a socket (one context per survey needed); queue-group respondents and the
  "no responders" verdict still need the router's interest table.
* Req0/Rep0: an ask needs the router anyway to find which node serves a
  subject (and to say "no responders"), and the reply path (late replies,
  remote errors) is the node's inbox; a second channel would add endpoints
  to advertise and gain nothing over a Pair1 link.
* Pair1 for the hotline: the hotline already runs over a Pair1 link per peer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router import RoutedTransport
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.transports import tcp
from synaptic_mesh.transports.base import BadFrame, Capabilities, LinkConnector
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.nng_connector import NngConnector
from synaptic_mesh.transports.nng_link import LINGER
from synaptic_mesh.transports.shm import default_directory

DEFAULT_MAX_MESSAGE = RouterSettings.max_message
_NODE_ID = next(f for f in dataclasses.fields(RouterSettings) if f.name == "node_id")


def parse_tcp_url(url: str, options: dict[str, Any]) -> RouterSettings:
    """Settings from an ``nng+tcp://`` URL: ``tcp://``'s rules (see :mod:`.tcp`)."""
    if not url.startswith("nng+tcp://"):
        raise ValueError(f"not an nng+tcp URL: {url!r}")
    return tcp.parse_url("tcp://" + url[len("nng+tcp://") :], options)


def parse_ipc_url(url: str, options: dict[str, Any]) -> RouterSettings:
    """Settings from an ``nng+ipc://`` URL (see module docstring), ``options`` winning."""
    if not url.startswith("nng+ipc://"):
        raise ValueError(f"not an nng+ipc URL: {url!r}")
    path, _, query = url[len("nng+ipc://") :].partition("?")
    values: dict[str, Any] = {}
    if path:
        values["listen"] = unquote(path)
    for key, value in parse_qsl(query, keep_blank_values=True):
        values["parent" if key == "root" else key] = value
    values.update({"parent" if k == "root" else k: v for k, v in options.items()})
    if not values.get("listen") and values.get("role", "mesh") != "leaf":
        node_id = values.get("node_id") or _NODE_ID.default_factory()  # type: ignore[misc]
        values["node_id"] = node_id  # the path is named after it: keep the two together
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(node_id))
        values["listen"] = str(default_directory() / f"nng-{name}.sock")
    return RouterSettings.from_options(values)


class _NngTransport(RoutedTransport):
    """The router over NNG links; subclasses name the NNG transport (``tcp`` or ``ipc``)."""

    nng_scheme: ClassVar[str]

    def __init__(self, url: str, settings: RouterSettings, **options: Any) -> None:
        super().__init__(url, settings, **options)
        self._nng: NngConnector | None = None
        if self.settings.max_message != DEFAULT_MAX_MESSAGE:
            self.capabilities = dataclasses.replace(  # type: ignore[misc]
                type(self).capabilities, max_message=self.settings.max_message
            )

    def connector(self) -> LinkConnector:
        s = self.settings
        self._nng = NngConnector(
            self.nng_scheme,
            LinkLimits(
                max_frame=max(s.max_message, proto.MAX_HEADER),
                max_message=s.max_message + proto.MAX_HEADER,
                max_frames=self.max_frames + 1,
                high_water=s.high_water,
                low_water=s.low_water,
            ),
            s.connect_timeout,
            self._bad_input,
        )
        return self._nng

    def _bad_input(self, bad: BadFrame) -> None:
        """Input the rendezvous refused: counted and reported like a link's bad frame."""
        self.bad_frames += 1
        self._fire(self.on_bad_frame, bad)

    async def close(self) -> None:
        """Close as every routed transport does, then wait for each link socket to close.

        Links still flushing (see ``nng_link``'s graceful close) get ``LINGER``
        seconds; whatever is left is aborted, so no NNG socket outlives ``close``.
        """
        await super().close()
        connector = self._nng
        if connector is not None and connector.live:
            links = list(connector.live)
            await asyncio.wait(
                [asyncio.ensure_future(link.wait_closed()) for link in links],
                timeout=LINGER + 0.5,
            )
            for link in list(connector.live):
                link.abort("transport closed")
                await link.wait_closed()


_CAPABILITIES = Capabilities(
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


class NngTcpTransport(_NngTransport):
    """``nng+tcp://``: NNG links over TCP (see module docstring)."""

    scheme: ClassVar[str] = "nng+tcp"
    nng_scheme: ClassVar[str] = "tcp"
    capabilities: ClassVar[Capabilities] = _CAPABILITIES

    def __init__(self, url: str = "nng+tcp://127.0.0.1:0", **options: Any) -> None:
        super().__init__(url, parse_tcp_url(url, options), **options)


class NngIpcTransport(_NngTransport):
    """``nng+ipc://``: NNG links over Unix-domain sockets (see module docstring)."""

    scheme: ClassVar[str] = "nng+ipc"
    nng_scheme: ClassVar[str] = "ipc"
    capabilities: ClassVar[Capabilities] = dataclasses.replace(_CAPABILITIES, cross_host=False)

    def __init__(self, url: str = "nng+ipc://", **options: Any) -> None:
        super().__init__(url, parse_ipc_url(url, options), **options)

    async def start(self) -> None:
        """Create the default socket directory (0700) if the path is in it, then start."""
        listen = self.settings.listen
        if listen is not None and Path(listen).parent == default_directory():
            default_directory().mkdir(mode=0o700, parents=True, exist_ok=True)
        await super().start()
