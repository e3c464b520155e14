"""``shm://DIR``: co-located nodes over Unix sockets, attachments through shared memory.

**Co-located nodes should choose this transport by default**: nodes on one
machine reach each other without TCP, and a large attachment (a numpy array,
an image, a point cloud) is written once into a shared-memory segment and
arrives as a read-only ``memoryview`` over that segment (the codec makes a
numpy array of it): no copy on the receiving side, no bytes through a socket.
``tcp://`` is for nodes on other hosts.

URL format (query parameters are optional; keyword options given to the
transport, e.g. ``Node(transport_options={"heartbeat": 0.2})``, override them)::

    shm://                               the per-user default directory (below)
    shm:///run/mesh                      a mesh of every node in /run/mesh
    shm:///run/mesh?peers=/other/dir/n1.sock,/other/dir/n2.sock
    shm:///run/mesh?threshold=1MiB&pool=2GiB
    shm:///run/mesh?role=branch&parent=/run/mesh/root.sock&prefixes=photogrammetry.>

* ``DIR`` is everything between ``shm://`` and ``?`` (percent-decoded); a
  relative path is relative to the working directory. Empty: the directory
  ``synaptic-mesh`` in ``$XDG_RUNTIME_DIR``, else ``/tmp/synaptic-mesh-<uid>``.
  It is created 0700 if missing.
* Each node listens on the Unix socket ``DIR/<node-id>.sock`` (mode 0600:
  only the same user's processes connect; characters of the id other than
  letters, digits, ``.``, ``_`` and ``-`` become ``_``). A live socket with
  this node's id is an error (``OSError`` EADDRINUSE); a stale one is replaced.
* Discovery (role ``mesh``, ``discover=1``, the default): at start the node
  lists ``DIR/*.sock`` and dials every node it is not linked to yet, waiting
  (``connect_timeout``) until they are synced, and lists again every
  ``heartbeat`` seconds, so a link that dropped to a live node is redialled.
  A socket that refuses connections belongs to a dead process and is removed;
  a node whose link never comes up (another topology, a broken peer) is not
  dialled again until a new node replaces its socket.
  The result is a full mesh of the nodes in DIR; a node that dies is noticed
  by the heartbeats, and one that restarts (a new id) dials the others.
* ``peers``: comma-separated socket paths dialled in addition (and redialled
  with backoff forever, as ``tcp://`` does), e.g. nodes of another directory.
  ``discover=0`` leaves only those.
* Trees: ``role=root|branch|leaf``, ``parent`` (alias ``root``) = the socket
  path of the parent, ``prefixes`` as for ``tcp://``; tree nodes do not
  discover.
* Shared memory: ``threshold`` (default 64 KiB): frames after frame 0 of at
  least this many bytes go through a segment; smaller ones through the
  socket. ``pool`` (default 512 MiB, per link): the most bytes of segments
  one link keeps; beyond it, and when ``/dev/shm`` is full, a frame goes
  through the socket instead (copied, but never lost or blocked). ``pool=0``
  turns shared memory off. ``idle`` (default 30 s): a free segment unused
  that long is unlinked. Sizes take ``KiB``/``MiB``/``GiB`` (or ``K``/``M``/``G``).
* Router tuning as for ``tcp://``: ``heartbeat``, ``misses``,
  ``connect_timeout``, ``flush_timeout``, ``backoff``, ``backoff_max``,
  ``window_msgs``, ``window_bytes``, ``max_message``, ``high_water``,
  ``low_water``, ``node_id``.

Segment lifecycle (details in :mod:`~synaptic_mesh.transports.shm_segments`
and :mod:`~synaptic_mesh.transports.shm_link`): a per-link pool of 0600
segments ``/dev/shm/smesh-<pid>-<n>``; the receiver maps each frame
read-only and, once every view of it is garbage-collected, sends RELEASE so
the sender reuses the warm segment. Segments are unlinked when a pool
shrinks (idle, or room for a larger one), when a link goes down, and when
the node closes; at every start the node removes the segments of dead
processes (a SIGKILLed node's orphans). A receiver's mapping outlives the
unlink, so an array the user keeps stays valid.

Capabilities: ordered per link, at-most-once (a message in flight when a
link dies is lost), not durable, no replay, not cross-host, zero-copy (on the
receiving side; the sender copies each large frame once into its segment),
``knows_interest``. ``max_message`` follows the ``max_message`` option.
Linux only (``/dev/shm`` and ``SO_PEERCRED``); without ``/dev/shm`` every
frame goes through the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router import RoutedTransport
from synaptic_mesh.runtime.router_settings import RouterSettings
from synaptic_mesh.transports import shm_segments as segments
from synaptic_mesh.transports.base import Capabilities, LinkConnector
from synaptic_mesh.transports.shm_link import LINGER, ShmConnector, ShmOptions
from synaptic_mesh.transports.stream_link import LinkLimits

log = logging.getLogger("synaptic_mesh.shm")

DEFAULT_MAX_MESSAGE = RouterSettings.max_message
MAX_SOCKET_PATH = 107
"""``sun_path`` holds 108 bytes on Linux, the terminating NUL included."""
STALE_RECHECK = 0.05
"""A refused socket is probed again after this pause before it is removed as stale:
a node between ``bind`` and ``listen`` refuses for an instant."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SIZE = re.compile(r"\s*([0-9]+)\s*([KMG]?)(?:i?B)?\s*\Z", re.I)


