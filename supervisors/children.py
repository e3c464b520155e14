"""The running children of a supervisor: actors and nested supervisors.

Both kinds answer the same four verbs, so a strategy never asks which kind it
holds: ``start`` (first time, raising if it fails), ``suspend`` (end the
running incarnation so it can be restarted), ``restart`` (a fresh
incarnation; returns its start error or ``None``), ``terminate`` (for good).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synaptic_mesh.runtime.errors import MeshError
from synaptic_mesh.supervisors.spec import ChildSpec, Supervisor

if TYPE_CHECKING:
    from synaptic_mesh.actors.cell import ActorCell
    from synaptic_mesh.supervisors.runtime import SupervisorRuntime


class ChildRecord:
    """What a supervisor keeps about one child."""

    spec: ChildSpec | Supervisor

    def __init__(self, owner: SupervisorRuntime) -> None:
        self.owner = owner
        self.suspended_by_owner = False
        self.consecutive_restarts = 0
        self.last_restart = float("-inf")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def restart_type(self) -> str:
        return self.spec.restart

    @property
    def generation(self) -> int:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def suspend(self, reason: str) -> None:
        raise NotImplementedError

    async def restart(self, reason: str) -> BaseException | None:
        raise NotImplementedError

    async def terminate(self, reason: str) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class ActorChild(ChildRecord):
    """An actor under supervision; its cell persists across restarts."""

    def __init__(self, owner: SupervisorRuntime, spec: ChildSpec) -> None:
        super().__init__(owner)
        self.spec: ChildSpec = spec
        self.cell: ActorCell | None = None

    @property
    def generation(self) -> int:
        return self.cell.incarnation if self.cell is not None else 0

    @property
    def running(self) -> bool:
        cell = self.cell
        return cell is not None and not cell.done.is_set() and not cell.awaiting_instruction

    async def start(self) -> None:
        spec = self.spec
        self.cell = await self.owner.node.start_cell(
            spec.actor_class,
            spec.subject,
            spec.args,
            dict(spec.kwargs),
            capacity=spec.capacity,
            overflow=spec.overflow,
            concurrency=spec.concurrency,
            supervisor=self.owner,
        )
        self.owner.adopt(self.cell, self)

    async def suspend(self, reason: str) -> None:
        if self.cell is not None:
            await self.cell.suspend(reason, self.spec.shutdown)

    async def restart(self, reason: str) -> BaseException | None:
        if self.cell is None or not self.cell.awaiting_instruction:
            return RuntimeError(f"{self.name} is not waiting to be restarted")
        return await self.cell.instruct("restart", reason)

    async def terminate(self, reason: str) -> None:
        if self.cell is not None:
            await self.cell.terminate(reason, self.spec.shutdown)

    def describe(self) -> str:
        cell = self.cell
        state = "running" if self.running else "stopped"
        restarts = cell.restarts if cell is not None else 0
        return (
            f"{self.spec.subject}  {self.spec.actor_class.__qualname__}  "
            f"{self.spec.restart}  {state}  restarts={restarts}"
        )


class SupervisorChild(ChildRecord):
    """A nested supervisor; a restart builds a fresh one (fresh intensity count)."""

    def __init__(self, owner: SupervisorRuntime, spec: Supervisor) -> None:
        super().__init__(owner)
        self.spec: Supervisor = spec
        self.runtime: SupervisorRuntime | None = None
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def running(self) -> bool:
        return self.runtime is not None and self.runtime.state == "running"

    async def start(self) -> None:
        from synaptic_mesh.supervisors.runtime import SupervisorRuntime

        self._generation += 1
        self.runtime = SupervisorRuntime(self.owner.node, self.spec, parent=self.owner, record=self)
        await self.runtime.start()

    async def suspend(self, reason: str) -> None:
        if self.runtime is not None:
            await self.runtime.shutdown(reason)

    async def restart(self, reason: str) -> BaseException | None:
        if self.runtime is not None and self.runtime.state == "running":
            await self.runtime.shutdown(reason)
        try:
            await self.start()
        except MeshError as exc:
            return exc
        return None

    async def terminate(self, reason: str) -> None:
        if self.runtime is not None:
            await self.runtime.shutdown(reason)

    def describe(self) -> str:
        return self.runtime.describe() if self.runtime is not None else f"{self.name} (stopped)"
