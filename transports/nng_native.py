"""Shared plumbing of the NNG native lowerings: option, endpoints, wire format, peer reach.

The native lowerings (:mod:`~synaptic_mesh.transports.nng_survey`,
:mod:`~synaptic_mesh.transports.nng_bus`, :mod:`~synaptic_mesh.transports.nng_pair`,
:mod:`~synaptic_mesh.transports.nng_pubsub`, :mod:`~synaptic_mesh.transports.nng_reqrep`,
:mod:`~synaptic_mesh.transports.nng_pipeline`) put a pattern's traffic on
NNG's own protocol sockets beside the router's ``Pair1`` links. Everything
they share is here:

* :func:`split_native`: the ``native`` URL option (``?native=survey,bus``,
  ``?native=`` for none), taken out before the link URL parser sees it.
* The wire format of one native message: the link framing of
  :mod:`~synaptic_mesh.transports.framing` (``count lengths payloads``), frame 0
  a small msgpack header of the pattern's own, the rest the envelope and its
  attachments. :func:`unpack` checks it against the link limits and raises
  ``ValueError`` with a reason for anything else.
* :class:`NativeSocket`: one protocol socket of a transport. It may listen
  (on ``tcp://HOST:0``, a free port of the listen host, or ``ipc://PATH.SUFFIX``
  beside the node's own socket), dial the matching endpoint of peers, and
  knows which peers it *reaches* (has a pipe to), so a lowering can tell
  whether a native send would reach every node that wants the message.
  Protocols that cannot aim a message at one pipe (Req0, Push0) get one
  socket per peer (:meth:`NativePlumbing.socket_to`), opened on first use.
* :class:`NativePlumbing`: how peers learn each other's endpoints. Each node
  subscribes ``_nng.native.<own id>`` on the router; when a peer comes up it
  publishes its endpoint table there, asking for the peer's in return.
  Either first message can be lost (the other node had not subscribed yet),
  but the later of the two subscribers always gets through, and its answer
  completes the exchange. A peer going down closes the dialers to it.

Receiving is the same for every lowering: :meth:`NativeSocket.serve` reads a
socket, :meth:`NativePlumbing.checked` unpacks each message and checks its
header with the lowering's own check, and :meth:`NativePlumbing.deliver`
hands it to this node's subscriptions. :class:`SequenceGaps` counts what a
protocol that drops at a full queue (Bus0, Pub0) lost.

Bad input: an endpoint table or a native message that does not parse is
logged at ERROR and reported through the transport's ``on_bad_frame`` hooks
(the node dead-letters it); the socket goes on.

Close: native sockets have no linger. ``nng_close`` discards what a socket
still queues, so whatever a native send handed NNG just before ``close`` may
be lost (at-most-once, like the rest); the router links' graceful close is
not involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote

import msgpack
import pynng
from pynng import lib

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.transports.base import BadFrame, Buffer
from synaptic_mesh.transports.framing import LinkLimits, encode_message

if TYPE_CHECKING:
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.native")

SUPPORTED: Final = ("survey", "bus", "pair", "pub-sub", "request-reply", "pipeline")
"""The patterns this transport can lower natively (names of ``patterns.lowering.PATTERNS``)."""
DEFAULT_NATIVE: Final[frozenset[str]] = frozenset()
"""Native by default (on a full mesh): none; each native lowering is opt-in.

``pub-sub`` and ``request-reply`` give up ordering with the sender's other
traffic on the link. ``survey`` and ``bus``: a burst of bus sends overflows
Bus0's pipe queues (each loss counted in ``stats.gaps``, but lost) where the
router pushes back on the sender, and the native survey is about ten times
slower than the generic one (one NNG message and two thread hand-offs per
vote). ``pipeline`` and ``pair`` keep their promises but cost more per
message than the generic path over the node's links, which hand NNG a burst
in one go where pynng's asynchronous sends and receives hand each message
between NNG's thread and the loop: a remote ``Feeder`` streams about 3.5
times fewer items, and a hotline round trip takes about 20% longer (see
:mod:`~synaptic_mesh.transports.nng`)."""
ENDPOINTS_PREFIX: Final = "_nng.native"
ENDPOINTS_MAGIC: Final = b"SMNNGN1"
READY_WAIT: Final = 2.0
"""Seconds a native send waits at most for its socket to reach a newly seen peer."""
CLOSE_WAIT: Final = 1.0
"""Seconds ``close`` lets native deliveries in progress finish."""
_U32 = struct.Struct(">I")
_WRONG_SHAPE: Final = (ValueError, TypeError, LookupError)
"""What a header check raises for a header of the wrong shape (bad unpacking, index or key)."""

Checked = TypeVar("Checked")
"""What a lowering's header check makes of a valid header."""


