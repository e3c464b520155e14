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
  on ``PATH.N``, and the native sockets on ``PATH.sv``, ``PATH.bus``,
  ``PATH.sub``, ``PATH.rep``, ``PATH.pull`` and ``PATH.lN`` (a hotline), so
  keep ``PATH`` under about 100 bytes. An empty path (not for a leaf) picks a
  fresh one, as port 0 does for TCP:
  ``nng-<node-id>.sock`` in ``$XDG_RUNTIME_DIR/synaptic-mesh``, else in
  ``/tmp/synaptic-mesh-<uid>`` (created 0700); read it from ``transport.address``.
* Options and tuning exactly as ``tcp://``: ``role``, ``peers``, ``parent``
  (alias ``root``), ``prefixes``, ``heartbeat``, ``misses``,
  ``connect_timeout``, ``flush_timeout``, ``backoff``, ``backoff_max``,
  ``window_msgs``, ``window_bytes``, ``max_message``, ``high_water``,
  ``low_water``, ``node_id``; plus ``native`` (below).

How links are made (a ``Rep0`` rendezvous, then one monogamous ``Pair1``
socket per link) is in :mod:`~synaptic_mesh.transports.nng_connector`; how a
link's frames travel as one NNG message, and why not one polyamorous socket
per node, in :mod:`~synaptic_mesh.transports.nng_link`.

Capabilities: ordered per link, at-most-once (a message in flight when a link
dies is lost), not durable, no replay, cross-host for ``nng+tcp`` only, not
zero-copy (a frame is copied into the NNG message; large frames are received
without a further copy), ``knows_interest`` (the router knows its peers'
interest). ``max_message`` follows the ``max_message`` option. ``native``:
the option below on a full mesh, nothing in a tree.

Native lowerings (``native`` option, a query or keyword option naming the
patterns; all opt-in, the default is ``native=`` (none): each costs more per
message than the generic path over the node's links, or gives up a promise)::

    nng+tcp://127.0.0.1:7001?peers=127.0.0.1:7002&native=survey,bus,pair,pipeline,pub-sub

Native sockets exist only on a full mesh (``role=mesh``): NNG's protocols
reach the nodes a socket has pipes to and do not forward, so a tree keeps
every pattern on the router (its ``capabilities.native`` is empty, which the
conformance suite checks). What a native lowering shares (the ``native``
option, endpoints advertised to peers over the router, the wire format,
``transport.stats``) is :mod:`~synaptic_mesh.transports.nng_native`. Every
lowering finds its target nodes in the router's interest table (queue groups
choose one member node round-robin), so interest, queue groups and "no
responders" mean what they mean on the router.

* survey, opt-in (:mod:`~synaptic_mesh.transports.nng_survey`): ``Surveyor0``
  with one pynng context per survey, answered by a *raw* ``Respondent0`` on
  each node, which may answer one survey once per voter. Not the default:
  every vote is an NNG message of its own, and pynng hands each send and
  receive between NNG's thread and the loop, so a survey of 50 voters on
  one node takes about 15 ms where the generic lowering takes about 1.3 ms
  (votes are not yet bundled per node). Once, right after bench trials that
  had flooded Bus0, a survey came back with 14 of its 50 votes; 800 surveys
  since lost none, and the cause is not known.
