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

This module holds the transport's lifecycle, publishing and subscribing; the rest is in

* :mod:`~synaptic_mesh.transports.nats_groups`: a node's subscriptions sharing a
  pattern and queue share one server subscription and are served in order;
  ``subscribe`` returns once the server has the subscription, and
  ``settled()`` once what this node published is back in its own subscriptions;
* :mod:`~synaptic_mesh.transports.nats_stats`: broker away (the client
  reconnects forever and buffers publishes up to ``buffer`` bytes) and what
  ``stats`` counts of what is refused, buffered or lost.

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
import ssl
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import nats
import nats.errors

from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.runtime.subjects import SubjectTable, validate_pattern, validate_subject
from synaptic_mesh.transports.base import (
    BadFrame,
    Capabilities,
    Frame,
    Handler,
    Subscription,
    Transport,
)
from synaptic_mesh.transports.nats_frames import HEADER_RESERVE, pack
from synaptic_mesh.transports.nats_groups import (
    GuardedNatsClient,
    NatsDelivery,
    NatsSubscription,
    SubscriptionGroup,
)
from synaptic_mesh.transports.nats_options import NatsSettings, SubjectMap, parse_url
from synaptic_mesh.transports.nats_stats import NatsAccounting, NatsStats

__all__ = ["DEFAULT_MAX_PAYLOAD", "NatsStats", "NatsSubscription", "NatsTransport"]

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""NATS' default ``max_payload``; the real one is read from the server at start."""


class NatsTransport(NatsDelivery, NatsAccounting, Transport):
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
        self._groups: dict[tuple[str, str | None], SubscriptionGroup] = {}
        self._local: SubjectTable[SubscriptionGroup] = SubjectTable()
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
        nc = GuardedNatsClient(self._unreadable)
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
        self._count_error(exc)

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

    async def subscribe_except(self, pattern: str, handler: Handler, unless: str) -> Subscription:
        """``subscribe``, never for messages published on ``unless``.

        The server still sends this node's own publishes on ``unless`` back to
        it; while every local subscription of ``pattern`` leaves ``unless`` out,
        the client drops them as it reads them (``GuardedNatsClient.echoes``).
        """
        validate_subject(unless)
        sub = await super().subscribe_except(pattern, handler, unless)
        if isinstance(sub, NatsSubscription) and sub.group is not None:
            sub.unless = unless
            self._filter_echoes(sub.group)
        return sub

    def _stored(self, pattern: str) -> bool:
        """Whether ``pattern`` is read from a stream (JetStream); never on core NATS."""
        return False

    async def _attach_stored(self, sub: NatsSubscription) -> None:
        raise NotImplementedError
