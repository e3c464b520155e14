"""``nats+js://host:port?durable=orders.>``: NATS with JetStream for durable subjects.

Everything of ``nats://`` (:mod:`~synaptic_mesh.transports.nats`) holds, and
the subjects matching the ``durable`` patterns (see
:mod:`~synaptic_mesh.transports.nats_options`) are stored:

* At ``start`` the stream (``stream``, default ``MESH`` or ``MESH_<prefix>``)
  is created with the durable patterns as its subjects, or checked and
  extended when it exists (so every node of a mesh may start first).
* A publish on a durable subject is a JetStream publish: it returns once the
  server stored the message. ``Nats-Msg-Id`` is the envelope's ``id``, so when
  an acknowledgement is lost (the server went away) and the publish is tried
  again (for up to ``publish_retry`` seconds) the server drops the second
  copy; after that the publish raises ``PublishRefused``. ``reply_to`` travels
  in the ``Mesh-Reply`` header: the NATS reply subject belongs to the ack.
* A subscription whose pattern lies inside a durable pattern reads from the
  stream through a push consumer with explicit acks. A queue group (every
  actor is the queue group of its own subject) gets a *durable* consumer
  named after the group and the pattern, so what is published while no member
  runs waits for the next one, and members on several nodes share it. A plain
  subscription gets an ephemeral consumer that starts with new messages.
  The message is acknowledged once the handler returned; one that is not
  acknowledged within ``ack_wait`` seconds is delivered again.
* A redelivery of a message this subscription already handled (its ack was
  lost with the connection) is acknowledged and skipped, so a handler sees
  each stored message once as long as its node lives (the last 100 000
  stream sequence numbers are remembered per subscription). A redelivery to
  another member of the group after a node died is delivered: at-least-once.
* :meth:`NatsJsTransport.replay` reads a durable subject again from any
  stream sequence number.

Capabilities: at-least-once, durable, replay. Not ``ordered``: a redelivery
comes after later messages. ``knows_interest`` holds for the other subjects
(core NATS); on a durable subject the stream itself takes every message, so
an ask there with nobody serving waits for a server until its timeout.
Subjects under ``_INBOX.`` are never durable, and durable patterns must start
with a literal token (a stream on ``>`` would swallow replies and the
JetStream API itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
from nats.js import api

from synaptic_mesh.runtime.errors import PublishRefused, TransportClosed
from synaptic_mesh.runtime.subjects import matches
from synaptic_mesh.transports.base import Capabilities, Frame, Handler, Subscription
from synaptic_mesh.transports.nats import DEFAULT_MAX_PAYLOAD, NatsSubscription, NatsTransport
from synaptic_mesh.transports.nats_frames import (
    FRAMES_HEADER,
    HEADER_RESERVE,
    MSG_ID_HEADER,
    REPLY_HEADER,
    FrameError,
    envelope_id,
    unpack,
)

log = logging.getLogger("synaptic_mesh.nats")

SEEN_WINDOW = 100_000
"""Stream sequence numbers a subscription remembers to skip redeliveries."""

_STREAM_IN_USE = 10058


def inside(pattern: str, durable: str) -> bool:
    """Whether every subject ``pattern`` matches is also matched by ``durable``."""
    mine, theirs = pattern.split("."), durable.split(".")
    for i, token in enumerate(theirs):
        if token == ">":
            return len(mine) > i
        if i >= len(mine) or mine[i] == ">":
            return False
        if token != "*" and mine[i] != token:
            return False
    return len(mine) == len(theirs)


def consumer_name(queue: str, pattern: str) -> str:
    """A durable consumer name for ``queue`` on ``pattern`` (letters, digits, ``-_``)."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", queue)[:80]
    return f"{readable}_{zlib.crc32(f'{queue} {pattern}'.encode()):08x}"


class _Seen:
    """A bounded set of stream sequence numbers (oldest forgotten first)."""

    __slots__ = ("_order", "_set")

    def __init__(self) -> None:
        self._set: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, seq: int) -> bool:
        """Record ``seq``; ``False`` if it was already there."""
        if seq in self._set:
            return False
        self._set.add(seq)
        self._order.append(seq)
        if len(self._order) > SEEN_WINDOW:
            self._set.discard(self._order.popleft())
        return True


