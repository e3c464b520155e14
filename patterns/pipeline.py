"""Pipeline: stages of supervised worker pools, credit-based back-pressure, order per key.

::

    ingest = Pipeline("ingest", stages=[Stage("decimate", Decimate), Stage("export", export)],
                      workers=3, key=lambda job: job.mesh_id, output="ingest.done")
    await node.start_supervisor(ingest)          # or put it in a Supervisor's children
    await self.feed("ingest", Job(...))          # from any actor, on any node

A :class:`Pipeline` *is* a :class:`~synaptic_mesh.supervisors.spec.Supervisor`
(``one_for_one``): its children are ``workers`` actors per stage at subjects
``<name>.<stage>.<n>`` (``n`` from 1), the gate at ``<name>.feed`` that admits
fed items, and a keeper at ``<name>.keeper`` that closes the run first when
the pipeline stops.

Semantics:

- Exactly one worker of each stage processes each item; a stage's return
  value is the next stage's item (``None`` drops the item: a filter); the last
  stage's value is published on ``output`` when given.
- Credit: each stage holds ``workers * prefetch`` credits (``prefetch`` per
  worker when keyed). Sending an item to a stage takes one; the worker returns
  it when it has *finished* the item, which includes handing its result to
  the next stage, which needs that stage's credit. So a slow stage holds its
  upstream workers, which hold the gate (which holds ``feed``) and the
  credits leased to producers (which hold a feeder's ``put``): the producer
  waits instead of queues growing. At most the credits are in flight.
- ``feed(pipeline, item)`` returns once the first stage took the item (not
  when it is done). Feeds are admitted one at a time in arrival order.
  Raises ``PipelineClosed`` when no such pipeline runs or it stops while the
  producer waits; ``AskTimeout`` when ``timeout`` passes first.
- A :class:`~synaptic_mesh.patterns.feeder.Feeder` (``self.feeder(name)``)
  streams items on producer-side credit instead: its node borrows a lease of
  first-stage credits from the pipeline's node and publishes each item
  straight to the first stage; the workers give the credits of finished
  items back to the producer in batches
  (:mod:`~synaptic_mesh.patterns.pipeline_lease`). Leased credits count as
  the first stage's (``in_flight``), so the stage still holds at most its
  credits, and a slow stage stops the producer. While nobody waits a lease
  keeps its credits; when others wait (a ``feed``, another producer), every
  credit freed goes to the longest waiter and idle leased credits are called
  back, so no producer starves. Leases end with the run (revoked; a new run
  has a new epoch) or when their producer stops renewing them
  (``lease_ttl``: its node died).
- Order: with ``key=``, items of one key go to one fixed worker of each stage
  (``crc32`` of the key, modulo the stage's worker count), so items fed by one
  producer with equal keys are processed in feed order at every stage
  (``feed`` calls in order, or one feeder's ``put`` calls).
  Without a key, workers of a stage share items through a queue group and
  finish in any order.
- A worker that raises crashes (its supervisor restarts it; the mailbox and
  queued items survive the restart). The item is **retried** first thing by
  the restarted worker, up to ``retries`` times (so per-key order holds);
  after the last failure it is **dead-lettered** (reason names the
  pipeline, stage and attempts; ``stats.dead_lettered``) and its credit
  returned. Each failed attempt is also recorded as the node records any
  handler failure (``node.stats.failures`` and a "handler raised" dead
  letter). Inside ``process``, ``self.attempt`` is the attempt number.
- If the supervisor gives up (more than ``max_restarts`` in ``within``
  seconds) or the pipeline is stopped, waiting producers get
  ``PipelineClosed`` (a feeder by its next ``put`` or ``flush``: its lease
  is revoked); items in flight are dead-lettered by their workers.

Lowering: the generic lowering publishes each item (headers carry the
pipeline, run epoch, stage, key slot, attempt and, for a leased item, the
lease) on ``_pipe.<name>.<stage>`` (a queue group of the stage's workers) or,
keyed, on ``_pipe.<name>.<stage>.<n>``; lease requests and credit travel on
``_pipe.<name>.feed``. A transport listing ``"pipeline"`` in
``capabilities.native`` supplies a :class:`PipelineLowering` (work queues,
consumer groups), used by the gate, the workers and leased producers alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.patterns.pipeline_lease_wire import DEFAULT_TTL
from synaptic_mesh.patterns.pipeline_run import (
    GATE,
    KEEPER,
    FeedRefused,
    GenericPipeline,
    PipelineGate,
    PipelineKeeper,
    PipelineLowering,
    PipelineRuntime,
    PipelineStats,
    runtime_of,
)
from synaptic_mesh.patterns.pipeline_worker import ItemCall, attach_worker, process_item
from synaptic_mesh.runtime.errors import NoResponders, PipelineClosed
from synaptic_mesh.runtime.subjects import validate_subject
from synaptic_mesh.supervisors.spec import Backoff, ChildSpec, RestartType, Supervisor, child

if TYPE_CHECKING:
    from synaptic_mesh.patterns.pipeline_run import ItemMeta
    from synaptic_mesh.runtime.node import Node

__all__ = [
    "FeedRefused",
    "FunctionWorker",
    "GenericPipeline",
    "Pipeline",
    "PipelineLowering",
    "PipelineRuntime",
    "PipelineStats",
    "Stage",
    "StageWorker",
    "feed",
    "runtime_of",
]


@dataclass(frozen=True)
class Stage:
    """One stage: a name (one token), the worker, and how many workers.

    ``worker`` is a :class:`StageWorker` subclass (built with ``args`` and
    ``kwargs``) or an ``async def fn(item)`` (or plain ``def``) run by a
    stateless worker. ``workers`` defaults to the pipeline's.
    """

    name: str
    worker: type[StageWorker] | Callable[[Any], Any]
    workers: int | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


class StageWorker(AgentActor):
    """A worker of a stage: override :meth:`process`.

    Started by a :class:`Pipeline` only (its subject says which pipeline and
    stage it serves). It may define ``@on`` handlers and hooks like any actor.
    """

    _mesh_item: ItemMeta | None = None
    _mesh_runtime: PipelineRuntime | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # items reach the worker by their class, as plain tells do (pipeline_worker.ItemCall)
        cls._mesh_handlers = {**cls._mesh_handlers, ItemCall: process_item}

    async def process(self, item: Any) -> Any:
        """Work on ``item`` and return what the next stage gets (``None`` drops it)."""
        raise NotImplementedError(f"{type(self).__qualname__} must override process()")

    @property
    def attempt(self) -> int:
        """1 for the first try of the current item, 2 for its first retry, and so on."""
        return self._mesh_item.attempt if self._mesh_item is not None else 0

    async def _mesh_start(self) -> None:
        await attach_worker(self)
        await super()._mesh_start()


class FunctionWorker(StageWorker):
    """The worker of a stage given as a function."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        if self.is_async:  # called as the worker's process itself: one frame less per item
            self.process = fn  # type: ignore[method-assign]

    async def process(self, item: Any) -> Any:
        if self.is_async:
            return await self.fn(item)
        result = self.fn(item)
        return await result if inspect.isawaitable(result) else result


