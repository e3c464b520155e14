"""A stage worker's side of a pipeline: receiving items, processing them, credit back.

:mod:`synaptic_mesh.patterns.pipeline` states the semantics. Each worker
subscribes to its stage's queue group ``_pipe.<name>.<stage>`` and to its own
``_pipe.<name>.<stage>.<n>``; an item arrives either with a ``pipe`` header
(sent by the gate or by the previous stage's worker) or, sent by a producer
on a lease, with the lease token as its ``corr``
(:mod:`~synaptic_mesh.patterns.pipeline_lease`). Either way it becomes an
:class:`~synaptic_mesh.patterns.pipeline_run.ItemMeta` and an :class:`ItemCall`
in the worker's mailbox, so items are processed one at a time in arrival
order, with retries first thing after a crash.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from synaptic_mesh.actors.signals import Call
from synaptic_mesh.patterns.pipeline_lease_wire import read_token
from synaptic_mesh.patterns.pipeline_run import (
    PIPE_PREFIX,
    ItemMeta,
    PipelineRuntime,
    _lowering,
    _runtimes,
    runtime_of,
)
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.errors import MeshError, PipelineClosed
from synaptic_mesh.transports.base import eager_handler

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from synaptic_mesh.patterns.pipeline import StageWorker
    from synaptic_mesh.runtime.node import Node

LEASED_CACHE = 256
"""Lease tokens a worker remembers (one per lease, or per lease and key slot)."""

Leased = tuple[ItemMeta, "Callable[[], None] | None"]
"""A lease token's items: their metadata, and what counts one's arrival (``None``: of
another run, not counted)."""


class ItemCall(Call):
    """A pipeline item in its worker's mailbox.

    A :class:`~synaptic_mesh.actors.signals.Call`, so ``current_sender`` and
    ``current_subject`` name its sender and subject and a closing mailbox
    dead-letters its message; every stage worker's handler table maps this
    class to :func:`process_item`, so the drain loop hands it over by its
    class, as it does a plain tell: no handler lookup and no step between.
    """

    __slots__ = ("meta",)

    def __init__(self, item: Any, meta: ItemMeta, subject: str, sender: str | None) -> None:
        self.message = item
        self.meta = meta
        self.subject = subject
        self.sender = sender
        self.handler = self.future = self.reply_to = self.corr = None


class WorkerRoute:
    """What a worker's subscriptions know: its node's pipelines, its pipeline and stage."""

    __slots__ = ("leased", "name", "runs", "stage")

    def __init__(self, node: Node, name: str, stage: str) -> None:
        self.runs: dict[str, PipelineRuntime] = _runtimes.setdefault(node, {})
        self.name = name
        self.stage = stage
        # lease token -> its items' metadata, and where they are counted
        self.leased: dict[str, Leased] = {}

    def read_leased(self, token: str) -> Leased | None:
        """What items carrying lease ``token`` need; ``None`` if it is not valid here (not a
        token, or this worker's stage is not the run's first)."""
        parts = read_token(token)
        if parts is None:
            return None
        epoch, lease, slot = parts
        meta = tuple.__new__(ItemMeta, (self.name, epoch, 0, slot, 1, lease))
        runtime = self.runs.get(self.name)
        if runtime is None or runtime.epoch != epoch:
            return meta, None  # of another run: not kept, dead-lettered by process_item
        if runtime.spec.stages[0].name != self.stage:
            return None
        found = (meta, runtime.leases.counter(lease, slot))
        if len(self.leased) >= LEASED_CACHE:
            self.leased.clear()
        self.leased[token] = found
        return found


async def attach_worker(worker: StageWorker) -> None:
    """Subscribe ``worker`` to its stage's items (called as it starts)."""
    tokens = worker.subject.split(".")
    if len(tokens) < 3 or not tokens[-1].isdigit():
        raise ValueError(
            f"{type(worker).__qualname__} at {worker.subject!r}: start it in a Pipeline"
        )
    name, stage, n = ".".join(tokens[:-2]), tokens[-2], tokens[-1]
    node = worker.node
    cell = worker._mesh_cell
    deliver = partial(_on_item, node, cell, WorkerRoute(node, name, stage))
    shared = f"{PIPE_PREFIX}.{name}.{stage}"
    lowering = _lowering(node)
    for subject, queue in ((shared, shared), (f"{shared}.{n}", None)):
        cell.subscriptions.append(await lowering.attach(node, subject, deliver, queue=queue))


@eager_handler
def _on_item(
    node: Node,
    cell: Any,
    route: WorkerRoute,
    subject: str,
    frames: Sequence[Any],
    reply_to: str | None,
) -> Awaitable[None]:
    """Queue an item for the worker at ``cell``: ``DONE`` when it went in at once."""
    env = node.open_envelope(subject, frames)
    if env is None:
        return DONE
    token = env.corr
    headers = env.headers
    if token is not None and (headers is None or "pipe" not in headers):  # sent on a lease
        found = route.leased.get(token) or route.read_leased(token)
        if found is None:
            node.dead_letter(f"not a lease token here: {token!r}", subject, env.body, env.sender)
            return DONE
        meta, arrived = found
        if arrived is not None:
            arrived()
    else:
        meta = ItemMeta.read(headers)  # type: ignore[assignment]
        if meta is None:
            reason = "not a pipeline item (no 'pipe' header or lease token)"
            node.dead_letter(reason, subject, env.body, env.sender)
            return DONE
    call = ItemCall(env.body, meta, subject, env.sender)
    try:
        cell.mailbox.put_nowait(call)  # the common case: room in the worker's mailbox
    except MeshError:  # full (waits under "block") or closed (dead-lettered): the slow path
        return node.deliver(cell, call, env)
    return DONE


async def process_item(worker: StageWorker, call: ItemCall) -> None:
    """Run ``worker.process`` on one item, hand its result on, give its credit back."""
    meta, item = call.meta, call.message
    runtime = worker._mesh_runtime  # the run this worker served last: usually this one
    if runtime is None or runtime.epoch != meta.epoch or runtime.name != meta.pipeline:
        runtime = worker._mesh_runtime = runtime_of(worker.node, meta.pipeline)
        if runtime is None or runtime.epoch != meta.epoch:
            reason = f"pipeline {meta.pipeline!r} is not running"
            worker.node.dead_letter(reason, worker.subject, item)
            return
    cell = worker._mesh_cell
    cell.current = call  # what current_sender and current_subject report, as for any Call
    worker._mesh_item = meta
    try:
        try:
            result = await worker.process(item)
        except Exception as exc:
            again = runtime.failed(meta, worker, item, exc)
            if again is not None:  # retried first thing by the restarted worker
                cell.mailbox.user.appendleft(ItemCall(item, again, call.subject, call.sender))
            raise
        finally:
            worker._mesh_item = None
        # The item is finished once its result is handed on; only then does its credit return.
        runtime.stats.processed[runtime.stage_names[meta.stage]] += 1
        try:
            if result is not None and runtime.handing_on(meta, result):
                await runtime.hand_on(meta, result, worker.subject)
        except PipelineClosed as exc:
            worker.node.dead_letter(f"result not handed on: {exc}", worker.subject, result)
        finally:
            if meta.lease is None:
                runtime.release(meta)
            else:  # a lease's credit goes back to its producer (now, or with a later batch)
                due = runtime.leases.finished(meta.lease, meta.slot)
                if due is not None:
                    await runtime.leases.send_due(due)
    finally:
        cell.current = None
