"""``nats://host:port[,host:port...]``: the mesh on a NATS server, through nats-py.

NATS is the model the transport SPI was written after, so the mapping is one
to one: a mesh subject is a NATS subject (under an optional ``prefix``), a
queue group is a NATS queue group, ``reply_to`` is the NATS reply subject.
URL options (credentials, TLS, prefix, buffer, timeouts) are described in
:mod:`synaptic_mesh.transports.nats_options`; how frames are packed in one
NATS message in :mod:`synaptic_mesh.transports.nats_frames` and in the
"NATS" section of ``docs/wire-format.md``.

Promises (``capabilities``):

* ordered per publisher and subject (one connection, one TCP stream);
  at-most-once (core NATS stores nothing), not durable, no replay; use
  ``nats+js://`` (:mod:`~synaptic_mesh.transports.nats_js`) for that.
* ``knows_interest``: a publish with ``reply_to`` that no subscription
  matches gets the server's "no responders" status (``503``) on
  ``reply_to``, delivered to its handler as the empty frame sequence at once.
* ``max_message`` is the server's ``max_payload`` (from its INFO) minus
  4 KiB kept for headers; the class attribute holds the NATS default (1 MiB)
  until ``start`` has read the real value.

Broker away: the client reconnects forever (``max_reconnects=-1``) and the
node keeps running. Publishes made while disconnected are buffered by the
client, up to ``buffer`` bytes, and sent on reconnect; past that ``publish``
raises :class:`~synaptic_mesh.runtime.errors.PublishRefused`. Messages that
were already in the socket when the server died are lost without anyone
knowing (core NATS has no acknowledgements): at-most-once. ``stats`` counts
what is known: refused and buffered publishes, disconnects, reconnects,
messages the client dropped for a slow handler, malformed messages.

``subscribe`` returns once the server has the subscription (a PING/PONG
round trip after a new one), so an ask sent right after a remote ``spawn``
finds its actor. A node's subscriptions sharing a pattern and queue share one
server subscription; the transport hands each message to them in subscription
order (or in turn, for a queue group). ``publish`` to a subject this node
subscribes to itself returns once the message is back in those
subscriptions (a PING/PONG), so a node waiting for idleness sees it.

Handlers run in each group's own task (nats-py's), in order; a slow
handler lets the client hold up to ``pending_msgs`` messages for it, after
which the client drops them (NATS' slow consumer rule), counted in
``stats.slow_consumer_drops``.

Native lowerings: none beyond the mapping above. Request-reply already is
NATS request-reply (the node's inbox ``_INBOX.<node>.<corr>`` is a NATS
reply subject and "no responders" is the server's), pipelines already run on
NATS queue groups, and a survey is one publish collecting many replies on the
inbox until the deadline or the quorum, so the generic lowerings are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from synaptic_mesh.runtime.errors import PublishRefused, TransportClosed
from synaptic_mesh.runtime.subjects import SubjectTable, validate_pattern, validate_subject
from synaptic_mesh.transports.base import (
    NO_RESPONDERS,
    BadFrame,
    Capabilities,
    Frame,
    Handler,
    Subscription,
    Transport,
)
from synaptic_mesh.transports.nats_frames import (
    FRAMES_HEADER,
    HEADER_RESERVE,
    NO_RESPONDERS_STATUS,
    REPLY_HEADER,
    STATUS_HEADER,
    FrameError,
    pack,
    unpack,
)
from synaptic_mesh.transports.nats_options import NatsSettings, SubjectMap, parse_url

log = logging.getLogger("synaptic_mesh.nats")

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""NATS' default ``max_payload``; the real one is read from the server at start."""


@dataclass
class NatsStats:
    """What a NATS transport refused, buffered or lost, as far as it can know.

    ``refused``: publishes that raised ``PublishRefused``. ``buffered``:
    publishes accepted while disconnected (sent on reconnect if the buffer
    survives). ``disconnects`` / ``reconnects``: connection losses and
    recoveries. ``slow_consumer_drops``: messages the client dropped because a
    handler fell behind. ``bad_frames``: messages whose frames could not be
    read. ``publish_retries``: JetStream publish attempts repeated after a
    missing acknowledgement. ``redeliveries_skipped``: JetStream redeliveries
    of a message this subscription had already handled.
    """

    published: int = 0
    refused: int = 0
    buffered: int = 0
    disconnects: int = 0
    reconnects: int = 0
    slow_consumer_drops: int = 0
    bad_frames: int = 0
    publish_retries: int = 0
    redeliveries_skipped: int = 0


