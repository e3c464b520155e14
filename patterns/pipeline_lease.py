"""Leases: first-stage credit that a pipeline's node lends to a producer, so items skip the gate.

A :class:`~synaptic_mesh.patterns.feeder.Feeder` asks the pipeline's node
once for a lease (an ask of :class:`LeaseAsk` on ``_pipe.<name>.feed``,
answered with a :class:`LeaseGrant`): up to ``window`` of the first stage's
free credits, the run's ``epoch`` and how items are routed. The producer then
publishes each item straight to the first stage (``_pipe.<name>.<stage>``,
or keyed ``_pipe.<name>.<stage>.<n>``) and spends one credit per item. A
leased item carries no ``pipe`` header: its envelope's ``corr`` is the lease
token ``lease:<epoch>:<lease>`` (keyed: ``lease:<epoch>:<lease>:<slot>``;
:mod:`~synaptic_mesh.patterns.pipeline_lease_wire` holds it and the
messages), which names the run and the lease; the worker knows the rest (its
pipeline, the first stage, a first attempt). One token serves all of a
lease's items (per key slot), so neither side builds or checks a header
per item. Workers count the lease's items as they arrive (``counter``) and
finish (:meth:`Leases.finished`); the node sends the finished items' credits
back in batches (:class:`LeaseCredit`): when all of the lease's credits are
back, when none of its items is left on the stage, and at the latest
``CREDIT_DELAY`` after the first of a batch finished (so a slow stage returns
each credit almost at once, a fast one a window's worth in one message).
Between the two nodes this is one message per item plus a credit message per
batch, where the gate took an ask, a dispatch and a reply.

Every lease message travels on the pipeline's control subject (producer to
pipeline: ``LeaseAsk``, ``LeaseMore``, ``LeaseRenew``, ``LeaseRelease``) or
on the producer's reply slot (pipeline to producer: ``LeaseCredit``,
``LeaseRevoked``), handled as they arrive, never queued behind items.

Fairness. A lease keeps the credits of its finished items while nobody waits.
When someone waits for a credit of the pool (a ``feed`` at the gate, another
producer's ``LeaseMore``), each credit freed by any lease goes to the longest
waiter instead (the lease shrinks, ``revoked`` tells the producer), and a
lease whose credits sit idle at its producer (none of its items on the stage)
is asked to give them back (``reclaim``). A producer that runs out asks for
more (``LeaseMore``) and queues like any waiter, so a blocked producer gets
the next freed credit in its turn: no producer starves, and producers that
all saturate the stage end up with even shares.

Ends. When the run ends (the pipeline stops, its gate restarts) every lease
is revoked (:class:`LeaseRevoked`), and a new run has a new epoch, so a
message or item of an old lease is refused or dead-lettered. A producer
renews its lease every ``ttl / 4`` seconds and each renewal is answered; a
lease not renewed for ``ttl`` seconds (the producer's node died) expires and
its credits return to the pool at once, except those of its items still on
the stage, which return as they finish. Items of a dead producer that were
still on their way then arrive on top of the stage's credits: for that short
while the stage may hold up to that many more items than its credits. A
producer that hears nothing from the pipeline for ``ttl`` seconds takes the
lease as lost. A producer that closes gives back what it holds
(``LeaseRelease`` with the totals it received, so credits still on their way
to it are not lost).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from synaptic_mesh.patterns.pipeline_lease_wire import (
    FeedRefused,
    LeaseAsk,
    LeaseCredit,
    LeaseGrant,
    LeaseMore,
    LeaseRelease,
    LeaseRenew,
    LeaseRevoked,
    key_name,
)
from synaptic_mesh.runtime.envelope import REPLY
from synaptic_mesh.runtime.errors import MailboxFull, MeshError, PipelineClosed
from synaptic_mesh.transports.base import eager_handler

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from synaptic_mesh.patterns.credit import Credits
    from synaptic_mesh.patterns.pipeline_run import PipelineRuntime

log = logging.getLogger("synaptic_mesh.patterns")

RETRY: Final = 0.005
"""Seconds before sending credit again when the node's outbox was full."""
CREDIT_DELAY: Final = 0.001
"""Seconds a finished item's credit may wait to join a batch before it goes back."""


# -- the leases of one run -----------------------------------------------------------


