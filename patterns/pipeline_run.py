"""The running side of a pipeline: credit, routing, the gate and the workers' item loop.

:mod:`synaptic_mesh.patterns.pipeline` states the semantics; this module
carries them out. One :class:`PipelineRuntime` per run of a pipeline lives on
the node that runs its supervisor subtree (the gate creates it when it
starts and closes it when it stops); workers find it by the pipeline's name
and check the run's ``epoch`` carried by every item, so an item of an earlier
run is never counted against a new run's credit. Epochs start from a random
number in each process, so runs of one pipeline in different processes do not
share one. The first stage's credit is also lent to producers on other
nodes: :mod:`synaptic_mesh.patterns.pipeline_lease`.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol
from weakref import WeakKeyDictionary

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on
from synaptic_mesh.patterns.attach import HeldSubscription
from synaptic_mesh.patterns.credit import Credits
from synaptic_mesh.patterns.lowering import PIPELINE, lowering_for
from synaptic_mesh.patterns.pipeline_lease import Lease, Leases
from synaptic_mesh.patterns.pipeline_lease_wire import CONTROL, DEFAULT_TTL, FeedRefused
from synaptic_mesh.runtime.envelope import TELL, Envelope
from synaptic_mesh.runtime.errors import PipelineClosed
from synaptic_mesh.transports.base import Handler, Subscription

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from synaptic_mesh.patterns.pipeline import Pipeline, SpecRef, StageWorker
    from synaptic_mesh.runtime.node import Node

PIPE_PREFIX: Final = "_pipe"
GATE: Final = "feed"
KEEPER: Final = "keeper"


# -- lowering ------------------------------------------------------------------------


class PipelineLowering(Protocol):
    """What a native pipeline lowering supplies."""

    def dispatch(self, node: Node, item: Envelope) -> Awaitable[None]:
        """Deliver ``item`` to one subscriber of ``item.subject`` (a stage or one worker)."""
        ...

    async def attach(
        self, node: Node, subject: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        """Deliver the items dispatched on ``subject`` to ``handler`` (shared by ``queue``)."""
        ...


class GenericPipeline:
    """Stages on publish and queue groups (see module docstring)."""

    def dispatch(self, node: Node, item: Envelope) -> Awaitable[None]:
        return node.send_frames(item.subject, node.encode(item))

    async def attach(
        self, node: Node, subject: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        return await node.transport.subscribe(subject, handler, queue)


def _lowering(node: Node) -> PipelineLowering:
    return node.lowerings.get(PIPELINE) or lowering_for(node, PIPELINE, GenericPipeline)


# -- the running pipeline --------------------------------------------------------------


@dataclass
class PipelineStats:
    """Counters of one run of a pipeline (``runtime_of(node, name).stats``)."""

    fed: int = 0
    completed: int = 0
    processed: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    dead_lettered: int = 0


class ItemMeta(NamedTuple):
    """What travels with an item: the run, the stage, the key's slot, the attempt, the lease.

    Items the gate or a worker sends carry it in the envelope's ``pipe``
    header (``[pipeline, epoch, stage, slot, attempt]``); an item a producer
    sent on a lease carries only the lease token (``corr``, see
    :mod:`~synaptic_mesh.patterns.pipeline_lease`) and the worker fills in the
    rest, ``lease`` included (set only for such items, at the first stage).
    """

    pipeline: str
    epoch: int
    stage: int
    slot: int | None
    attempt: int = 1
    lease: int | None = None

    @classmethod
    def read(cls, headers: Any) -> ItemMeta | None:
        """The metadata in a ``pipe`` header, or ``None`` when absent or malformed."""
        try:
            name, epoch, stage, slot, attempt = headers["pipe"]
        except (KeyError, TypeError, ValueError):
            return None
        if not (
            type(name) is str
            and type(epoch) is int
            and type(stage) is int
            and (slot is None or type(slot) is int)
            and type(attempt) is int
        ):
            return None
        return tuple.__new__(cls, (name, epoch, stage, slot, attempt, None))

    def headers(self) -> dict[str, Any]:
        """The ``pipe`` header of this item (the lease does not travel in it)."""
        return {"pipe": list(self[:5])}


_runtimes: WeakKeyDictionary[Node, dict[str, PipelineRuntime]] = WeakKeyDictionary()
_epochs: dict[str, int] = {}
_FIRST_EPOCH: Final = int.from_bytes(os.urandom(4), "big") << 16


def runtime_of(node: Node, name: str) -> PipelineRuntime | None:
    """The running pipeline ``name`` on ``node`` (its stats, in-flight counts), if any."""
    return _runtimes.get(node, {}).get(name)


class PipelineRuntime:
    """Credits, routing and counters of one run of a pipeline on its node."""

    def __init__(self, node: Node, spec: Pipeline) -> None:
        self.node = node
        self.spec = spec
        self.name = spec.name
        self.epoch = _epochs[spec.name] = _epochs.get(spec.name, _FIRST_EPOCH) + 1
        self.stats = PipelineStats(processed={s.name: 0 for s in spec.stages})
        keyed = spec.key is not None
        self.credits = [
            Credits(s.workers or 1, spec.prefetch)
            if keyed
            else Credits(1, (s.workers or 1) * spec.prefetch)
            for s in spec.stages
        ]
        # Per stage, computed once: worker count, the queue-group subject, the worker subjects.
        self._routes = []
        for stage in spec.stages:
            base = f"{PIPE_PREFIX}.{self.name}.{stage.name}"
            count = stage.workers or 1
            self._routes.append((count, base, [f"{base}.{n}" for n in range(1, count + 1)]))
        self.stage_names = [s.name for s in spec.stages]  # by index (ItemMeta.stage)
        self._lowering = _lowering(node)
        self.closed: str | None = None
        self.leases = Leases(self, self.credits[0], getattr(spec, "lease_ttl", DEFAULT_TTL))

    def in_flight(self, stage: str) -> int:
        """Credits of ``stage`` in use: its items not finished yet, and for the first
        stage also the credits lent to producers (idle at them or on their way)."""
        index = [s.name for s in self.spec.stages].index(stage)
        return self.credits[index].in_flight()

    async def put(self, item: Any, sender: str | None) -> None:
        """Send ``item`` to the first stage once it has credit (raises ``PipelineClosed``)."""
        key = self.spec.key
        slot = None if key is None else _stable_hash(key(item))
        await self.submit(0, item, slot, sender)
        self.stats.fed += 1

    async def submit(self, index: int, item: Any, slot: int | None, sender: str | None) -> None:
        count, base, workers = self._routes[index]
        credits = self.credits[index]
        if slot is None:
            pool, subject = 0, base
        else:
            pool = slot % count
            subject = workers[pool]
        if not credits.try_acquire(pool):
            await credits.acquire(pool)
        headers = {"pipe": [self.name, self.epoch, index, slot, 1]}
        env = self.node.make_envelope(TELL, subject, item, sender, headers=headers)
        try:
            await self._lowering.dispatch(self.node, env)
        except BaseException:
            credits.release(pool)
            raise

    def release(self, meta: ItemMeta) -> Lease | None:
        """Give back the credit of a finished item; a lease whose credit is now due to its
        producer is returned (``leases.send_due`` it, or ``leases.flush``)."""
        if meta.lease is not None:
            return self.leases.finished(meta.lease, meta.slot)
        slot = meta.slot
        self.credits[meta.stage].release(0 if slot is None else slot % self._routes[meta.stage][0])
        return None

    def handing_on(self, meta: ItemMeta, result: Any) -> bool:
        """Whether ``result`` (not ``None``) of a processed item must go on (a next stage or
        ``output``); a result of the last stage counts as completed."""
        if meta.stage + 1 < len(self._routes):
            return True
        self.stats.completed += 1
        return self.spec.output is not None

    async def hand_on(self, meta: ItemMeta, result: Any, sender: str) -> None:
        """Give ``result`` to the next stage (waiting for its credit) or publish it."""
        if meta.stage + 1 < len(self._routes):
            await self.submit(meta.stage + 1, result, meta.slot, sender)
        elif self.spec.output is not None:
            await self.node.publish(self.spec.output, result, sender=sender)

    def failed(
        self, meta: ItemMeta, worker: StageWorker, item: Any, error: Exception
    ) -> ItemMeta | None:
        """A worker raised on ``item``: the metadata of its retry, or ``None`` after giving up."""
        if meta.attempt <= self.spec.retries:
            self.stats.retries += 1
            return meta._replace(attempt=meta.attempt + 1)
        stage = self.spec.stages[meta.stage].name
        self.node.dead_letter(
            f"pipeline {self.name!r} stage {stage!r} gave up after {meta.attempt} attempts: "
            f"{type(error).__name__}: {error}",
            worker.subject,
            item,
        )
        self.stats.dead_lettered += 1
        due = self.release(meta)
        if due is not None:
            self.leases.flush(due)
        return None

    def close(self, reason: str) -> None:
        self.closed = reason
        self.leases.close(reason)
        for credits in self.credits:
            credits.close(reason)
        runs = _runtimes.get(self.node, {})
        if runs.get(self.name) is self:
            del runs[self.name]


def _stable_hash(key: Any) -> int:
    """A hash that is the same in every process and run (``hash(str)`` is not)."""
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str):
        data = key.encode()
    else:
        data = repr(key).encode()
    return zlib.crc32(data)


# -- the gate and the workers ----------------------------------------------------------


class PipelineGate(AgentActor):
    """The pipeline's entry at ``<name>.feed``: admits fed items one at a time."""

    def __init__(self, ref: SpecRef) -> None:
        self.spec = ref.spec
        self.runtime: PipelineRuntime | None = None

    async def on_start(self) -> None:
        self.runtime = runtime = PipelineRuntime(self.node, self.spec)
        _runtimes.setdefault(self.node, {})[self.spec.name] = runtime
        # Lease requests and credit of producers on other nodes, for this run only.
        control = HeldSubscription(self)
        subject = f"{PIPE_PREFIX}.{self.spec.name}.{CONTROL}"
        handler = control.guard(runtime.leases.on_control)
        control.hold(await self.node.transport.subscribe(subject, handler, None))

    async def on_stop(self) -> None:
        if self.runtime is not None:
            self.runtime.close(f"pipeline {self.spec.name!r} stopped")

    @on(object)
    async def admit(self, item: Any) -> FeedRefused | None:
        runtime = self.runtime
        if runtime is None or runtime.closed is not None:
            return FeedRefused(f"pipeline {self.spec.name!r} is not running")
        try:
            await runtime.put(item, self.current_sender)
        except PipelineClosed as exc:
            return FeedRefused(str(exc))
        return None


class PipelineKeeper(AgentActor):
    """The pipeline's last child, so the first stopped: closing the run wakes every waiter.

    Without it a shutdown would wait for the gate (busy waiting for credit)
    and for workers waiting to hand results on, until their shutdown timeouts.
    """

    def __init__(self, ref: SpecRef) -> None:
        self.spec = ref.spec

    async def on_stop(self) -> None:
        runtime = runtime_of(self.node, self.spec.name)
        if runtime is not None and runtime.spec is self.spec:
            runtime.close(f"pipeline {self.spec.name!r} stopped")