* bus, opt-in (:mod:`~synaptic_mesh.transports.nng_bus`): one ``Bus0`` socket
  per node, one pipe per pair of nodes. Bus0 drops at a full pipe queue:
  queues are deep, each message carries a sequence number per sending node,
  and every loss a later message reveals is counted in ``transport.stats.gaps``.
  Not the default for that reason: a burst of sends (the pattern bench's)
  loses messages, where the router pushes back on the sender instead.
* PAIR hotline, opt-in (:mod:`~synaptic_mesh.transports.nng_pair`): a
  dedicated monogamous ``Pair1`` socket at each end of each line (handshake
  on ``_line.<id>``; the end that reads the last message closes first), as
  ``zmq+pair`` does; a line whose caller is not native, or whose pipe
  dropped, runs on the subjects. Not the default: pynng hands each send and
  receive between NNG's thread and the loop, so a round trip on the line
  takes about 20% longer than on the generic lowering over the node's links
  (2,300 against 2,600 round trips/s on ``nng+tcp``, pattern bench).
* pipeline, opt-in (:mod:`~synaptic_mesh.transports.nng_pipeline`): one
  ``Pull0`` per node and one ``Push0`` per destination node (Push0 cannot
  choose a pipe, so the router's table chooses the node: a keyed subject's
  worker, or one member node of a stage's queue group). What crosses nodes
  is a remote producer's (a ``Feeder``) items; a gate and its workers share
  a node, where items are delivered in place. Not the default: each item is
  an NNG message of its own, handed between NNG's thread and the loop, so a
  ``Feeder`` streams about 7,500 items/s on ``nng+tcp`` where the generic
  lowering over the same links takes 27,000 to 30,000 (pattern bench, both
  nodes in one process; links hand a burst to NNG in one go).
* pub-sub, opt-in (:mod:`~synaptic_mesh.transports.nng_pubsub`): a ``Pub0``
  dialing every peer's ``Sub0``; drops at a full queue counted as
  ``stats.gaps``. Gives up the order between a publish and the publisher's
  later traffic on the link (``test_dynamic_subscription_until_unsubscribed``
  publishes, then asks as a round trip "after" it).
* request-reply, opt-in (:mod:`~synaptic_mesh.transports.nng_reqrep`): a
  ``Req0`` context per ask on a ``Req0`` aimed at the serving node's
  ``Rep0``; late replies dropped and counted, remote errors and "no
  responders" as on the generic path. Gives up per-sender order between a
  ``tell`` and a later ``ask`` to the same actor (DESIGN.md section 5), which
  the pattern conformance suite does not check (its asks use ``Node.ask``,
  not the lowering).

A native send first waits (at most two seconds) until its socket reaches
every node that wants the message; a node it cannot reach makes that send
take the generic path instead (``transport.stats.fallbacks``), so a
late or broken native pipe costs speed, never a vote, a bus message, an
item or an ask.

Ordering across sockets: a native message and the router's traffic travel on
different sockets, so a bus message, survey question, pipeline item, native
publish or native ask is not ordered with the sender's traffic on the router
(a ``tell`` sent after a bus ``send`` may arrive first). Within one lowering,
order per sender holds while its pipe stays up (one pipe per pair of nodes;
a hotline's own pair of sockets). ``pair`` and ``pipeline`` keep the
promises the suites and DESIGN.md hold under load (the conformance suite runs
``nng+ipc`` with both); the other four do not.

On uvloop, a subprocess started through the loop runs Python's after-fork
hooks in the child before it execs; if a garbage collection there finalizes a
closed pynng socket, nng panics ("nng is not fork-reentrant safe") and the
child dies. After closing an NNG node, ``gc.collect()`` before spawning from
the loop avoids it.

Bad input on a native endpoint (a foreign NNG socket dialing it with
anything but this protocol) is logged at ERROR and reported through
``on_bad_frame`` (the node dead-letters it); the socket goes on (a hotline's
socket closes, and the line goes on over the subjects). ``close`` closes each
hotline's sockets (a line that just sent its last message gets up to
``LAST_GRACE`` s), then every native socket (no linger: NNG discards what a
native socket still queues), then the links as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router import RoutedTransport
from synaptic_mesh.runtime.router_link import Peer, frames_size
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.transports import tcp
from synaptic_mesh.transports.base import (
    BadFrame,
    Capabilities,
    Frame,
    HandlerSubscription,
    LinkClosed,
    LinkConnector,
)
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.nng_bus import NngBus
from synaptic_mesh.transports.nng_connector import NngConnector
from synaptic_mesh.transports.nng_link import LINGER
from synaptic_mesh.transports.nng_native import (
    DEFAULT_NATIVE,
    NativePlumbing,
    NativeStats,
    split_native,
)
from synaptic_mesh.transports.nng_pair import NngPair
from synaptic_mesh.transports.nng_pipeline import NngPipeline
from synaptic_mesh.transports.nng_pubsub import NngPubSub
from synaptic_mesh.transports.nng_reqrep import NngReqRep
from synaptic_mesh.transports.nng_survey import NngSurvey
from synaptic_mesh.transports.shm import default_directory

log = logging.getLogger("synaptic_mesh.nng")

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


class _HereOnly:
    """The ``source`` that makes the router deliver to this node's subscriptions only."""

    peer = None


_HERE = _HereOnly()


class _NngTransport(RoutedTransport):
    """The router over NNG links; subclasses name the NNG transport (``tcp`` or ``ipc``)."""

    nng_scheme: ClassVar[str]

    def __init__(
        self, url: str, settings: RouterSettings, native: frozenset[str], **options: Any
    ) -> None:
        super().__init__(url, settings, **options)
        self._nng: NngConnector | None = None
        self.stats = NativeStats()
        self._node_turns: dict[str, int] = {}  # queue group -> the next member to choose
        if settings.topology != "mesh":
            native = frozenset()  # a tree's nodes do not all reach each other
        self.native = NativePlumbing(self)
        self.lowerings: dict[str, Any] = {}
        if "survey" in native:
            self.lowerings["survey"] = NngSurvey(self)
        if "bus" in native:
            self.lowerings["bus"] = NngBus(self)
        if "pair" in native:
            self.lowerings["pair"] = NngPair(self)
        if "pub-sub" in native:
            self.lowerings["pub-sub"] = NngPubSub(self)
        if "request-reply" in native:
            self.lowerings["request-reply"] = NngReqRep(self)
        if "pipeline" in native:
            self.lowerings["pipeline"] = NngPipeline(self)
        self.closing_native = False
        self.capabilities = dataclasses.replace(  # type: ignore[misc]
            type(self).capabilities,
            max_message=self.settings.max_message,
            native=frozenset(self.lowerings),
        )

    def native_lowering(self, pattern: str) -> object | None:
        """The native lowering of ``pattern`` when this transport declares it (see module)."""
        return self.lowerings.get(pattern)

    async def start(self) -> None:
        """Start the router, then the native sockets and the endpoint exchange.

        A mesh node without native lowerings still takes part in the exchange
        (with an empty table), so its peers know at once not to wait for it.
        """
        await super().start()
        if self.settings.topology == "mesh" and not self.native.started:
            self.native.limits = self.native_limits()
            try:
                for lowering in self.lowerings.values():
                    await lowering.start(self.native)
                await self.native.start()
            except BaseException:
                await self.close()
                raise

    def native_limits(self) -> LinkLimits:
        """The limits a native message is checked against: the links' own."""
        s = self.settings
        return LinkLimits(
            max_frame=max(s.max_message, proto.MAX_HEADER),
            max_message=s.max_message + proto.MAX_HEADER,
            max_frames=self.max_frames + 1,
        )

    async def native_targets(self, subject: str) -> dict[str, list[str]] | None:
        """The nodes a native send on ``subject`` must reach, each with the queue groups it serves.

        Resolved in the router's interest table as a publish would be: every
        node with a plain subscription, and for each queue group one member
        chosen round-robin (a counter of its own: the receiving node's router
        turns its own to pick the local member). ``None`` when nobody
        subscribes (after waiting, like ``publish``, at most ``flush_timeout``
        for links still syncing).
        """
        match = self._table.match(subject)
        if not match and self._unsynced:
            synced = asyncio.ensure_future(self._all_synced.wait())
            done, _ = await asyncio.wait({synced}, timeout=self.settings.flush_timeout)
            if not done:
                synced.cancel()
            match = self._table.match(subject)
        if not match:
            return None
        targets: dict[str, list[str]] = {}
        for item in match.plain:
            targets.setdefault(self._node_of(item), [])
        for queue, members in zip(match.queues, match.groups, strict=True):
            turn = self._node_turns.get(queue, 0)
            self._node_turns[queue] = turn + 1
            chosen = members[turn % len(members)]
            targets.setdefault(self._node_of(chosen), []).append(queue)
        if len(self._node_turns) > 10_000:
            self._node_turns.clear()
        return targets

    def interested_nodes(self, subject: str) -> set[str]:
        """Every node (this one included) with a subscription matching ``subject`` now."""
        match = self._table.match(subject)
        if not match:
            return set()
        nodes = {self._node_of(item) for item in match.plain}
        for members in match.groups:
            nodes.update(self._node_of(item) for item in members)
        return nodes

    async def send_to_peer(
        self, peer_id: str, subject: str, frames: Sequence[Frame], queues: list[str]
    ) -> None:
        """Send on the router's link to ``peer_id`` only, naming the queue groups it serves.

        The generic path of a native send whose target node is already chosen
        (it delivers there as ``deliver_here`` would). A peer without a link up
        loses the message (logged at WARNING), as the router's own sends do.
        """
        peer = self._peers.get(peer_id)
        try:
            if peer is None:
                raise LinkClosed(f"no link to peer {peer_id}")
            await peer.send(subject, None, queues, 1, frames, frames_size(frames))
        except (LinkClosed, ValueError) as exc:
            log.warning("%s: %s to peer %s lost: %s", self.id, subject, peer_id, exc)

    def serves_here(self, subject: str) -> bool:
        """Whether a subscription of this node matches ``subject`` now."""
        return self.id in self.interested_nodes(subject)

    def _node_of(self, item: HandlerSubscription | Peer) -> str:
        return item.id if type(item) is Peer else self.id  # type: ignore[union-attr]

    async def deliver_here(
        self, subject: str, frames: list[Frame], reply_to: str | None, queues: list[str]
    ) -> None:
        """Deliver a natively received message to this node's own subscriptions only.

        As the router delivers a message a peer forwarded: every plain
        subscription matching ``subject``, and one local member of each queue
        group in ``queues`` (the groups the sender chose this node for).
        """
        await self._route(subject, frames, reply_to, _HERE, queues, 0)  # type: ignore[arg-type]

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
        The native sockets close first (no linger: see ``nng_native``), after
        each lowering's own ``close`` (a hotline's last message gets out).
        """
        self.closing_native = True
        for lowering in self.lowerings.values():
            closer = getattr(lowering, "close", None)
            if closer is not None:
                await closer()
        await self.native.close()
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
    native=DEFAULT_NATIVE,
    by_reference=False,
    knows_interest=True,
)


class NngTcpTransport(_NngTransport):
    """``nng+tcp://``: NNG links over TCP (see module docstring)."""

    scheme: ClassVar[str] = "nng+tcp"
    nng_scheme: ClassVar[str] = "tcp"
    capabilities: ClassVar[Capabilities] = _CAPABILITIES

    def __init__(self, url: str = "nng+tcp://127.0.0.1:0", **options: Any) -> None:
        url, native = split_native(url, options)
        super().__init__(url, parse_tcp_url(url, options), native, **options)


class NngIpcTransport(_NngTransport):
    """``nng+ipc://``: NNG links over Unix-domain sockets (see module docstring)."""

    scheme: ClassVar[str] = "nng+ipc"
    nng_scheme: ClassVar[str] = "ipc"
    capabilities: ClassVar[Capabilities] = dataclasses.replace(_CAPABILITIES, cross_host=False)

    def __init__(self, url: str = "nng+ipc://", **options: Any) -> None:
        url, native = split_native(url, options)
        super().__init__(url, parse_ipc_url(url, options), native, **options)

    async def start(self) -> None:
        """Create the default socket directory (0700) if the path is in it, then start."""
        listen = self.settings.listen
        if listen is not None and Path(listen).parent == default_directory():
            default_directory().mkdir(mode=0o700, parents=True, exist_ok=True)
        await super().start()