class Lease:
    """What the pipeline's node knows of one lease, per pool of the first stage."""

    __slots__ = (
        "active",
        "asking",
        "back",
        "cap",
        "closing",
        "flushing",
        "granted",
        "grown",
        "id",
        "in_stage",
        "inbox",
        "pending",
        "reclaim",
        "reclaiming",
        "revoked",
        "sent",
        "timer",
        "total",
        "touched",
    )

    def __init__(self, lease: int, inbox: str, cap: int, pools: int, now: float) -> None:
        self.id = lease
        self.inbox = inbox
        self.cap = cap
        self.granted = [0] * pools  # credits the lease holds (idle, travelling or in use)
        self.total = 0  # sum of granted
        self.active = [0] * pools  # its items arrived at a worker and not finished
        self.in_stage = 0  # sum of active
        self.sent = [0] * pools  # credits ever sent to the producer (grant, grown, back)
        self.back = [0] * pools  # waiting to go back: finished items
        self.grown = [0] * pools  # waiting to go: new credit
        self.revoked = [0] * pools  # waiting to be told: finished items whose credit left
        self.pending = 0  # sum of back and revoked
        self.asking = [False] * pools  # a LeaseMore waits for credit
        self.reclaim = False  # ask the producer for its idle credits with the next message
        self.reclaiming = False  # asked; no answer yet
        self.closing = False  # the producer closed it or stopped renewing
        self.flushing = False  # a flush is scheduled
        self.timer: asyncio.TimerHandle | None = None  # CREDIT_DELAY for the pending batch
        self.touched = now