def default_directory() -> Path:
    """``$XDG_RUNTIME_DIR/synaptic-mesh``, else ``/tmp/synaptic-mesh-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "synaptic-mesh"
    return Path(f"/tmp/synaptic-mesh-{os.getuid()}")


def socket_name(node_id: str) -> str:
    """The file name of ``node_id``'s socket in DIR."""
    return _UNSAFE.sub("_", node_id).lstrip(".") + ".sock"


def parse_size(key: str, value: Any) -> int:
    """``65536``, ``"64KiB"``, ``"512M"`` -> bytes; ``ValueError`` naming ``key`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"option {key}={value!r} is not a size (bytes, or with KiB/MiB/GiB)")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]


@dataclasses.dataclass(frozen=True)
class ShmConfig:
    """Everything an ``shm://`` URL says (see module docstring)."""

    directory: Path
    settings: RouterSettings
    shm: ShmOptions
    discover: bool


def parse_url(url: str, options: dict[str, Any]) -> ShmConfig:
    """The configuration of an ``shm://`` URL, ``options`` winning over its query."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "shm":
        raise ValueError(f"not an shm URL: {url!r}")
    path, _, query = rest.partition("?")
    directory = Path(unquote(path)) if path else default_directory()
    values: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        values["parent" if key == "root" else key] = value
    values.update({"parent" if k == "root" else k: v for k, v in options.items()})
    shm = ShmOptions(
        threshold=parse_size("threshold", values.pop("threshold", ShmOptions.threshold)),
        pool=parse_size("pool", values.pop("pool", ShmOptions.pool)),
        idle=float(values.pop("idle", ShmOptions.idle)),
    )
    discover = str(values.pop("discover", "1")).lower() not in ("0", "false", "no", "off")
    settings = RouterSettings.from_options({**values, "listen": "pending"})
    listen = directory / socket_name(settings.node_id)
    return ShmConfig(directory, dataclasses.replace(settings, listen=str(listen)), shm, discover)


class ShmTransport(RoutedTransport):
    """Unix-socket links, shared-memory attachments, the subject router (see module docstring)."""

    scheme: ClassVar[str] = "shm"
    sends_now: ClassVar[bool] = True  # stream links take a message at once (try_send)
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=False,
        zero_copy=True,
        max_message=DEFAULT_MAX_MESSAGE,
        native=frozenset(),
        by_reference=False,
        knows_interest=True,
    )

    def __init__(self, url: str = "shm://", **options: Any) -> None:
        config = parse_url(url, options)
        super().__init__(url, config.settings, **options)
        self.directory = config.directory
        self.shm = config.shm
        self.discover = config.discover and config.settings.role == "mesh"
        self.capabilities = type(self).capabilities.with_max_message(  # type: ignore[misc]
            self.settings.max_message
        )
        self._socket: Path | None = None
        self._socket_inode: int | None = None
        self._dialing: set[str] = set()
        self._refused: dict[str, int] = {}  # socket path -> inode whose link never came up
        self._shm_connector: ShmConnector | None = None

    def connector(self) -> LinkConnector:
        s = self.settings
        limits = LinkLimits(
            max_frame=max(s.max_message, proto.MAX_HEADER),
            max_message=s.max_message + proto.MAX_HEADER,
            max_frames=self.max_frames + 2,  # the router's header and the shm link's own frame
            high_water=s.high_water,
            low_water=s.low_water,
        )
        self._shm_connector = ShmConnector(limits, self.shm)
        return self._shm_connector  # type: ignore[return-value]

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Sweep orphans, listen on ``DIR/<id>.sock``, dial the peers found and listed.

        Raises ``OSError`` when the socket path is too long or a live node
        already uses this id in DIR.
        """
        if self._state != "new":
            await super().start()  # running: nothing to do; closed: raises
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        segments.sweep_orphans()
        path = (self.directory / socket_name(self.id)).absolute()
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise OSError(
                errno.ENAMETOOLONG,
                f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter DIR",
            )
        if path.exists():
            if not await _stale(path):
                raise OSError(errno.EADDRINUSE, f"a live node already listens at {path}")
            _remove(path)
        self.settings = dataclasses.replace(self.settings, listen=str(path))
        self._socket = path
        await super().start()
        with contextlib.suppress(OSError):
            self._socket_inode = path.stat().st_ino
        if self.discover:
            await self._discover(self.settings.connect_timeout)
            self._spawn(self._rediscover(), "background")

    async def close(self) -> None:
        """Close as every routed transport does, then make sure no segment or socket is left.

        Links that still had frames in flight wait (at most ``LINGER``
        seconds) for the peer to read them before their segments go.
        """
        await super().close()
        connector = self._shm_connector
        if connector is not None and connector.live:
            links = list(connector.live)
            await asyncio.wait(
                [asyncio.ensure_future(link.wait_closed()) for link in links], timeout=LINGER + 0.5
            )
            for link in list(connector.live):
                link.abort("transport closed")
        if self._socket is not None and self._socket_inode is not None:
            with contextlib.suppress(OSError):
                if self._socket.stat().st_ino == self._socket_inode:
                    self._socket.unlink()
            self._socket_inode = None

    # -- discovery ----------------------------------------------------------------------

    async def _discover(self, timeout: float) -> None:
        """Dial every node in DIR not linked yet; wait up to ``timeout`` for them to sync."""
        if self._state != "running":
            return
        linked = {socket_name(peer) for peer in self.peer_ids()}
        listed = {str(Path(p).absolute()) for p in self.settings.peers}
        synced: list[asyncio.Future[None]] = []
        try:
            paths = sorted(self.directory.glob("*.sock"))
        except OSError as exc:
            log.warning("%s: cannot list %s: %s", self.id, self.directory, exc)
            return
        for path in paths:
            address = str(path.absolute())
            if (
                path.name in linked
                or address in self._dialing
                or address in listed
                or address == str(self._socket)
                or (address in self._refused and self._refused[address] == _inode(address))
            ):
                continue
            first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            synced.append(first)
            self._dialing.add(address)
            self._spawn(self._dial_once(address, first), "background")
        if synced and timeout:
            await asyncio.wait(synced, timeout=timeout)

    async def _dial_once(self, address: str, first: asyncio.Future[None]) -> None:
        """One attempt at a discovered node; the next listing of DIR retries if it fails."""
        try:
            try:
                link = await self._connector.dial(address, self.settings.connect_timeout)
            except ConnectionRefusedError:
                if await _stale(Path(address)):
                    _remove(Path(address))
                    log.info("%s: removed stale socket %s (its node is dead)", self.id, address)
                return
            except (OSError, TimeoutError) as exc:
                log.debug("%s: dialing %s failed: %s", self.id, address, exc)
                return
            inode = _inode(address)
            serving = self._spawn(self._serve_link(link, address, None, first), "link")
            await asyncio.wait([serving])
            if serving.result() is False and inode is not None:
                # Never came up (another topology, bad input): not again until this
                # socket is replaced by a new node, or every listing would log it.
                self._refused[address] = inode
        finally:
            self._dialing.discard(address)
            if not first.done():
                first.set_result(None)

    async def _rediscover(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            await self._discover(0)

    # -- introspection -----------------------------------------------------------------------

    def shm_stats(self) -> dict[str, int]:
        """Shared-memory counters summed over this node's live links."""
        totals = dict.fromkeys(
            ("segments", "bytes", "busy", "created", "reused", "fallbacks", "mapped"), 0
        )
        for link in list(self._shm_connector.live if self._shm_connector else ()):
            pool = link.pool
            totals["segments"] += len(pool.segments)
            totals["bytes"] += pool.bytes
            totals["busy"] += pool.busy
            totals["created"] += pool.created
            totals["reused"] += pool.reused
            totals["fallbacks"] += pool.fallbacks
            totals["mapped"] += link.frames_mapped
        return totals


async def _stale(path: Path) -> bool:
    """Whether the socket at ``path`` refuses connections twice (its node is dead)."""
    for attempt in range(2):
        if attempt:
            await asyncio.sleep(STALE_RECHECK)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            continue
        except BlockingIOError:
            return False  # a live listener with a full backlog
        except OSError:
            return False  # gone, or not ours to judge
        finally:
            probe.close()
        return False
    return True


def _inode(address: str) -> int | None:
    try:
        return os.stat(address).st_ino
    except OSError:
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
