"""A feeder: a producer that streams items into a pipeline on producer-side credit.

``feed`` asks the pipeline's gate for each item, so a producer on another
node pays a round trip and three messages per item. A :class:`Feeder`
borrows first-stage credit instead and publishes items straight to the
first stage, as Kafka producers and JetStream's async publish keep many
sends in flight::

    async with Feeder(node, "ingest", window=64) as feeder:   # or self.feeder("ingest")
        for job in jobs:
            await feeder.put(job)
    # here the first stage finished every item, or the block raised

The first ``put`` asks the pipeline's node for a lease of up to ``window`` of
the first stage's credits (one round trip per feeder); every ``put`` then
spends one credit and publishes the item on the stage's subject with the
run's epoch and the lease in its ``pipe`` header. The workers give the
credits of finished items back to the lease, in batches, and ``put`` waits
while the lease has none free, so a slow stage stops the producer as it
stops ``feed``: at most the stage's credits are in flight, and at most
``window`` of this feeder's items. The protocol, its fairness between
producers and how leases end are in :mod:`synaptic_mesh.patterns.pipeline_lease`.

What the pipeline promises holds unchanged: each item goes to exactly one
worker of the stage (the stage's queue group, or keyed the key's worker),
items of one key from this feeder are processed in ``put`` order, and a
crashing worker retries or dead-letters the item. ``put`` returns once the
item is sent; ``flush`` (and leaving the ``async with`` block) waits until
the first stage has *finished* every item sent (processed it and handed the
result on, or dead-lettered it), and ``taken`` counts those.

A keyed pipeline routes by its key function: the feeder uses the spec's when
the pipeline runs in this process, else ``key`` (which must be named as the
spec's key is, else ``put`` raises ``ValueError``). With neither it feeds
through the gate instead: each ``put`` is then the same ask as ``feed``,
``window`` of them unanswered at a time, and ``taken`` counts the items the
first stage took.

Failures are reported, never lost: the first one (``PipelineClosed`` when the
pipeline does not run, stops, restarts or stops answering; ``RemoteError``
when the gate failed) is raised by the next ``put`` or by ``flush``; later
items of the same feeder are then refused too. With ``timeout``, waiting for
the lease, for credit or for the last items raises ``AskTimeout``. ``close``
(idempotent, and done by the ``async with`` block) gives the lease back; a
feeder is not reused after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from synaptic_mesh.patterns.pipeline_lease_wire import (
    CONTROL,
    LeaseAsk,
    LeaseCredit,
    LeaseGrant,
    LeaseRelease,
    LeaseRevoked,
)
from synaptic_mesh.patterns.pipeline_producer import LeasedFeed, key_for
from synaptic_mesh.patterns.pipeline_run import GATE, PIPE_PREFIX, FeedRefused
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.envelope import ASK, ERROR, TELL, Envelope
from synaptic_mesh.runtime.errors import (
    AskTimeout,
    MeshError,
    NoResponders,
    PipelineClosed,
    RemoteError,
)
from synaptic_mesh.runtime.subjects import validate_subject

if TYPE_CHECKING:
    from types import TracebackType

    from synaptic_mesh.runtime.node import Node

DEFAULT_WINDOW = 64


def _well_formed(grant: Any) -> bool:
    """Whether ``grant`` is a lease grant this feeder can use (credits per pool, a TTL)."""
    if not isinstance(grant, LeaseGrant):
        return False
    pools = grant.workers if grant.keyed else 1
    return (
        pools >= 1
        and len(grant.credits) == pools
        and all(count >= 0 for count in grant.credits)
        and grant.ttl > 0
    )


class Feeder:
    """Feeds ``pipeline`` from ``node``, at most ``window`` items in flight (module docstring)."""

    def __init__(
        self,
        node: Node,
        pipeline: str,
        *,
        window: int = DEFAULT_WINDOW,
        sender: str | None = None,
        timeout: float | None = None,
        key: Callable[[Any], Any] | None = None,
    ) -> None:
        if type(window) is not int or window < 1:
            raise ValueError(f"window must be an int of at least 1, got {window!r}")
        self.gate = validate_subject(f"{pipeline}.{GATE}")
        self.control = f"{PIPE_PREFIX}.{pipeline}.{CONTROL}"
        self.pipeline = pipeline
        self.node = node
        self.window = window
        self.sender = sender
        self.timeout = timeout
        self.key = key
        self.sent = 0
        self._lease: LeasedFeed | None = None
        self._opened = False  # the lease was asked for and the way of feeding chosen
        self._closed = False
        self._gate_taken = 0
        self._unanswered: set[str] = set()
        self._error: MeshError | None = None
        self._waiters: list[asyncio.Future[bool]] = []  # each waiting put or flush
        self._slot: tuple[str, str] | None = None  # (corr, reply_to) of the inbox slot
        self._items = 0

    @property
    def leased(self) -> bool:
        """Whether items go straight to the first stage (else through the gate)."""
        return self._lease is not None

    @property
    def taken(self) -> int:
        """Items the first stage finished (through the gate: took)."""
        return self._lease.taken if self._lease is not None else self._gate_taken

    @property
    def in_flight(self) -> int:
        """Items sent and not finished (through the gate: not answered); at most ``window``."""
        if self._lease is not None:
            return self.sent - self._lease.taken
        return len(self._unanswered)

    @property
    def granted(self) -> int:
        """First-stage credits the lease holds now (in use or free); 0 through the gate."""
        return sum(self._lease.granted) if self._lease is not None else 0

    async def __aenter__(self) -> Feeder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            self.close()

    async def put(self, item: Any) -> None:
        """Send ``item`` to the pipeline's first stage; waits while no credit is free."""
        lease = self._lease
        if lease is None or self._error is not None or self._closed:
            await self._put_first(item)
            return
        if lease.key is None:
            pool, corr = 0, lease.token
        else:
            pool, corr = lease.route(item)
        available = lease.available
        if not available[pool]:
            while not available[pool]:
                lease.want_more(pool)
                await self._wait_for_room()
                self._raise_error()
                if self._closed:
                    raise PipelineClosed(f"this feeder of pipeline {self.pipeline!r} closed")
        # The hot path, inline: spend the credit, publish on the stage's subject.
        node = self.node
        subject = lease.subjects[pool]
        available[pool] -= 1
        try:
            if lease.dispatch is None:
                frames = node.new_frames(TELL, subject, item, self.sender, corr=corr)
                sending = node.send_frames(subject, frames)
                if sending is not DONE:  # DONE: sent at once (no await, no generator)
                    await sending
            else:
                env = node.make_envelope(TELL, subject, item, self.sender, corr=corr)
                await lease.dispatch(node, env)
        except BaseException:
            available[pool] += 1
            raise
        self.sent += 1

    async def _put_first(self, item: Any) -> None:
        """``put`` before the lease, through the gate, or after a failure."""
        self._raise_error()
        if self._closed:
            raise PipelineClosed(f"this feeder of pipeline {self.pipeline!r} is closed")
        if not self._opened:
            await self._open()
        if self._lease is None:
            await self._put_through_gate(item)
        else:
            await self.put(item)

    async def flush(self) -> None:
        """Wait until the first stage finished every item sent; raises the first failure."""
        while self.in_flight and self._error is None:
            await self._wait_for_room()
        self._raise_error()

    def close(self) -> None:
        """Give the lease back and stop listening (idempotent); later ``put`` raises."""
        self._closed = True
        if self._lease is not None:
            self._lease.close()
        if self._slot is not None:
            self.node.stop_collecting(self._slot[0])
            self._slot = None
        self._wake()

    # -- the lease -----------------------------------------------------------------

    async def _open(self) -> None:
        if self._slot is None:
            self._slot = self.node.collect_replies(self._on_answer)
        inbox = self._slot[1]
        try:
            reply = await self.node.ask(
                self.control, LeaseAsk(inbox, self.window), timeout=self.timeout, sender=self.sender
            )
        except NoResponders:
            self._fail(PipelineClosed(f"no pipeline {self.pipeline!r} is running"))
            raise self._error from None  # type: ignore[misc]
        if isinstance(reply, FeedRefused):
            self._fail(PipelineClosed(reply.reason))
            raise self._error  # type: ignore[misc]
        if not _well_formed(reply):
            self._fail(PipelineClosed(f"pipeline {self.pipeline!r} answered {reply!r}"))
            raise self._error  # type: ignore[misc]
        try:
            key = key_for(reply, self.pipeline, self.key)
        except ValueError:
            self._give_back_unused(reply, inbox)
            raise
        if reply.keyed and key is None:  # no key function to route by: through the gate
            self._give_back_unused(reply, inbox)
        else:
            self._lease = LeasedFeed(
                self.node,
                self.pipeline,
                reply,
                key,
                inbox=inbox,
                window=self.window,
                sender=self.sender,
                fail=self._fail,
            )
        self._opened = True

    def _give_back_unused(self, grant: LeaseGrant, inbox: str) -> None:
        credits = list(grant.credits)
        release = LeaseRelease(grant.lease, grant.epoch, inbox, credits, credits)
        with suppress(MeshError):  # if not sent: never renewed, the lease expires
            self.node.tell_nowait(self.control, release, sender=self.sender)

    # -- through the gate ----------------------------------------------------------

    async def _put_through_gate(self, item: Any) -> None:
        while len(self._unanswered) >= self.window:
            await self._wait_for_room()
            self._raise_error()
        assert self._slot is not None
        self._items += 1
        corr = f"{self._slot[0]}.{self._items}"
        env = self.node.make_envelope(
            ASK, self.gate, item, self.sender, reply_to=self._slot[1], corr=corr
        )
        frames = self.node.encode(env)
        self._unanswered.add(corr)
        try:
            await self.node.send_frames(self.gate, frames, self._slot[1])
        except BaseException:
            self._unanswered.discard(corr)
            raise
        self.sent += 1

    # -- answers -----------------------------------------------------------------

    def _on_answer(self, env: Envelope | None) -> None:
        if env is None:  # the transport's "no responders": nobody serves the gate
            self._fail(PipelineClosed(f"no pipeline {self.pipeline!r} is running"))
            self._unanswered.clear()
            return
        body = env.body
        lease = self._lease
        if isinstance(body, LeaseCredit):
            if lease is not None:
                lease.on_credit(body)
                self._wake()
            return
        if isinstance(body, LeaseRevoked):
            if lease is not None and body.lease == lease.grant.lease:
                lease.close(give_back=False)
                self._fail(PipelineClosed(body.reason))
            return
        if env.corr not in self._unanswered:
            return
        self._unanswered.discard(env.corr)
        if env.kind == ERROR:
            info = body if isinstance(body, dict) else {}
            self._fail(
                RemoteError(self.gate, str(info.get("type", "Error")), str(info.get("message", "")))
            )
        elif isinstance(body, FeedRefused):
            self._fail(PipelineClosed(body.reason))
        else:
            self._gate_taken += 1
        self._wake()

    def _fail(self, error: MeshError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)

    async def _wait_for_room(self) -> None:
        """Wait for the next credit, answer or failure; ``AskTimeout`` after ``timeout``.

        Each waiter has a future of its own (cancelling one leaves the others
        waiting) and one loop timer: lighter than ``wait_for`` over ``shield``,
        and a producer waits once per window.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timeout = self.timeout
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            woken = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if not woken:
            assert timeout is not None
            raise AskTimeout(self.gate, timeout)


def _expire(waiter: asyncio.Future[bool]) -> None:
    """A waiter's timeout: it wakes with ``False`` (nothing came in time)."""
    if not waiter.done():
        waiter.set_result(False)