def split_native(url: str, options: dict[str, Any]) -> tuple[str, frozenset[str]]:
    """``url`` without its ``native`` query option, and the native pattern set it names.

    A ``native`` keyword option wins over the URL's (it is removed from
    ``options``). Raises ``ValueError`` for a pattern name this transport
    cannot lower natively.
    """
    base, _, query = url.partition("?")
    kept, value = [], None
    for item in query.split("&") if query else ():
        key, _, val = item.partition("=")
        if key == "native":
            value = unquote(val)
        else:
            kept.append(item)  # untouched: the link URL parser decodes it
    if "native" in options:
        value = options.pop("native")
    rest = f"{base}?{'&'.join(kept)}" if kept else base
    if value is None:
        return rest, DEFAULT_NATIVE
    names = value.split(",") if isinstance(value, str) else list(value)
    chosen = frozenset(n.strip() for n in names if n.strip())
    unknown = chosen - set(SUPPORTED)
    if unknown:
        raise ValueError(
            f"native={','.join(sorted(unknown))}: NNG lowers only {', '.join(SUPPORTED)} natively"
        )
    return rest, chosen


# -- wire format ---------------------------------------------------------------------


def pack(header: Any, frames: Sequence[Buffer], limits: LinkLimits) -> bytes:
    """One native NNG message: ``header`` (msgpack) as frame 0, then ``frames``.

    Raises ``ValueError`` when the message breaks ``limits``.
    """
    pieces, _ = encode_message([msgpack.packb(header), *frames], limits)
    return b"".join(bytes(p) if type(p) is not bytes else p for p in pieces)


def unpack(data: bytes, limits: LinkLimits) -> tuple[Any, list[bytes]]:
    """The header and frames of a native message; ``ValueError`` saying what is wrong."""
    size = len(data)
    if size < 4:
        raise ValueError(f"a message of {size} bytes has no frame count")
    (count,) = _U32.unpack_from(data, 0)
    if not 2 <= count <= limits.max_frames:
        raise ValueError(f"bad frame count {count}; is the peer a Synaptic Mesh node?")
    start = 4 + 4 * count
    if start > size:
        raise ValueError(f"{count} frame lengths do not fit in {size} bytes")
    lengths = struct.unpack_from(f">{count}I", data, 4)
    if start + sum(lengths) != size:
        raise ValueError(f"frame lengths add up to {sum(lengths)} bytes, not {size - start}")
    if max(lengths) > limits.max_frame:
        raise ValueError(f"frame length {max(lengths)} exceeds max_frame {limits.max_frame}")
    frames = []
    for length in lengths:
        frames.append(data[start : start + length])
        start += length
    try:
        header = msgpack.unpackb(frames[0])
    except Exception as exc:
        raise ValueError(f"header is not msgpack: {exc}") from None
    return header, frames[1:]


def remote_of(message: pynng.Message) -> str:
    """Where a received message came from, for logs and reports."""
    try:
        pipe = message.pipe
        return str(pipe.remote_address) if pipe is not None else "unknown NNG peer"
    except (pynng.NNGException, AttributeError):
        return "unknown NNG peer"


def is_queue_list(value: Any) -> bool:
    """Whether ``value`` is a header's list of queue group names."""
    return isinstance(value, list) and all(isinstance(q, str) for q in value)


def queues_of(targets: dict[Any, Any], node_id: str) -> list[str] | None:
    """The queue groups a header's ``{node: [queues]}`` assigns to ``node_id``.

    ``None`` when the header names other nodes only; ``ValueError`` for a
    malformed list.
    """
    queues = targets.get(node_id)
    if queues is not None and not is_queue_list(queues):
        raise ValueError(f"bad queue list {queues!r:.40}")
    return queues


