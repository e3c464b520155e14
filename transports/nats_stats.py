"""What a NATS transport counts: refused, buffered and lost messages, and connection losses.

A mixin of :class:`~synaptic_mesh.transports.nats.NatsTransport` (and so of
``nats+js://``), kept apart so that the transport module holds lifecycle,
publishing and subscribing only; it uses the transport's ``stats``, ``url``,
``settings`` and state.

Broker away: the client reconnects forever (``max_reconnects=-1``) and the
node keeps running. Publishes made while disconnected are buffered by the
client, up to ``buffer`` bytes, and sent on reconnect; past that ``publish``
raises :class:`~synaptic_mesh.runtime.errors.PublishRefused`. Messages that
were already in the socket when the server died are lost without anyone
knowing (core NATS has no acknowledgements): at-most-once. ``stats`` counts
what is known: refused and buffered publishes, disconnects, reconnects,
messages the client dropped for a slow handler, malformed messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.errors

from synaptic_mesh.runtime.errors import PublishRefused, TransportClosed
from synaptic_mesh.transports.nats_options import NatsSettings

log = logging.getLogger("synaptic_mesh.nats")


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


class NatsAccounting:
    """Turn connection events and publish errors into ``stats`` and log lines."""

    url: str
    settings: NatsSettings
    stats: NatsStats
    _state: str
    _max_payload: int

    def _count_error(self, exc: Exception) -> None:
        """Count a message the client dropped for a slow handler; log any other error."""
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
