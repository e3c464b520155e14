"""A producer's side of a lease: spend first-stage credit, publish items straight to the stage.

:mod:`synaptic_mesh.patterns.pipeline_lease` is the pipeline's side and
states the protocol. A :class:`LeasedFeed` belongs to one
:class:`~synaptic_mesh.patterns.feeder.Feeder`: it keeps, per pool of the
first stage, the credits the lease holds (``granted``) and those free to
spend (``available``); each item takes one and goes out on the stage's
subject with the run's epoch and the lease in its ``pipe`` header. It asks
for more (``LeaseMore``) when a pool runs dry and its window allows, answers
a reclaim with its idle credits, renews the lease every ``ttl / 4`` seconds,
and gives everything back when the feeder closes.

A keyed pipeline routes by its key function, which cannot travel: the
producer uses the spec's own when the pipeline runs in this process, else the
``key`` given to the feeder, which must carry the same name (module and
qualified name) as the spec's. Without either, :func:`key_for` finds none
and the feeder falls back to the gate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from synaptic_mesh.patterns.pipeline_lease_wire import (
    CONTROL,
    LeaseCredit,
    LeaseGrant,
    LeaseMore,
    LeaseRelease,
    LeaseRenew,
    key_name,
    token,
)
from synaptic_mesh.patterns.pipeline_run import (
    PIPE_PREFIX,
    GenericPipeline,
    _lowering,
    _runtimes,
    _stable_hash,
)
from synaptic_mesh.runtime.errors import MailboxFull, MeshError, PipelineClosed

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node

log = logging.getLogger("synaptic_mesh.patterns")

Key = Callable[[Any], Any]


def key_for(grant: LeaseGrant, pipeline: str, given: Key | None) -> Key | None:
    """The key function to route ``grant``'s items by; ``None`` if there is none to trust.

    Raises ``ValueError`` when ``given`` is not named as the pipeline's key is.
    """
    if not grant.keyed:
        return None
    for node, runs in list(_runtimes.items()):
        if node.id == grant.node:
            runtime = runs.get(pipeline)
            if runtime is not None and runtime.epoch == grant.epoch:
                return runtime.spec.key
    if given is None:
        return None
    if key_name(given) != grant.key_name:
        raise ValueError(
            f"feeder key {key_name(given)} is not pipeline {pipeline!r}'s key {grant.key_name}"
        )
    return given


class LeasedFeed:
    """The credit and routing of one lease, on the producer's node (module docstring)."""

    def __init__(
        self,
        node: Node,
        pipeline: str,
        grant: LeaseGrant,
        key: Key | None,
        *,
        inbox: str,
        window: int,
        sender: str | None,
        fail: Callable[[PipelineClosed], None],
    ) -> None:
        self.node = node
        self.pipeline = pipeline
        self.grant = grant
        self.key = key
        self.inbox = inbox
        self.window = window
        self.sender = sender
        self.pools = pools = len(grant.credits)
        self.granted = list(grant.credits)
        self.available = list(grant.credits)
        self.received = list(grant.credits)
        self.asking = [0] * pools  # credits asked for, per pool (0: no LeaseMore pending)
        self.token = token(grant.epoch, grant.lease)
        base = f"{PIPE_PREFIX}.{pipeline}.{grant.stage}"
        self.subjects = [f"{base}.{n}" for n in range(1, pools + 1)] if key else [base]
        self.control = f"{PIPE_PREFIX}.{pipeline}.{CONTROL}"
        self.taken = 0
        self.closed = False
        self._fail = fail
        lowering = _lowering(node)
        # A native lowering's dispatch; None for the generic one, a publish done inline.
        self.dispatch = None if isinstance(lowering, GenericPipeline) else lowering.dispatch
        self._loop = asyncio.get_running_loop()
        self._heard = self._loop.time()
        self._renewal: asyncio.TimerHandle | None = self._loop.call_later(
            grant.ttl / 4, self._renew
        )

    # -- sending items ------------------------------------------------------------------

    def route(self, item: Any) -> tuple[int, str]:
        """``(pool, corr)`` of ``item`` on a keyed pipeline: whose credit it needs, its token.

        The feeder's ``put`` spends the credit and publishes (``subjects[pool]``,
        through ``dispatch`` when the transport lowers pipelines natively).
        """
        assert self.key is not None
        slot = _stable_hash(self.key(item))
        return slot % self.pools, f"{self.token}:{slot}"

    def want_more(self, pool: int) -> None:
        """``pool`` ran dry: queue for more of its credit if the window allows.

        At the window, idle credits of other pools go back first (keyed);
        when every credit is in use, the returns of finished items will do.
        """
        if self.asking[pool] or self.closed:
            return
        room = self.window - sum(self.granted) - sum(self.asking)
        if room <= 0:
            idle = [0 if p == pool else self.available[p] for p in range(self.pools)]
            if not any(idle):
                return
            self._give_back(idle)
            room = self.window - sum(self.granted) - sum(self.asking)
            if room <= 0:
                return
        grant = self.grant
        if self._tell(LeaseMore(grant.lease, grant.epoch, self.inbox, pool, room)):
            self.asking[pool] = room

    # -- credit from the pipeline -------------------------------------------------------

    def on_credit(self, credit: LeaseCredit) -> None:
        """Count what the pipeline sent back, granted or revoked; answer a reclaim."""
        self._heard = self._loop.time()
        if credit.lease != self.grant.lease:
            return
        back, grown, revoked = credit.back, credit.grown, credit.revoked
        if not (len(back) == len(grown) == len(revoked) == self.pools):
            return
        for pool in range(self.pools):
            if grown[pool]:
                self.asking[pool] = 0
            came = back[pool] + grown[pool]
            self.available[pool] += came
            self.received[pool] += came
            self.granted[pool] += grown[pool] - revoked[pool]
            self.taken += back[pool] + revoked[pool]
        if credit.reclaim and not self.closed:
            self._give_back(list(self.available), always=True)

    def _give_back(self, idle: list[int], *, always: bool = False) -> None:
        if not (any(idle) or always):
            return
        grant = self.grant
        if self._tell(LeaseRelease(grant.lease, grant.epoch, self.inbox, idle, None)):
            for pool, count in enumerate(idle):
                self.available[pool] -= count
                self.granted[pool] -= count

    # -- the lease's life ---------------------------------------------------------------

    def _renew(self) -> None:
        self._renewal = None
        if self.closed:
            return
        ttl = self.grant.ttl
        if self._loop.time() - self._heard > ttl:
            self._fail(
                PipelineClosed(
                    f"pipeline {self.pipeline!r} (node {self.grant.node}) "
                    f"did not answer for {ttl:g} s"
                )
            )
            self.close(give_back=False)
            return
        grant = self.grant
        self._tell(LeaseRenew(grant.lease, grant.epoch, self.inbox))
        if self.node.running:  # a full outbox skips one renewal; a closed node ends them
            self._renewal = self._loop.call_later(ttl / 4, self._renew)

    def close(self, *, give_back: bool = True) -> None:
        """End the lease: stop renewing and, unless it is lost, give back what it holds."""
        if self.closed:
            return
        self.closed = True
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if give_back:
            grant = self.grant
            idle = list(self.available)
            self._tell(LeaseRelease(grant.lease, grant.epoch, self.inbox, idle, self.received))

    def _tell(self, msg: Any) -> bool:
        """Send ``msg`` to the pipeline's control subject; ``False`` if it could not go."""
        try:
            self.node.tell_nowait(self.control, msg, sender=self.sender)
        except MailboxFull:
            log.warning("pipeline %r: outbox full, %s not sent", self.pipeline, type(msg).__name__)
            return False
        except MeshError as exc:  # the node is closing
            log.debug("pipeline %r: %s not sent: %s", self.pipeline, type(msg).__name__, exc)
            return False
        return True