class NatsSubscription(Subscription):
    """One mesh subscription: a handler in a :class:`_Group`, or its own nats-py subscription."""

    __slots__ = ("_owner", "active", "group", "handler", "nats_sub", "pattern", "queue")

    def __init__(
        self, owner: NatsTransport, pattern: str, handler: Handler, queue: str | None
    ) -> None:
        self._owner = owner
        self.pattern = pattern
        self.queue = queue
        self.handler = handler
        self.active = True
        self.group: _Group | None = None
        self.nats_sub: Any = None

    async def unsubscribe(self) -> None:
        if not self.active:
            return
        self.active = False
        await self._owner._detach(self)


class _Group:
    """The subscriptions of one transport sharing a ``(pattern, queue)``: one NATS subscription.

    The server sends each message once per connection and key; the group
    hands it to every member in subscription order, or, for a queue group,
    to one member in turn. So the server holds one subscription per key and
    node, and the members of a node hear a message in the order they
    subscribed (NATS' own fan-out order between subscriptions is not defined).
    """

    __slots__ = ("members", "nats_sub", "pattern", "queue", "turn")

    def __init__(self, pattern: str, queue: str | None) -> None:
        self.pattern = pattern
        self.queue = queue
        self.members: list[NatsSubscription] = []
        self.nats_sub: Any = None
        self.turn = 0