@dataclass
class NativeStats:
    """Counters of the native lowerings of one transport (``transport.stats``).

    ``gaps``: messages found missing by a sequence gap (NNG dropped them at a
    full pipe queue; see :mod:`~synaptic_mesh.transports.nng_bus`).
    ``fallbacks``: sends that took the generic path because the native socket
    did not reach every node that wanted the message. ``bad_frames``: native
    input refused as malformed.
    """

    sent: int = 0
    received: int = 0
    gaps: int = 0
    fallbacks: int = 0
    bad_frames: int = 0


class SequenceGaps:
    """Counts, per sending node, the messages a jump in its sequence numbers shows lost.

    Exists for the lowerings whose protocol drops a message silently at a full
    pipe queue (Bus0, Pub0): each of their messages carries the sending node's
    next sequence number, so each loss that a later message reveals is counted
    in ``stats.gaps`` and logged at WARNING as ``what`` lost at a full
    ``protocol`` queue. Losses at the very end of a sender's stream are not
    detectable.
    """

    def __init__(self, transport: _NngTransport, what: str, protocol: str) -> None:
        self.transport = transport
        self.what = what
        self.protocol = protocol
        self._last: dict[str, int] = {}  # sending node -> last sequence number seen

    def saw(self, sender: str, seq: int) -> None:
        """Note message ``seq`` of ``sender``; count the ones skipped since its last."""
        last = self._last.get(sender)
        self._last[sender] = seq
        if last is not None and seq > last + 1:
            lost = seq - last - 1
            self.transport.stats.gaps += lost
            log.warning(
                "%s: %d %s from node %s lost (a full %s queue dropped them)",
                self.transport.id,
                lost,
                self.what,
                sender,
                self.protocol,
            )


# -- one native socket -----------------------------------------------------------------