class NatsJsTransport(NatsTransport):
    """NATS plus JetStream for the durable subjects (see module docstring)."""

    scheme: ClassVar[str] = "nats+js"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ordered=False,
        delivery="at-least-once",
        durable=True,
        replay=True,
        cross_host=True,
        zero_copy=False,
        max_message=DEFAULT_MAX_PAYLOAD - HEADER_RESERVE,
        native=frozenset(),
        by_reference=False,
        knows_interest=True,
    )

    def __init__(self, url: str = "nats+js://127.0.0.1:4222", **options: Any) -> None:
        super().__init__(url, **options)
        durable = self.settings.durable
        if not durable:
            raise ValueError(f"{url!r}: nats+js needs ?durable=PATTERNS (e.g. orders.>)")
        for pattern in durable:
            first = pattern.split(".", 1)[0]
            if first in ("*", ">", "_INBOX", "_WIRE"):
                raise ValueError(
                    f"durable pattern {pattern!r} must start with a literal token "
                    "other than _INBOX (a stream there would take replies too)"
                )
        self._durable_cache: dict[str, bool] = {}
        self._js: Any = None

    @property
    def stream(self) -> str:
        """The name of the JetStream stream this transport stores durable subjects in."""
        return self.settings.stream_name

    def is_durable(self, subject: str) -> bool:
        """Whether a publish on ``subject`` is stored."""
        found = self._durable_cache.get(subject)
        if found is None:
            found = not subject.startswith("_INBOX.") and any(
                matches(p, subject) for p in self.settings.durable
            )
            if len(self._durable_cache) > 100_000:
                self._durable_cache.clear()
            self._durable_cache[subject] = found
        return found

    # -- start: the stream --------------------------------------------------------

    async def _started(self) -> None:
        self._js = self._nc.jetstream(timeout=self.settings.publish_timeout)
        try:
            await self._ensure_stream()
        except (
            TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
        ) as exc:
            raise TransportClosed(
                f"JetStream does not answer at {', '.join(self.settings.servers)} "
                f"(is the server started with -js?): {exc!r}"
            ) from exc

    async def _ensure_stream(self) -> None:
        """Create the stream, or check it and add the durable patterns it lacks."""
        wanted = [self.subjects.wire(p) for p in self.settings.durable]
        for _ in range(3):
            try:
                info = await self._js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                config = api.StreamConfig(
                    name=self.stream,
                    subjects=wanted,
                    storage=api.StorageType(self.settings.storage),
                    num_replicas=self.settings.replicas,
                    duplicate_window=self.settings.dup_window,
                )
                try:
                    await self._js.add_stream(config)
                    return
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code == _STREAM_IN_USE:
                        continue  # another node created it meanwhile: check it
                    raise TransportClosed(f"cannot create stream {self.stream}: {exc}") from exc
            missing = [s for s in wanted if s not in (info.config.subjects or [])]
            if missing:
                info.config.subjects = [*(info.config.subjects or []), *missing]
                try:
                    await self._js.update_stream(info.config)
                except nats.js.errors.APIError as exc:
                    raise TransportClosed(f"cannot extend stream {self.stream}: {exc}") from exc
            return
        raise TransportClosed(f"stream {self.stream} could neither be created nor found")

    async def close(self) -> None:
        if self.settings.delete_stream and self._state == "running" and self.connected:
            for sub in list(self._subs):
                await sub.unsubscribe()
            try:
                await self.delete_stream()
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("%s: stream %s not deleted: %r", self.url, self.stream, exc)
        await super().close()

    async def delete_stream(self) -> None:
        """Delete this transport's stream and everything stored in it (tests, teardown)."""
        self._check_open()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_stream(self.stream)

    # -- publish --------------------------------------------------------------------

    async def publish(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> None:
        if self._state != "running":
            self._check_open()
        if not self.is_durable(subject):
            await super().publish(subject, frames, reply_to)
            return
        payload, headers = self._payload(frames)
        headers = dict(headers) if headers else {}
        msg_id = envelope_id(frames[0])
        if msg_id:
            headers[MSG_ID_HEADER] = msg_id
        if reply_to:
            headers[REPLY_HEADER] = self._wire(reply_to)
        await self._js_publish(subject, self._wire(subject), payload, headers)

    async def _js_publish(
        self, subject: str, wire: str, payload: Any, headers: dict[str, str]
    ) -> None:
        """Publish until stored, repeating with the same id for ``publish_retry`` seconds."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settings.publish_retry
        pause = 0.02
        payload = bytes(payload) if not isinstance(payload, bytes) else payload
        while True:
            try:
                await self._js.publish(
                    wire, payload, timeout=self.settings.publish_timeout, headers=headers
                )
                self.stats.published += 1
                return
            except (
                TimeoutError,
                nats.js.errors.NoStreamResponseError,
                nats.js.errors.ServiceUnavailableError,
                nats.errors.OutboundBufferLimitError,
                nats.errors.ConnectionReconnectingError,
            ) as exc:
                reason = f"no acknowledgement from JetStream: {exc!r}"
            except nats.js.errors.APIError as exc:
                self.stats.refused += 1
                raise PublishRefused(subject, f"JetStream refused it: {exc}") from None
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                raise TransportClosed(f"transport {self.url} is closed") from None
            if self._state != "running":
                raise TransportClosed(f"transport {self.url} closed while publishing")
            if loop.time() >= give_up:
                self.stats.refused += 1
                raise PublishRefused(
                    subject, f"{reason}; gave up after {self.settings.publish_retry:g} s"
                )
            self.stats.publish_retries += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    # -- subscribe --------------------------------------------------------------------

    def _durable_pattern(self, pattern: str) -> bool:
        return not pattern.startswith("_INBOX.") and any(
            inside(pattern, d) for d in self.settings.durable
        )

    def _stored(self, pattern: str) -> bool:
        return self._durable_pattern(pattern)

    async def _attach_stored(self, sub: NatsSubscription) -> None:
        s = self.settings
        wire = self.subjects.wire(sub.pattern)
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_ack_pending=s.max_ack_pending,
            deliver_policy=api.DeliverPolicy.ALL if sub.queue else api.DeliverPolicy.NEW,
            filter_subject=wire,
        )
        durable = consumer_name(sub.queue, sub.pattern) if sub.queue else None
        if durable is None:
            config.inactive_threshold = max(5.0, s.ack_wait)
        try:
            sub.nats_sub = await self._js.subscribe(
                wire,
                queue=durable,  # nats-py names the deliver group after the durable
                durable=durable,
                stream=self.stream,
                config=config,
                manual_ack=True,
                cb=self._js_callback(sub),
                pending_msgs_limit=s.pending_msgs,
                pending_bytes_limit=s.pending_bytes,
            )
        except nats.js.errors.Error as exc:
            raise TransportClosed(
                f"cannot consume {sub.pattern!r} from stream {self.stream}: {exc}"
            ) from exc
        await self._confirm()

    def _js_callback(self, sub: NatsSubscription) -> Callable[[Any], Any]:
        """The callback of a stream subscription: skip what was seen, handle, then ack."""
        handler = sub.handler
        mesh = self.subjects.mesh
        seen = _Seen()
        stats = self.stats

        async def on_message(msg: Any) -> None:
            if not sub.active:
                return
            try:
                sequence = msg.metadata.sequence.stream
            except (AttributeError, ValueError, IndexError, nats.errors.NotJSMessageError):
                sequence = None  # not from the stream (published on the deliver subject)
            if sequence is not None and not seen.add(sequence):
                stats.redeliveries_skipped += 1
                await _ack(msg)
                return
            headers = msg.headers or {}
            reply = headers.get(REPLY_HEADER)
            lengths = headers.get(FRAMES_HEADER)
            if lengths is None:
                frames: Sequence[Any] = (msg.data,)
            else:
                try:
                    frames = unpack(msg.data, lengths)
                except FrameError as exc:
                    self._bad_frame(msg.subject, msg.data, str(exc))
                    await _ack(msg)
                    return
            try:
                await handler(mesh(msg.subject), frames, mesh(reply) if reply else None)
            except Exception:
                log.exception("%s: handler of %s failed on %s", self.url, sub.pattern, msg.subject)
            await _ack(msg)

        return on_message

    # -- replay -----------------------------------------------------------------------

    async def replay(self, pattern: str, handler: Handler, *, start_seq: int = 1) -> Subscription:
        """Deliver the stored messages matching ``pattern`` from stream sequence ``start_seq``.

        Then goes on with new ones until unsubscribed. Nothing is
        acknowledged (an ordered consumer), so replaying changes no other
        consumer. ``pattern`` must lie inside a durable pattern.
        """
        self._check_open()
        if not self._durable_pattern(pattern):
            raise ValueError(f"{pattern!r} is not inside a durable pattern {self.settings.durable}")
        sub = NatsSubscription(self, pattern, handler, None)
        wire = self.subjects.wire(pattern)
        mesh = self.subjects.mesh

        async def on_message(msg: Any) -> None:
            if not sub.active:
                return
            headers = msg.headers or {}
            lengths = headers.get(FRAMES_HEADER)
            try:
                frames = (msg.data,) if lengths is None else unpack(msg.data, lengths)
            except FrameError as exc:
                self._bad_frame(msg.subject, msg.data, str(exc))
                return
            reply = headers.get(REPLY_HEADER)
            try:
                await handler(mesh(msg.subject), frames, mesh(reply) if reply else None)
            except Exception:
                log.exception("%s: replay handler of %s failed", self.url, pattern)

        sub.nats_sub = await self._js.subscribe(
            wire,
            stream=self.stream,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=start_seq),
            cb=on_message,
        )
        self._subs[sub] = None
        return sub


async def _ack(msg: Any) -> None:
    try:
        await msg.ack()
    except (nats.errors.Error, OSError) as exc:
        # Not acknowledged (the connection is away): it comes again and is skipped then.
        log.debug("ack of %s not sent: %r", msg.subject, exc)