class SpecRef:
    """Hands the spec to the gate; compared by identity so trees compare without recursion."""

    def __init__(self, spec: Pipeline) -> None:
        self.spec = spec

    def __repr__(self) -> str:
        return f"<pipeline {self.spec.name}>"


class Pipeline(Supervisor):
    """A pipeline spec: a supervisor subtree (see the module docstring).

    Raises ``ValueError`` for a bad shape (no stages, stage names that are not
    one token or repeat or are ``"feed"``, counts below 1, ``retries < 0``,
    ``lease_ttl`` not positive) and ``InvalidSubject`` for a bad name or
    ``output``. ``lease_ttl``: seconds a producer's lease of first-stage
    credit lives without renewal (see :mod:`~synaptic_mesh.patterns.pipeline_lease`).
    """

    stages: tuple[Stage, ...]
    key: Callable[[Any], Any] | None
    prefetch: int
    retries: int
    output: str | None
    lease_ttl: float

    def __init__(
        self,
        name: str,
        stages: Sequence[Stage],
        *,
        workers: int = 1,
        key: Callable[[Any], Any] | None = None,
        prefetch: int = 1,
        retries: int = 2,
        output: str | None = None,
        lease_ttl: float = DEFAULT_TTL,
        max_restarts: int = 10,
        within: float = 5.0,
        backoff: Backoff | None = None,
        restart: RestartType = "permanent",
        shutdown: float = 30.0,
    ) -> None:
        validate_subject(name)
        if output is not None:
            validate_subject(output)
        if min(workers, prefetch) < 1 or retries < 0:
            raise ValueError("workers and prefetch must be at least 1, retries at least 0")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive, got {lease_ttl!r}")
        resolved = tuple(_resolve(stage, workers) for stage in stages)
        names = [s.name for s in resolved]
        if not resolved or len(set(names)) != len(names):
            raise ValueError(f"pipeline {name!r} needs stages with distinct names, got {names}")
        set_ = object.__setattr__
        for attr, value in (
            ("stages", resolved),
            ("key", key),
            ("prefetch", prefetch),
            ("retries", retries),
            ("output", output),
            ("lease_ttl", float(lease_ttl)),
        ):
            set_(self, attr, value)
        children: list[ChildSpec] = []
        for stage in resolved:
            for n in range(1, (stage.workers or 1) + 1):
                subject = f"{name}.{stage.name}.{n}"
                if isinstance(stage.worker, type):
                    children.append(
                        child(stage.worker, subject, args=stage.args, kwargs=stage.kwargs)
                    )
                else:
                    children.append(child(FunctionWorker, subject, kwargs={"fn": stage.worker}))
        # Started after every worker; the keeper, stopped first, closes the run's credit.
        ref = SpecRef(self)
        children.append(child(PipelineGate, f"{name}.{GATE}", kwargs={"ref": ref}))
        children.append(child(PipelineKeeper, f"{name}.{KEEPER}", kwargs={"ref": ref}))
        super().__init__(
            name, "one_for_one", max_restarts, within, backoff, children,
            restart=restart, shutdown=shutdown,
        )  # fmt: skip