class NatsTransport(Transport):
    """Core NATS (see module docstring)."""

    scheme: ClassVar[str] = "nats"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=True,
        delivery="at-most-once",
        durable=False,
        replay=False,
        cross_host=True,
        zero_copy=False,
        max_message=DEFAULT_MAX_PAYLOAD - HEADER_RESERVE,
        native=frozenset(),
        by_reference=False,
        knows_interest=True,
    )

    def __init__(self, url: str = "nats://127.0.0.1:4222", **options: Any) -> None:
        super().__init__(url, **options)
        self.settings: NatsSettings = parse_url(url, options)
        self.subjects = SubjectMap(self.settings.prefix)
        self.stats = NatsStats()
        self.id = "nats-client"
        self.on_peer_down: list[Callable[[str, str], Any]] = []  # never fired: no peers here
        self.on_bad_frame: list[Callable[[BadFrame], Any]] = []
        self._nc: Any = None
        self._state = "new"
        self._subs: dict[NatsSubscription, None] = {}
        self._groups: dict[tuple[str, str | None], _Group] = {}
        self._local: SubjectTable[_Group] = SubjectTable()
        self._wires: dict[str, str] = {}
        self._max_payload = DEFAULT_MAX_PAYLOAD
        self._max_message = DEFAULT_MAX_PAYLOAD - HEADER_RESERVE
        self._fatal: asyncio.Future[BaseException] | None = None

    @property
    def client(self) -> Any:
        """The nats-py client (``None`` before ``start``), for tools and tests."""
        return self._nc

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Connect (``connect_timeout``); raises ``TransportClosed`` if no server answers."""
        if self._state == "running":
            return
        if self._state != "new":
            raise TransportClosed(f"transport {self.url} was closed; open a new one")
        self._state = "starting"
        options = self.settings.connect_options()
        options.setdefault("name", self.id)
        # nats-py retries a first connection as often as reconnections: bound it
        # (two tries per server), then reconnect as configured (forever by default).
        options["max_reconnect_attempts"] = 1
        nc = NatsClient()
        # A failed TLS handshake can leave nats-py retrying without end: stop at
        # the first one (retrying cannot fix a certificate) or after ``bound``.
        self._fatal = asyncio.get_running_loop().create_future()
        bound = 2 * len(self.settings.servers) * (self.settings.connect_timeout + 0.5) + 1
        connect = asyncio.ensure_future(
            nc.connect(
                **options,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            )
        )
        await asyncio.wait((connect, self._fatal), timeout=bound, return_when="FIRST_COMPLETED")
        error: BaseException | None = None
        if connect.done():
            error = connect.exception()
        else:
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
            error = self._fatal.result() if self._fatal.done() else TimeoutError(f"{bound:g} s")
        self._fatal.cancel()
        if error is not None:
            self._state = "closed"
            with contextlib.suppress(Exception):
                await nc.close()
            servers = ", ".join(self.settings.servers)
            raise TransportClosed(f"cannot connect to NATS at {servers}: {error!r}") from error
        self._nc = nc
        self._nc.options["max_reconnect_attempts"] = self.settings.max_reconnects
        self._max_payload = self._nc.max_payload
        self._max_message = self._max_payload - HEADER_RESERVE
        if self._max_payload != DEFAULT_MAX_PAYLOAD:
            self.capabilities = dataclasses.replace(  # type: ignore[misc]
                type(self).capabilities, max_message=self._max_payload - HEADER_RESERVE
            )
        self._state = "running"
        try:
            await self._started()
        except BaseException:
            await self.close()
            raise

    async def _started(self) -> None:
        """Hook for subclasses: the connection is up (JetStream checks its stream here)."""

    async def close(self) -> None:
        """Let deliveries in progress finish (``drain_timeout``), then disconnect; idempotent."""
        if self._state in ("closing", "closed"):
            while self._state == "closing":
                await asyncio.sleep(0.001)
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        nc = self._nc
        try:
            if nc is not None and nc.is_connected:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
                    await asyncio.wait_for(nc.drain(), self.settings.drain_timeout + 1)
            if nc is not None and not nc.is_closed:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
                    await nc.close()
        finally:
            self._subs.clear()
            self._groups.clear()
            self._local.clear()
            self._state = "closed"

    def _check_open(self) -> None:
        if self._state != "running":
            raise TransportClosed(f"transport {self.url} is {self._state}, not running")

    # -- connection events --------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        fatal = self._fatal
        if (
            self._state == "starting"
            and isinstance(exc, ssl.SSLError)
            and fatal
            and not fatal.done()
        ):
            fatal.set_result(exc)
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.stats.slow_consumer_drops += 1
            if self.stats.slow_consumer_drops in (1, 10, 100, 1000) or (
                self.stats.slow_consumer_drops % 10_000 == 0
            ):
                log.warning(
                    "%s: slow handler on %s: %d messages dropped so far",
                    self.url,
                    exc.subject,
                    self.stats.slow_consumer_drops,
                )
            return
        log.debug("%s: %r", self.url, exc)

    async def _on_disconnect(self) -> None:
        if self._state == "running":
            self.stats.disconnects += 1
            log.warning("%s: disconnected from NATS; reconnecting", self.url)

    async def _on_reconnect(self) -> None:
        self.stats.reconnects += 1
        log.warning("%s: reconnected to NATS", self.url)

    # -- publish -------------------------------------------------------------------

    def _wire(self, subject: str) -> str:
        """The wire subject of ``subject``, validated once and cached."""
        wire = self._wires.get(subject)
        if wire is None:
            validate_subject(subject)
            if len(self._wires) > 100_000:
                self._wires.clear()
            wire = self._wires[subject] = self.subjects.wire(subject)
        return wire

    def _payload(self, frames: Sequence[Frame]) -> tuple[Any, dict[str, str] | None]:
        """Payload and headers of ``frames``; ``ValueError`` above ``max_message``."""
        if len(frames) == 1:
            payload: Any = frames[0]
            headers = None
            size = len(payload) if type(payload) is bytes else memoryview(payload).nbytes
        else:
            payload, headers = pack(frames)
            size = len(payload)
        if size > self._max_payload - HEADER_RESERVE:
            raise ValueError(
                f"message of {size} bytes exceeds max_message {self._max_payload - HEADER_RESERVE}"
            )
        return payload, headers

    async def publish(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> None:
        if self._state != "running":
            self._check_open()
        # The common case inline (one bytes frame, a known subject): this is the hot path.
        payload = frames[0] if len(frames) == 1 else None
        if type(payload) is bytes and len(payload) <= self._max_message:
            headers = None
        else:
            payload, headers = self._payload(frames)
        wire = self._wires.get(subject) or self._wire(subject)
        reply = (self._wires.get(reply_to) or self._wire(reply_to)) if reply_to else ""
        nc = self._nc
        try:
            await nc.publish(wire, payload, reply, headers)
        except nats.errors.Error as exc:
            raise self._publish_failed(subject, exc) from None
        self.stats.published += 1
        if not nc.is_connected:
            self.stats.buffered += 1
        if self._groups and self._local.match(subject):
            await self._echo(subject)

    def _publish_failed(self, subject: str, exc: Exception) -> Exception:
        """The mesh error for a nats-py publish error."""
        if isinstance(exc, nats.errors.OutboundBufferLimitError):
            self.stats.refused += 1
            return PublishRefused(
                subject,
                f"not connected to NATS and the reconnect buffer "
                f"({self.settings.buffer} bytes) is full",
            )
        if isinstance(exc, nats.errors.MaxPayloadError):
            return ValueError(f"message exceeds the server's max_payload {self._max_payload}")
        if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
            return TransportClosed(f"transport {self.url} is closed: {exc!r}")
        return exc

    # -- subscribe -------------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        self._check_open()
        validate_pattern(pattern)
        if queue is not None:
            validate_subject(queue)
        sub = NatsSubscription(self, pattern, handler, queue)
        if self._stored(pattern):
            await self._attach_stored(sub)
        else:
            await self._join(sub)
        self._subs[sub] = None
        return sub

    def _stored(self, pattern: str) -> bool:
        """Whether ``pattern`` is read from a stream (JetStream); never on core NATS."""
        return False

    async def _attach_stored(self, sub: NatsSubscription) -> None:
        raise NotImplementedError

    async def _join(self, sub: NatsSubscription) -> None:
        """Add ``sub`` to the group of its key, subscribing on the server for a new key."""
        key = (sub.pattern, sub.queue)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(sub.pattern, sub.queue)
            self._local.add(sub.pattern, group)
            try:
                group.nats_sub = await self._nc.subscribe(
                    self.subjects.wire(sub.pattern),
                    queue=sub.queue or "",
                    cb=self._callback(group),
                    pending_msgs_limit=self.settings.pending_msgs,
                    pending_bytes_limit=self.settings.pending_bytes,
                )
            except BaseException:
                self._drop_group(group)
                raise
            await self._confirm()
        group.members.append(sub)
        sub.group = group

    async def _confirm(self) -> None:
        """Wait until the server has applied what was sent (a PING/PONG round trip).

        After a new subscription: a publish from any other connection made
        after ``subscribe`` returned then finds it (no "no responders" for an
        ask sent right after a remote ``spawn``). Skipped while disconnected:
        the client sends the subscription again on reconnect.
        """
        if self._nc.is_connected:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
                await self._nc.flush(timeout=max(1, int(self.settings.connect_timeout)))

    def _drop_group(self, group: _Group) -> None:
        key = (group.pattern, group.queue)
        if self._groups.get(key) is group:
            del self._groups[key]
            self._local.remove(group.pattern, group)

    async def _detach(self, sub: NatsSubscription) -> None:
        self._subs.pop(sub, None)
        group, sub.group = sub.group, None
        nats_sub = sub.nats_sub
        if group is not None:
            if sub in group.members:
                group.members.remove(sub)
            if group.members:
                return
            self._drop_group(group)
            nats_sub = group.nats_sub
        sub.nats_sub = None
        if nats_sub is not None and self._state == "running":
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
                await nats_sub.unsubscribe()

    def _callback(self, group: _Group) -> Callable[[Any], Any]:
        """The nats-py callback of a group: the receive hot path."""
        members = group.members
        mesh = self.subjects.mesh
        read = self._read
        url = self.url

        async def on_message(msg: Any) -> None:
            if not members:
                return
            if msg.headers is None:
                frames: Sequence[Any] = (msg.data,)
                reply = msg.reply
            else:
                got = read(msg)
                if got is None:
                    return
                frames, reply = got
            subject = mesh(msg.subject)
            reply_to = mesh(reply) if reply else None
            if group.queue is None:
                chosen = members if len(members) == 1 else list(members)
            else:
                group.turn += 1
                chosen = [members[group.turn % len(members)]]
            for sub in chosen:
                if sub.active:
                    try:
                        await sub.handler(subject, frames, reply_to)
                    except Exception:
                        log.exception("%s: handler of %s failed on %s", url, sub.pattern, subject)

        return on_message

    async def _echo(self, subject: str) -> None:
        """Return once this node's own subscriptions matching ``subject`` hold the message.

        A PING/PONG round trip: the server answers the PING after it sent us
        every message of the publish before it, so they are in the
        subscriptions' queues; then let those queues be taken. This is what
        lets a node that waits for idleness see a message it sent itself.
        """
        nc = self._nc
        if not nc.is_connected:
            return
        try:
            await nc.flush(timeout=max(1, int(self.settings.drain_timeout)))
        except (TimeoutError, nats.errors.Error, OSError):
            return
        match = self._local.match(subject)
        groups = [g for g in match.plain if g.nats_sub is not None]
        for _ in range(100):
            if not any(g.nats_sub.pending_msgs for g in groups):
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    def _read(self, msg: Any) -> tuple[Sequence[Any], str | None] | None:
        """Frames and reply subject of a message with headers; ``None`` if refused."""
        headers = msg.headers
        status = headers.get(STATUS_HEADER)
        if status is not None:
            if status == NO_RESPONDERS_STATUS and not msg.data:
                return NO_RESPONDERS, None
            log.debug("%s: status %s on %s ignored", self.url, status, msg.subject)
            return None
        reply = headers.get(REPLY_HEADER) or msg.reply
        lengths = headers.get(FRAMES_HEADER)
        if lengths is None:
            return (msg.data,), reply
        try:
            return unpack(msg.data, lengths), reply
        except FrameError as exc:
            self._bad_frame(msg, str(exc))
            return None

    def _bad_frame(self, msg: Any, reason: str) -> None:
        """Report a message that cannot be read; the node dead-letters it."""
        self.stats.bad_frames += 1
        log.warning("%s: refused a message on %s: %s", self.url, msg.subject, reason)
        bad = BadFrame(
            peer=f"nats publisher on {msg.subject}",
            reason=reason,
            subject=self.subjects.mesh(msg.subject),
            preview=bytes(msg.data[:48]).hex(),
        )
        for hook in list(self.on_bad_frame):
            try:
                hook(bad)
            except Exception:
                log.exception("%s: bad-frame hook %r failed", self.url, hook)