class NativeSocket:
    """One NNG protocol socket of a transport, and which peers it reaches.

    ``listen_as``: the endpoint name it listens and advertises under (``None``:
    no listener). ``dials``: the endpoint name of peers it dials (``None``: it
    dials nobody); ``dial_if(peer_id)`` narrows which peers, and
    ``dial_self`` dials this node's own endpoint too (a surveyor asking the
    node's own respondents). A dialed peer is reached once a pipe of its
    dialer is up; a lowering whose reach is learned otherwise (Bus0's hello)
    calls :meth:`reached` itself.
    """

    def __init__(
        self,
        plumbing: NativePlumbing,
        sock: pynng.Socket,
        *,
        listen_as: str | None = None,
        dials: str | None = None,
        dial_if: Callable[[str], bool] = lambda _peer: True,
        dial_self: bool = False,
        on_pipe_up: Callable[[int], None] | None = None,
        on_pipe_gone: Callable[[int], None] | None = None,
    ) -> None:
        self.plumbing = plumbing
        self.sock = sock
        self.listen_as = listen_as
        self.dials = dials
        self.dial_if = dial_if
        self.dial_self = dial_self
        self.closed = False
        self._on_pipe_up = on_pipe_up
        self._on_pipe_gone = on_pipe_gone
        self._loop = asyncio.get_running_loop()
        self._dialers: dict[str, tuple[str, pynng.Dialer]] = {}  # peer -> (url, dialer)
        self._dialer_peer: dict[int, str] = {}
        self._pipes: dict[int, str] = {}  # pipe id -> peer it reaches
        self._changed = asyncio.Event()
        sock.add_post_pipe_connect_cb(self._pipe_connected)
        sock.add_post_pipe_remove_cb(self._pipe_removed)

    # -- endpoints --------------------------------------------------------------------

    def listen(self, scheme: str, host_or_path: str, suffix: str, advertise: str) -> str:
        """Listen beside the node's address; returns the URL peers dial."""
        if scheme == "tcp":
            bracket = f"[{host_or_path}]" if ":" in host_or_path else host_or_path
            listener = self.sock.listen(f"tcp://{bracket}:0")
            port = listener.url.rpartition(":")[2]
            shown = f"[{advertise}]" if ":" in advertise else advertise
            return f"tcp://{shown}:{port}"
        path = os.path.abspath(f"{host_or_path}.{suffix}")
        self.sock.listen(f"ipc://{path}")
        return f"ipc://{path}"

    def dial(self, peer: str, url: str) -> None:
        """Dial ``peer`` at ``url`` (again only if the URL changed); NNG redials by itself."""
        known = self._dialers.get(peer)
        if known is not None and known[0] == url:
            return
        self.undial(peer)
        try:
            dialer = self.sock.dial(url, block=False)
        except pynng.NNGException as exc:
            log.warning("cannot dial %s's native endpoint %s: %s", peer, url, exc)
            return
        self._dialers[peer] = (url, dialer)
        self._dialer_peer[dialer.id] = peer

    def undial(self, peer: str) -> None:
        known = self._dialers.pop(peer, None)
        if known is not None:
            self._dialer_peer.pop(known[1].id, None)
            with contextlib.suppress(pynng.NNGException):
                known[1].close()
        for pipe, who in list(self._pipes.items()):
            if who == peer:
                del self._pipes[pipe]

    # -- reach ------------------------------------------------------------------------

    def reaches(self, peer: str) -> bool:
        return peer in self._pipes.values()

    def reached(self, pipe_id: int, peer: str) -> None:
        """Record that pipe ``pipe_id`` reaches ``peer`` (a lowering that identifies pipes)."""
        if pipe_id in self._live_pipes():
            self._pipes[pipe_id] = peer
            self._changed.set()

    def _live_pipes(self) -> set[int]:
        try:
            return {p.id for p in self.sock.pipes}
        except pynng.NNGException:
            return set()

    async def wait_reaching(self, peers: Iterable[str], timeout: float) -> set[str]:
        """Wait (at most ``timeout`` s) until a pipe reaches each of ``peers``; the missing ones."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        while True:
            reached = set(self._pipes.values())
            missing = {p for p in peers if p not in reached}
            remaining = ends - loop.time()
            if not missing or remaining <= 0 or self.closed or self._never(missing):
                return missing
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def falls_back(
        self, peers: Iterable[str], what: str, timeout: float = READY_WAIT
    ) -> bool:
        """Whether ``what`` (a send to ``peers``) must take the generic path.

        True when some of ``peers`` is still not reached after ``timeout``
        seconds; each such send is counted in ``stats.fallbacks`` and logged.
        """
        missing = await self.wait_reaching(peers, timeout)
        if not missing:
            return False
        t = self.plumbing.transport
        t.stats.fallbacks += 1
        log.info(
            "%s: %s takes the generic path: no native pipe to %s",
            t.id,
            what,
            ", ".join(sorted(missing)),
        )
        return True

    def send_now(self, data: bytes, what: str) -> None:
        """Queue ``data`` on the socket without waiting (counted in ``stats.sent``).

        Raises ``TransportClosed`` naming ``what`` when NNG refuses it.
        """
        try:
            self.sock.send(data, block=False)
        except pynng.NNGException as exc:
            raise TransportClosed(f"{what} not sent: {exc}") from None
        self.plumbing.transport.stats.sent += 1

    # -- receiving --------------------------------------------------------------------

    async def serve(
        self,
        what: str,
        check: Callable[[Any], Checked],
        take: Callable[[pynng.Message, Checked, list[bytes]], Awaitable[None]],
        *,
        drain: bool = False,
    ) -> None:
        """Read the socket until it closes, handing each valid message to ``take``.

        The one receive loop of the lowerings that read their socket message
        by message: each message goes through :meth:`NativePlumbing.checked`
        (refused input is reported as bad ``what`` and the loop goes on), then
        ``take(message, check(header), frames)``. ``drain``: after each
        message, what already waits in the socket is taken without blocking,
        a hop through NNG's thread only when the queue is empty.
        """
        while True:
            try:
                message: pynng.Message | None = await self.sock.arecv_msg()
            except pynng.NNGException:
                return  # closed
            while message is not None:
                checked = self.plumbing.checked(message, what, check)
                if checked is not None:
                    await take(message, *checked)
                message = self._waiting() if drain else None

    def _waiting(self) -> pynng.Message | None:
        """A message already queued in the socket; ``None`` when none waits or it closed."""
        try:
            return self.sock.recv_msg(block=False)
        except pynng.NNGException:  # TryAgain, or closed: the next receive ends serve
            return None

    def _never(self, peers: set[str]) -> bool:
        """Whether every one of ``peers`` told us it has no such endpoint (native is off there)."""
        known = self.plumbing.peers
        return all(p in known and self.dials not in known[p] for p in peers)

    def _pipe_connected(self, pipe: pynng.Pipe) -> None:  # an NNG thread
        try:
            dialer = lib_dialer_id(pipe)
        except pynng.NNGException:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._pipe_up, pipe.id, dialer)

    def _pipe_removed(self, pipe: pynng.Pipe) -> None:  # an NNG thread
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._pipe_down, pipe.id)

    def _pipe_up(self, pipe_id: int, dialer_id: int | None) -> None:
        if self.closed:
            return
        peer = self._dialer_peer.get(dialer_id) if dialer_id is not None else None
        if peer is not None:
            self._pipes[pipe_id] = peer
            self._changed.set()
        if self._on_pipe_up is not None:
            self._on_pipe_up(pipe_id)

    def _pipe_down(self, pipe_id: int) -> None:
        if self._pipes.pop(pipe_id, None) is not None:
            self._changed.set()
        if self._on_pipe_gone is not None and not self.closed:
            self._on_pipe_gone(pipe_id)

    def close(self) -> None:
        """Close the socket (its listener, dialers and pipes); idempotent."""
        if self.closed:
            return
        self.closed = True
        self._changed.set()
        self._dialers.clear()
        self._pipes.clear()
        self.sock.close()


def lib_dialer_id(pipe: pynng.Pipe) -> int | None:
    """The id of the dialer that made ``pipe``, ``None`` for an accepted pipe."""
    dialer = lib.nng_pipe_dialer(pipe.pipe)
    ident = lib.nng_dialer_id(dialer)
    return ident if ident > 0 else None


# -- the endpoint exchange ----------------------------------------------------------------


class NativePlumbing:
    """The native sockets of one transport and the exchange of their endpoints (see module)."""

    def __init__(self, transport: _NngTransport) -> None:
        self.transport = transport
        self.sockets: list[NativeSocket] = []
        self.endpoints: dict[str, str] = {}  # name -> URL this node advertises
        self.peers: dict[str, dict[str, str]] = {}  # peer -> its endpoints
        self.limits = LinkLimits()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._to_peer: dict[tuple[str, str], NativeSocket] = {}  # (peer, endpoint) -> socket
        self.started = False
        transport.on_peer_up.append(self._peer_up)
        transport.on_peer_down.append(self._peer_down)

    def add(self, native: NativeSocket, suffix: str | None = None) -> None:
        """Take ``native`` in: listen if it listens (``suffix`` names its IPC path)."""
        self.sockets.append(native)
        t = self.transport
        if native.listen_as is not None:
            listen = t.settings.listen
            assert listen is not None  # a mesh node always listens
            if t.nng_scheme == "tcp":
                host = listen.rpartition(":")[0].strip("[]")
                advertise = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
                url = native.listen("tcp", host, "", advertise)
            else:
                url = native.listen("ipc", listen, suffix or native.listen_as, "")
            self.endpoints[native.listen_as] = url
        if native.dial_self and native.dials in self.endpoints:
            native.dial(t.id, self.endpoints[native.dials])

    @property
    def recv_max(self) -> int:
        """The largest NNG message a native socket takes: a link message and its header."""
        return self.limits.max_message + 64 * 1024

    def socket_to(
        self, peer: str, endpoint: str, make: Callable[[], pynng.Socket]
    ) -> NativeSocket | None:
        """The socket dialing only ``peer``'s ``endpoint``, for protocols that cannot aim a
        message at one pipe (Req0, Push0): made by ``make()`` on first use, closed when the
        peer goes down; ``None`` if the peer has no such endpoint (native is off there, or
        its table has not arrived yet)."""
        known = self._to_peer.get((peer, endpoint))
        if known is not None and not known.closed:
            return known
        url = self.peers.get(peer, {}).get(endpoint)
        if url is None:
            return None
        native = NativeSocket(self, make(), dials=endpoint, dial_if=lambda p: p == peer)
        self.add(native)
        native.dial(peer, url)
        self._to_peer[(peer, endpoint)] = native
        return native

    async def start(self) -> None:
        """Subscribe the endpoint subject and tell every peer already up."""
        t = self.transport
        await t.subscribe(f"{ENDPOINTS_PREFIX}.{t.id}", self._on_endpoints)
        self.started = True
        for peer in t.peer_ids():
            await self._announce(peer, answer=True)

    def _peer_up(self, peer: str) -> Any:
        if self.started:
            return self._announce(peer, answer=True)
        return None

    def _peer_down(self, peer: str, _reason: str) -> None:
        self.peers.pop(peer, None)
        for key in [key for key in self._to_peer if key[0] == peer]:
            native = self._to_peer.pop(key)
            native.close()
            if native in self.sockets:
                self.sockets.remove(native)
        for native in self.sockets:
            native.undial(peer)

    async def _announce(self, peer: str, *, answer: bool) -> None:
        t = self.transport
        table = msgpack.packb({"id": t.id, "endpoints": self.endpoints, "answer": answer})
        with contextlib.suppress(Exception):  # the peer went away meanwhile: its up redoes it
            await t.publish(f"{ENDPOINTS_PREFIX}.{peer}", [ENDPOINTS_MAGIC, table])

    async def _on_endpoints(
        self, subject: str, frames: Sequence[Any], reply_to: str | None
    ) -> None:
        try:
            if len(frames) != 2 or bytes(frames[0]) != ENDPOINTS_MAGIC:
                raise ValueError("not an endpoint table")
            table = msgpack.unpackb(bytes(frames[1]))
            peer, endpoints, answer = table["id"], table["endpoints"], table["answer"]
            if not (
                isinstance(peer, str)
                and isinstance(endpoints, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in endpoints.items())
            ):
                raise ValueError("malformed endpoint table")
        except Exception as exc:
            data = bytes(frames[-1]) if frames else b""
            self.bad_input("a router peer", f"native endpoint table refused: {exc}", data)
            return
        if peer == self.transport.id:
            return
        self.peers[peer] = endpoints
        for native in self.sockets:
            url = endpoints.get(native.dials) if native.dials else None
            if url is not None and native.dial_if(peer):
                native.dial(peer, url)
        if answer:
            await self._announce(peer, answer=False)

    def usable(self, native: NativeSocket | None, name: str) -> NativeSocket:
        """``native``, for a send; ``TransportClosed`` when the transport or ``native`` is closed.

        The error names the socket (``the native {name} is closed``).
        """
        t = self.transport
        t._check_open()
        if native is None or native.closed:
            raise TransportClosed(f"transport {t.url}: the native {name} is closed")
        return native

    def checked(
        self,
        message: pynng.Message,
        what: str,
        check: Callable[[Any], Checked],
        subject: str | None = None,
    ) -> tuple[Checked, list[bytes]] | None:
        """What ``check`` makes of a received message's header, and its frames; ``None``: refused.

        Exists so every lowering refuses bad input alike: a message that does
        not unpack, or whose header ``check`` rejects (by raising
        ``ValueError``, or ``TypeError``/``LookupError`` for a header of the
        wrong shape), is reported through :meth:`bad_input` as
        ``"{what}: {reason}"``.
        """
        data = message.bytes
        try:
            header, frames = unpack(data, self.limits)
            return check(header), frames
        except _WRONG_SHAPE as exc:
            self.bad_input(remote_of(message), f"{what}: {exc}", data, subject)
            return None

    async def deliver(
        self,
        what: str,
        subject: str,
        frames: list[bytes],
        reply_to: str | None,
        queues: list[str],
    ) -> None:
        """Deliver a received native message to this node's subscriptions (see ``deliver_here``).

        Exists so that a delivery that fails is logged (``delivering {what} on
        {subject} failed``) and never ends the receive loop that called it.
        """
        t = self.transport
        try:
            await t.deliver_here(subject, frames, reply_to, queues)
        except Exception:
            log.exception("%s: delivering %s on %s failed", t.id, what, subject)

    def bad_input(self, peer: str, reason: str, data: bytes, subject: str | None = None) -> None:
        """Log and report refused native input (the node dead-letters it)."""
        t = self.transport
        t.stats.bad_frames += 1
        log.error("%s: refused native input from %s: %s", t.id, peer, reason)
        t._bad_input(BadFrame(peer, reason, subject, (), data[:32].hex()))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A task the plumbing owns and cancels at close."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Close every native socket, then wait for the native tasks to end; idempotent.

        Sockets first: closing one completes its pending receives (``Closed``),
        so the readers end by themselves. Cancelling a pending pynng receive
        instead is not safe: now and then its completion never arrives and
        the task hangs in ``cancelling`` for good.
        """
        for native in self.sockets:
            native.close()
        self.sockets.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_WAIT)
        for task in list(self._tasks):  # a handler still busy after CLOSE_WAIT
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_WAIT)
