"""A running supervisor: it hears its children's exits and applies its spec.

Exits are queued and handled one at a time under a lock, as an OTP
supervisor handles ``EXIT`` signals in its own process; ``start_child`` and
``terminate_child`` take the same lock. Semantics are stated in
:mod:`synaptic_mesh.supervisors.spec`; this module carries them out.

An exit report carries the child's generation (an actor's incarnation, a
nested supervisor's start count) so a report that a restart has already
overtaken is recognised as stale and ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from synaptic_mesh.actors.signals import Exit
from synaptic_mesh.runtime.errors import MeshError, SupervisorFailed, SupervisorStartError
from synaptic_mesh.supervisors.children import ActorChild, ChildRecord, SupervisorChild
from synaptic_mesh.supervisors.spec import ChildSpec, Supervisor

if TYPE_CHECKING:
    from synaptic_mesh.actors.cell import ActorCell
    from synaptic_mesh.actors.ref import ActorRef

log = logging.getLogger("synaptic_mesh.supervisors")


class SupervisorRuntime:
    """The live counterpart of a :class:`Supervisor` spec."""

    def __init__(
        self,
        node: Any,
        spec: Supervisor,
        *,
        parent: SupervisorRuntime | None = None,
        record: SupervisorChild | None = None,
    ) -> None:
        self.node = node
        self.spec = spec
        self.name = spec.name
        self.parent = parent
        self.record = record
        self.children: list[ChildRecord] = []
        self.state = "new"
        self.failure: SupervisorFailed | None = None
        self.restart_times: deque[float] = deque()
        self._by_cell: dict[ActorCell, ActorChild] = {}
        self._events: deque[tuple[ChildRecord, int, Exit]] = deque()
        self._pumping = False
        self._lock = asyncio.Lock()
        self._dynamic = itertools.count(1)

    @property
    def busy(self) -> bool:
        """Exits are queued or being handled."""
        return bool(self._events) or self._pumping

    def __repr__(self) -> str:
        return f"<SupervisorRuntime {self.name} {self.spec.strategy} {self.state}>"

    # -- start and stop ----------------------------------------------------------

    async def start(self) -> None:
        """Start the children in spec order; if one fails, stop the rest and raise.

        Raises :class:`SupervisorStartError` naming the child and its error.
        """
        self.state = "starting"
        self.node.register_supervisor(self)
        if self.spec.strategy != "simple_one_for_one":
            for item in self.spec.children:
                record = self._record_for(item)
                try:
                    await record.start()
                except MeshError as exc:
                    await self._stop_children(f"child {record.name} failed to start")
                    self.state = "failed"
                    self.node.unregister_supervisor(self)
                    raise SupervisorStartError(
                        f"supervisor {self.name!r}: child {record.name!r} failed to start: {exc}"
                    ) from exc
                self.children.append(record)
        self.state = "running"

    async def shutdown(self, reason: str = "shutdown") -> None:
        """Stop every child in reverse start order (each within its shutdown time)."""
        async with self._lock:
            if self.state in ("stopped", "failed"):
                return
            self.state = "stopping"
            await self._stop_children(reason)
            self.state = "stopped"
            self.node.unregister_supervisor(self)

    async def _stop_children(self, reason: str) -> None:
        while self.children:
            record = self.children.pop()
            await record.terminate(reason)

    def _record_for(self, item: ChildSpec | Supervisor) -> ChildRecord:
        if isinstance(item, Supervisor):
            return SupervisorChild(self, item)
        return ActorChild(self, item)

    def adopt(self, cell: ActorCell, record: ActorChild) -> None:
        self._by_cell[cell] = record

    # -- dynamic children ----------------------------------------------------------

    async def start_child(self, *args: Any, subject: str | None = None, **kwargs: Any) -> ActorRef:
        """Add a child of a ``simple_one_for_one`` pool and return its ref.

        ``args`` and ``kwargs`` extend the template's; the subject defaults
        to ``<template subject>.<n>``.
        """
        if self.spec.strategy != "simple_one_for_one":
            raise MeshError(
                f"supervisor {self.name!r} is {self.spec.strategy}; start_child "
                f"is for simple_one_for_one pools"
            )
        template = self.spec.children[0]
        assert isinstance(template, ChildSpec)
        spec = dataclasses.replace(
            template,
            subject=subject or f"{template.subject}.{next(self._dynamic)}",
            args=(*template.args, *args),
            kwargs={**template.kwargs, **kwargs},
        )
        async with self._lock:
            if self.state != "running":
                raise MeshError(f"supervisor {self.name!r} is {self.state}")
            record = ActorChild(self, spec)
            await record.start()
            self.children.append(record)
        return self.node.ref(spec.subject)

    async def terminate_child(self, name: str) -> None:
        """Stop the child named ``name`` (an actor's subject) and remove it.

        Raises ``LookupError`` if no such child runs here.
        """
        async with self._lock:
            record = next((r for r in self.children if r.name == name), None)
            if record is None:
                raise LookupError(f"supervisor {self.name!r} has no child {name!r}")
            self.children.remove(record)
            await record.terminate("terminated by supervisor")

    # -- exits -------------------------------------------------------------------

    def child_exited(self, cell: ActorCell, exit: Exit) -> None:
        """Called by a supervised cell whose incarnation ended."""
        record = self._by_cell.get(cell)
        if record is None:
            cell.instruct("stop", "no longer supervised")
            return
        self._post(record, record.generation, exit)

    def nested_failed(self, record: SupervisorChild, failure: SupervisorFailed) -> None:
        """Called by a child supervisor that exceeded its restart intensity."""
        self._post(record, record.generation, Exit("crash", str(failure), failure))

    def _post(self, record: ChildRecord, generation: int, exit: Exit) -> None:
        self._events.append((record, generation, exit))
        if not self._pumping:
            self._pumping = True
            self.node.spawn_system_task(self._pump)

    async def _pump(self) -> None:
        try:
            while self._events:
                record, generation, exit = self._events.popleft()
                async with self._lock:
                    await self._handle(record, generation, exit)
        finally:
            self._pumping = False

    async def _handle(self, record: ChildRecord, generation: int, exit: Exit) -> None:
        if self.state != "running" or record not in self.children:
            await record.terminate("supervisor is not running")
            return
        if generation != record.generation:
            return  # a restart already overtook this report
        if record.suspended_by_owner and exit.kind in ("suspended", "killed"):
            return
        permanent = record.restart_type == "permanent"
        transient = record.restart_type == "transient"
        crashed = exit.kind in ("crash", "killed")
        if exit.kind == "shutdown" or not (permanent or (transient and crashed)):
            log.info("%s: child %s ended (%s); not restarted", self.name, record.name, exit.reason)
            self.children.remove(record)
            await record.terminate(exit.reason)
            return
        if self._intensity_exceeded():
            await self._fail(record, exit)
            return
        await self._restart(record, exit)

    def _intensity_exceeded(self) -> bool:
        now = asyncio.get_running_loop().time()
        times = self.restart_times
        times.append(now)
        while times and times[0] < now - self.spec.within:
            times.popleft()
        return len(times) > self.spec.max_restarts

    # -- strategies ----------------------------------------------------------------

    def _group(self, failed: ChildRecord) -> list[ChildRecord]:
        strategy = self.spec.strategy
        if strategy == "one_for_all":
            return list(self.children)
        if strategy == "rest_for_one":
            return self.children[self.children.index(failed) :]
        return [failed]

    async def _restart(self, failed: ChildRecord, exit: Exit) -> None:
        reason = f"{failed.name}: {exit.reason}"
        group = self._group(failed)
        log.info("%s: restarting %s after %s", self.name, [r.name for r in group], reason)
        for record in reversed(group):
            if record is not failed and record.running:
                record.suspended_by_owner = True
                await record.suspend(f"sibling {reason}")
        for record in group:
            if record is not failed and record.restart_type == "temporary":
                self.children.remove(record)
                await record.terminate(f"sibling {reason}")
                continue
            if record is failed:
                await self._backoff(record)
            error = await record.restart(reason)
            record.suspended_by_owner = False
            if error is not None and isinstance(record, SupervisorChild):
                self._post(record, record.generation, Exit("crash", str(error), error))

    async def _backoff(self, record: ChildRecord) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - record.last_restart > self.spec.within:
            record.consecutive_restarts = 0
        record.consecutive_restarts += 1
        record.last_restart = now
        backoff = self.spec.backoff
        if backoff is not None:
            await asyncio.sleep(backoff.delay(record.consecutive_restarts))

    async def _fail(self, record: ChildRecord, exit: Exit) -> None:
        spec = self.spec
        head = f"{self.name}: more than {spec.max_restarts} restarts within {spec.within:g} s"
        if isinstance(exit.error, SupervisorFailed):
            chain = [head, *exit.error.chain]
        else:
            chain = [head, f"{record.name}: {exit.reason}"]
        self.failure = SupervisorFailed(chain)
        log.error("supervisor failed: %s", self.failure)
        await self._stop_children("supervisor failed")
        self.state = "failed"
        self.node.unregister_supervisor(self)
        if self.parent is not None and self.record is not None:
            self.parent.nested_failed(self.record, self.failure)
        else:
            self.node.supervision_failed(self, self.failure)

    # -- looking at it -------------------------------------------------------------

    def describe(self, indent: str = "") -> str:
        """The subtree as indented text (``synaptic-mesh run --tree``)."""
        spec = self.spec
        lines = [
            f"{self.name} ({spec.strategy}, max {spec.max_restarts} restarts in "
            f"{spec.within:g} s) {self.state}"
        ]
        for i, record in enumerate(self.children):
            last = i == len(self.children) - 1
            branch, pad = ("└── ", "    ") if last else ("├── ", "│   ")
            text = record.describe().replace("\n", "\n" + pad)
            lines.append(branch + text)
        return "\n".join(indent + line for line in lines)