def _resolve(stage: Stage, workers: int) -> Stage:
    validate_subject(stage.name)
    if "." in stage.name or stage.name in (GATE, KEEPER):
        raise ValueError(f"stage name {stage.name!r} must be one token, not {GATE!r} or {KEEPER!r}")
    count = stage.workers if stage.workers is not None else workers
    if count < 1:
        raise ValueError(f"stage {stage.name!r} needs at least 1 worker")
    worker = stage.worker
    if isinstance(worker, type) and not issubclass(worker, StageWorker):
        raise TypeError(f"stage {stage.name!r}: {worker.__qualname__} is not a StageWorker")
    if not isinstance(worker, type) and not callable(worker):
        raise TypeError(f"stage {stage.name!r}: worker must be a StageWorker class or a function")
    return Stage(stage.name, worker, count, tuple(stage.args), dict(stage.kwargs))


async def feed(
    node: Node,
    pipeline: str,
    item: Any,
    *,
    sender: str | None = None,
    timeout: float | None = None,
) -> None:
    """Give ``item`` to the pipeline called ``pipeline``; returns once its first stage took it.

    Waits for credit as long as it takes unless ``timeout`` is given
    (``AskTimeout``). Raises ``PipelineClosed`` when no such pipeline runs or
    it stops meanwhile.
    """
    try:
        reply = await node.ask(f"{pipeline}.{GATE}", item, timeout=timeout, sender=sender)
    except NoResponders:
        raise PipelineClosed(f"no pipeline {pipeline!r} is running") from None
    if isinstance(reply, FeedRefused):
        raise PipelineClosed(reply.reason)
