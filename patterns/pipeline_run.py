"""The running side of a pipeline: credit, routing, the gate and the workers' item loop.

:mod:`synaptic_mesh.patterns.pipeline` states the semantics; this module
carries them out. One :class:`PipelineRuntime` per run of a pipeline lives on
the node that runs its supervisor subtree (the gate creates it when it
starts and closes it when it stops); workers find it by the pipeline's name
and check the run's ``epoch`` carried by every item, so an item of an earlier
run is never counted against a new run's credit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol
from weakref import WeakKeyDictionary

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on
from synaptic_mesh.actors.signals import Call
from synaptic_mesh.patterns.credit import Credits
from synaptic_mesh.patterns.lowering import PIPELINE, lowering_for
from synaptic_mesh.runtime.envelope import TELL, Envelope
from synaptic_mesh.runtime.errors import MeshError, PipelineClosed
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.transports.base import Handler, Subscription

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from synaptic_mesh.patterns.pipeline import Pipeline, SpecRef, StageWorker
    from synaptic_mesh.runtime.node import Node

PIPE_PREFIX: Final = "_pipe"
GATE: Final = "feed"
KEEPER: Final = "keeper"


@message(name="_mesh.FeedRefused")
class FeedRefused:
    """The gate's answer when the pipeline cannot take the item."""

    reason: str


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
    """What travels with an item (in the envelope's ``pipe`` header): run, stage, key, attempt."""

    pipeline: str
    epoch: int
    stage: int
    slot: int | None
    attempt: int = 1

    @classmethod
    def read(cls, headers: Any) -> ItemMeta | None:
        """The metadata in ``headers``, or ``None`` when absent or malformed."""
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
        return cls(name, epoch, stage, slot, attempt)

    def headers(self) -> dict[str, Any]:
        return {"pipe": list(self)}


_runtimes: WeakKeyDictionary[Node, dict[str, PipelineRuntime]] = WeakKeyDictionary()
_epochs: dict[str, int] = {}


def runtime_of(node: Node, name: str) -> PipelineRuntime | None:
    """The running pipeline ``name`` on ``node`` (its stats, in-flight counts), if any."""
    return _runtimes.get(node, {}).get(name)


class PipelineRuntime:
    """Credits, routing and counters of one run of a pipeline on its node."""

    def __init__(self, node: Node, spec: Pipeline) -> None:
        self.node = node
        self.spec = spec
        self.name = spec.name
        self.epoch = _epochs[spec.name] = _epochs.get(spec.name, 0) + 1
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
        self._names = [s.name for s in spec.stages]
        self._lowering = _lowering(node)
        self.closed: str | None = None

    def in_flight(self, stage: str) -> int:
        """Items taken by ``stage`` and not finished yet (credits in use)."""
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

    def release(self, meta: ItemMeta) -> None:
        slot = meta.slot
        self.credits[meta.stage].release(0 if slot is None else slot % self._routes[meta.stage][0])

    def handing_on(self, meta: ItemMeta, result: Any) -> bool:
        """Count a finished item; whether ``result`` must go on (a next stage or ``output``)."""
        self.stats.processed[self._names[meta.stage]] += 1
        if result is None:
            return False
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

    def failed(self, meta: ItemMeta, worker: StageWorker, item: Any, error: Exception) -> None:
        """A worker raised on ``item``: retry it first thing in its mailbox, or give up."""
        if meta.attempt <= self.spec.retries:
            again = meta._replace(attempt=meta.attempt + 1)
            retry = Call(item, handler=partial(_process, again), subject=worker.subject)
            worker._mesh_cell.mailbox.user.appendleft(retry)
            self.stats.retries += 1
            return
        stage = self.spec.stages[meta.stage].name
        self.node.dead_letter(
            f"pipeline {self.name!r} stage {stage!r} gave up after {meta.attempt} attempts: "
            f"{type(error).__name__}: {error}",
            worker.subject,
            item,
        )
        self.stats.dead_lettered += 1
        self.release(meta)

    def close(self, reason: str) -> None:
        self.closed = reason
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
        self.runtime = PipelineRuntime(self.node, self.spec)
        _runtimes.setdefault(self.node, {})[self.spec.name] = self.runtime

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


async def attach_worker(worker: StageWorker) -> None:
    tokens = worker.subject.split(".")
    if len(tokens) < 3 or not tokens[-1].isdigit():
        raise ValueError(
            f"{type(worker).__qualname__} at {worker.subject!r}: start it in a Pipeline"
        )
    name, stage, n = ".".join(tokens[:-2]), tokens[-2], tokens[-1]
    node = worker.node
    cell = worker._mesh_cell
    deliver = partial(_on_item, node, cell)
    shared = f"{PIPE_PREFIX}.{name}.{stage}"
    lowering = _lowering(node)
    for subject, queue in ((shared, shared), (f"{shared}.{n}", None)):
        cell.subscriptions.append(await lowering.attach(node, subject, deliver, queue=queue))


async def _on_item(
    node: Node, cell: Any, subject: str, frames: Sequence[Any], reply_to: str | None
) -> None:
    env = node.open_envelope(subject, frames)
    if env is None:
        return
    meta = ItemMeta.read(env.headers)
    if meta is None:
        node.dead_letter("not a pipeline item (no 'pipe' header)", subject, env.body, env.sender)
        return
    call = Call(env.body, handler=partial(_process, meta), subject=subject, sender=env.sender)
    try:
        cell.mailbox.put_nowait(call)  # the common case: room in the worker's mailbox
    except MeshError:  # full (waits under "block") or closed (dead-lettered): the slow path
        await node.deliver(cell, call, env)


async def _process(meta: ItemMeta, worker: StageWorker, item: Any) -> None:
    runtime = worker._mesh_runtime  # the run this worker served last: usually this one
    if runtime is None or runtime.epoch != meta.epoch or runtime.name != meta.pipeline:
        runtime = worker._mesh_runtime = runtime_of(worker.node, meta.pipeline)
    if runtime is None or runtime.epoch != meta.epoch:
        worker.node.dead_letter(f"pipeline {meta.pipeline!r} is not running", worker.subject, item)
        return
    worker._mesh_item = meta
    try:
        result = await worker.process(item)
    except Exception as exc:
        runtime.failed(meta, worker, item, exc)
        raise
    finally:
        worker._mesh_item = None
    # The item is finished once its result is handed on; only then does its credit return.
    try:
        if runtime.handing_on(meta, result):
            await runtime.hand_on(meta, result, worker.subject)
    except PipelineClosed as exc:
        worker.node.dead_letter(f"result not handed on: {exc}", worker.subject, result)
    finally:
        runtime.release(meta)