class Leases:
    """The leases a run of a pipeline has granted (see module docstring)."""

    def __init__(self, runtime: PipelineRuntime, credits: Credits, ttl: float) -> None:
        self.runtime = runtime
        self.node = runtime.node
        self.credits = credits
        self.pools = credits.pools
        self.ttl = ttl
        self.table: dict[int, Lease] = {}
        self.closed: str | None = None
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        self._sweeper: asyncio.TimerHandle | None = None
        credits.on_wait = self._someone_waits

    def held(self) -> dict[int, int]:
        """Credits each live lease holds now (for tests and stats)."""
        return {i: lease.total for i, lease in self.table.items() if not lease.closing}

    # -- the control subject ---------------------------------------------------------

    @eager_handler
    async def on_control(self, subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
        """A transport handler for ``_pipe.<name>.feed``."""
        env = self.node.open_envelope(subject, frames)
        if env is None:
            return
        body = env.body
        if isinstance(body, LeaseAsk):
            answer: Any = self.grant(body)
            to = env.reply_to or reply_to
            if to is not None:
                reply = self.node.make_envelope(REPLY, to, answer, subject, corr=env.corr)
                try:
                    await self.node.send_frames(to, self.node.encode(reply))
                except MeshError as exc:
                    log.warning("could not answer a lease request on %s: %s", subject, exc)
            return
        if not isinstance(body, LeaseMore | LeaseRenew | LeaseRelease):
            self.node.dead_letter("not a lease message", subject, body, env.sender)
            return
        lease = self.table.get(body.lease) if body.epoch == self.runtime.epoch else None
        if lease is None or lease.closing or self.closed is not None:
            if not (isinstance(body, LeaseRelease) and body.received is not None):
                reason = self.closed or f"pipeline {self.runtime.name!r}: lease no longer valid"
                self._tell(body.inbox, LeaseRevoked(body.lease, reason))
            return
        lease.touched = self._loop.time()
        if isinstance(body, LeaseMore):
            if 0 <= body.pool < self.pools:
                self._more(lease, body.pool, body.want)
        elif isinstance(body, LeaseRenew):
            self.flush(lease, heartbeat=True)
        else:
            self._released(lease, body)

    def grant(self, ask: LeaseAsk) -> Any:
        """A new lease with up to ``ask.window`` of the credits free now, or why not."""
        runtime = self.runtime
        if self.closed is not None or runtime.closed is not None:
            return FeedRefused(self.closed or runtime.closed or "closed")
        if type(ask.window) is not int or ask.window < 1:
            return FeedRefused(f"a lease needs a window of at least 1, got {ask.window!r}")
        lease = Lease(next(self._ids), ask.inbox, ask.window, self.pools, self._loop.time())
        left = ask.window
        while left:  # round robin over the pools, so every key's worker gets some
            got = 0
            for pool in range(self.pools):
                took = self.credits.take(pool, left if self.pools == 1 else min(1, left))
                lease.granted[pool] += took
                lease.total += took
                left -= took
                got += took
            if not got:
                break
        lease.sent = list(lease.granted)
        self.table[lease.id] = lease
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.ttl / 2, self._sweep)
        spec = runtime.spec
        first = spec.stages[0]
        key = spec.key
        return LeaseGrant(
            lease.id,
            runtime.epoch,
            self.node.id,
            first.name,
            first.workers or 1,
            key is not None,
            key_name(key) if key is not None else "",
            list(lease.granted),
            self.ttl,
        )

    def _more(self, lease: Lease, pool: int, want: int) -> None:
        if lease.asking[pool]:
            return
        lease.asking[pool] = True  # before queueing: on_wait must not reclaim from it
        try:
            handed = self.credits.request(pool)
        except PipelineClosed:
            lease.asking[pool] = False
            return
        want = max(1, min(want, lease.cap))
        handed.add_done_callback(partial(self._handed, lease, pool, want))

    def _handed(self, lease: Lease, pool: int, want: int, handed: asyncio.Future[None]) -> None:
        lease.asking[pool] = False
        if handed.cancelled() or handed.exception() is not None:
            return
        if lease.closing or self.table.get(lease.id) is not lease:
            self.credits.release(pool)
            return
        count = 1 + self.credits.take(pool, want - 1)
        lease.granted[pool] += count
        lease.total += count
        lease.sent[pool] += count
        lease.grown[pool] += count
        self.flush(lease)

    def _released(self, lease: Lease, release: LeaseRelease) -> None:
        lease.reclaiming = False
        idle = _counts(release.idle, self.pools)
        received = None if release.received is None else _counts(release.received, self.pools)
        if idle is None or (release.received is not None and received is None):
            self.node.dead_letter("malformed lease release", self.runtime.name, release)
            return
        if received is not None:  # final: also what is still on its way to the producer
            lease.closing = True
            idle = [idle[p] + lease.sent[p] - received[p] for p in range(self.pools)]
            lease.back = [0] * self.pools
            lease.grown = [0] * self.pools
            lease.revoked = [0] * self.pools
            lease.pending = 0
        for pool, count in enumerate(idle):
            self._give_back(lease, pool, count)
        self._drop_if_done(lease)

    # -- items --------------------------------------------------------------------------

    def counter(self, lease_id: int, slot: int | None) -> Callable[[], None]:
        """What counts the arrival of an item of lease ``lease_id`` (with key ``slot``) at a
        worker: in the run's ``stats.fed`` and, unless the lease is gone, on the lease."""
        stats = self.runtime.stats
        lease = self.table.get(lease_id)
        if lease is None:

            def fed() -> None:
                stats.fed += 1

            return fed
        pool = 0 if slot is None else slot % self.pools
        active = lease.active

        def arrived() -> None:
            stats.fed += 1
            active[pool] += 1
            lease.in_stage += 1

        return arrived

    def finished(self, lease_id: int, slot: int | None) -> Lease | None:
        """A worker finished an item of lease ``lease_id`` (key ``slot``): its credit goes back.

        Returns the lease when its credit is due to go to the producer now
        (:meth:`send_due`, or :meth:`flush` where the caller cannot wait).
        """
        lease = self.table.get(lease_id)
        if lease is None:  # expired and settled: its credit went back to the pool then
            return None
        pool = 0 if slot is None else slot % self.pools
        active = lease.active
        if active[pool] > 0:
            active[pool] -= 1
            lease.in_stage -= 1
        credits = self.credits
        if lease.closing:
            self._give_back(lease, pool, 1)
            self._drop_if_done(lease)
            return None
        lease.pending += 1
        if credits.waiters[pool] and credits.waiting(pool):  # the credit goes to a waiter
            if lease.granted[pool] > 0:
                lease.granted[pool] -= 1
                lease.total -= 1
                lease.revoked[pool] += 1
                credits.release(pool)
            if (
                not lease.active[pool]
                and lease.granted[pool]
                and not lease.reclaiming
                and credits.waiting(pool)
            ):
                lease.reclaim = True
        else:
            lease.back[pool] += 1
            lease.sent[pool] += 1
        if lease.reclaim or lease.pending >= lease.total or not lease.in_stage:
            return lease  # the whole lease is coming back, or none of its items is left
        if lease.timer is None:
            lease.timer = self._loop.call_later(CREDIT_DELAY, self._delayed, lease)
        return None

    # -- credit to the producer ---------------------------------------------------------

    async def send_due(self, lease: Lease) -> None:
        """Send ``lease``'s credit to its producer (from a worker, which may wait)."""
        credit = self._take(lease)
        if credit is not None:
            try:
                await self.node.tell(lease.inbox, credit)
            except MeshError as exc:  # the node is closing: nothing more reaches anyone
                log.debug("lease credit to %s not sent: %s", lease.inbox, exc)

    def flush(self, lease: Lease, *, heartbeat: bool = False) -> None:
        """Send ``lease``'s credit to its producer now, or as soon as the outbox has room."""
        credit = self._take(lease, heartbeat=heartbeat)
        if credit is not None and not self._tell(lease.inbox, credit):
            self._untake(lease, credit)  # the outbox is full: the counts wait
            if not lease.flushing:
                lease.flushing = True
                self._loop.call_later(RETRY, self._flush_later, lease)

    def _delayed(self, lease: Lease) -> None:
        lease.timer = None
        self.flush(lease)

    def _flush_later(self, lease: Lease) -> None:
        lease.flushing = False
        self.flush(lease)

    def _take(self, lease: Lease, *, heartbeat: bool = False) -> LeaseCredit | None:
        """The credit message due to ``lease``'s producer (its counts reset), if any."""
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None
        if lease.closing or self.closed is not None or self.table.get(lease.id) is not lease:
            return None
        back, grown, revoked = lease.back, lease.grown, lease.revoked
        if not (heartbeat or lease.reclaim or lease.pending or any(grown)):
            return None
        credit = LeaseCredit(lease.id, back, grown, revoked, lease.reclaim)
        zeros = [0] * self.pools
        lease.back, lease.grown, lease.revoked = zeros, list(zeros), list(zeros)
        lease.pending = 0
        if lease.reclaim:
            lease.reclaim = False
            lease.reclaiming = True
        return credit

    def _untake(self, lease: Lease, credit: LeaseCredit) -> None:
        for pool in range(self.pools):
            lease.back[pool] += credit.back[pool]
            lease.grown[pool] += credit.grown[pool]
            lease.revoked[pool] += credit.revoked[pool]
        lease.pending += sum(credit.back) + sum(credit.revoked)
        if credit.reclaim:
            lease.reclaim, lease.reclaiming = True, False

    def _tell(self, inbox: str, msg: Any) -> bool:
        """Send ``msg`` to a producer now; ``False`` when the outbox is full."""
        try:
            self.node.tell_nowait(inbox, msg)
        except MailboxFull:
            return False
        except MeshError as exc:  # the node is closing: nothing more reaches anyone
            log.debug("lease message to %s not sent: %s", inbox, exc)
        return True

    def _someone_waits(self, pool: int) -> None:
        """A waiter queued on an empty pool: ask leases idle on this stage for their credit."""
        for lease in self.table.values():
            if (
                not lease.closing
                and not lease.asking[pool]
                and not lease.reclaiming
                and not lease.reclaim
                and lease.granted[pool]
                and not lease.active[pool]
            ):
                lease.reclaim = True
                self.flush(lease)

    # -- ends ---------------------------------------------------------------------------

    def _give_back(self, lease: Lease, pool: int, count: int) -> None:
        count = max(0, min(count, lease.granted[pool]))
        lease.granted[pool] -= count
        lease.total -= count
        for _ in range(count):
            self.credits.release(pool)

    def _drop_if_done(self, lease: Lease) -> None:
        if lease.closing and not lease.total:
            self.table.pop(lease.id, None)

    def _sweep(self) -> None:
        """Expire leases not renewed for ``ttl`` (their producer is gone)."""
        now = self._loop.time()
        for lease in list(self.table.values()):
            if now - lease.touched <= self.ttl:
                continue
            if not lease.closing:
                log.info(
                    "pipeline %r: lease %d of %s expired unrenewed",
                    self.runtime.name,
                    lease.id,
                    lease.inbox,
                )
                lease.closing = True
            # Credits not on the stage: idle at the gone producer, or items lost on the way.
            for pool in range(self.pools):
                self._give_back(lease, pool, lease.granted[pool] - lease.active[pool])
            lease.touched = now
            self._drop_if_done(lease)
        self._sweeper = self._loop.call_later(self.ttl / 2, self._sweep)

    def close(self, reason: str) -> None:
        """The run ended: revoke every lease (their credits end with the run)."""
        if self.closed is not None:
            return
        self.closed = reason
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for lease in self.table.values():
            if lease.timer is not None:
                lease.timer.cancel()
            if not lease.closing:
                self._tell(lease.inbox, LeaseRevoked(lease.id, reason))
        self.table.clear()


def _counts(value: Any, pools: int) -> list[int] | None:
    if (
        isinstance(value, list)
        and len(value) == pools
        and all(type(v) is int and v >= 0 for v in value)
    ):
        return value
    return None
