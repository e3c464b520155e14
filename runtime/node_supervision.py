"""The supervision and monitor side of a ``Node``: trees, failures, ``Down``.

A mixin of :class:`~synaptic_mesh.runtime.node.Node`, kept apart so that the
node module holds lifecycle and messaging only; it uses the node's registry
(``_local``), transport and task group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from synaptic_mesh.actors.signals import Exit
from synaptic_mesh.runtime.errors import SupervisorFailed
from synaptic_mesh.runtime.subjects import matches
from synaptic_mesh.supervisors.monitors import NOPROC, Down, Monitors
from synaptic_mesh.supervisors.runtime import SupervisorRuntime
from synaptic_mesh.supervisors.spec import Supervisor

if TYPE_CHECKING:
    from synaptic_mesh.actors.cell import ActorCell
    from synaptic_mesh.transports.base import Transport

log = logging.getLogger("synaptic_mesh.node")


class NodeSupervision:
    """Supervision trees, root failure, monitors and link-peer losses of a node."""

    name: str
    transport: Transport
    failure: SupervisorFailed | None
    _local: dict[str, ActorCell]
    _monitors: Monitors
    _supervisors: dict[str, SupervisorRuntime]
    _roots: list[SupervisorRuntime]
    _failure_close: asyncio.Task[None] | None

    def _check_running(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _spawn_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        raise NotImplementedError

    def dead_letter(
        self,
        reason: str,
        subject: str,
        message: Any = None,
        sender: str | None = None,
        *,
        detail: str = "",
    ) -> None:
        raise NotImplementedError

    # -- supervision -----------------------------------------------------------

    async def start_supervisor(self, tree: Supervisor) -> SupervisorRuntime:
        """Start a supervision tree (children in order) and return its root.

        Raises ``SupervisorStartError`` if a child fails to start; the
        children already started are stopped again.
        """
        self._check_running()
        if not isinstance(tree, Supervisor):
            raise TypeError(f"expected a Supervisor spec, got {tree!r}")
        root = SupervisorRuntime(self, tree)
        await root.start()
        self._roots.append(root)
        return root

    def supervisor(self, name: str) -> SupervisorRuntime:
        """The running supervisor called ``name`` (for ``start_child`` and friends)."""
        try:
            return self._supervisors[name]
        except KeyError:
            raise LookupError(f"no running supervisor {name!r} on node {self.name}") from None

    def register_supervisor(self, runtime: SupervisorRuntime) -> None:
        if runtime.name in self._supervisors:
            raise ValueError(f"a supervisor named {runtime.name!r} already runs here")
        self._supervisors[runtime.name] = runtime

    def unregister_supervisor(self, runtime: SupervisorRuntime) -> None:
        if self._supervisors.get(runtime.name) is runtime:
            del self._supervisors[runtime.name]

    def supervision_tree(self) -> str:
        """Every running tree as indented text, plus unsupervised actors."""
        parts = [root.describe() for root in self._roots if root.state == "running"]
        loose = [c.subject for c in self._local.values() if c.supervisor is None]
        if loose:
            parts.append("(unsupervised) " + ", ".join(loose))
        return "\n".join(parts) if parts else "(no actors)"

    def supervision_failed(self, root: SupervisorRuntime, failure: SupervisorFailed) -> None:
        """A root supervisor gave up: remember why and close the node."""
        self.failure = failure
        log.error("root supervisor %s failed; closing node %s: %s", root.name, self.name, failure)
        if self._failure_close is None:
            self._failure_close = asyncio.get_running_loop().create_task(self.close())

    def spawn_system_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the node's task group (supervisors' exit handling)."""
        self._spawn_task(fn)

    # -- monitors ----------------------------------------------------------------

    def monitor(self, subject: str, watcher: str) -> int:
        """Deliver ``Down(subject, reason)`` to the actor ``watcher`` when ``subject`` ends.

        See :mod:`synaptic_mesh.supervisors.monitors` for the semantics.
        """
        reference = self._monitors.add(subject, watcher)
        cell = self._local.get(subject)
        if cell is not None and cell.started and not cell.done.is_set():
            return reference
        if self._remote_peers(subject) == []:
            self._deliver_down(subject, NOPROC)
        return reference

    def _remote_peers(self, subject: str) -> list[str] | None:
        """Other nodes serving ``subject``; ``None`` when the transport cannot tell.

        A broker transport (NATS, a ZeroMQ proxy) does not show who subscribes,
        so a monitor of an actor elsewhere stays armed instead of reporting
        ``noproc``; it fires for what this node sees (its own actors).
        """
        peers_serving = getattr(self.transport, "peers_serving", None)
        return peers_serving(subject) if peers_serving is not None else None

    def _peer_down(self, peer: str, reason: str) -> None:
        """A link transport lost a peer: watchers of what only it served get ``Down``."""
        for subject in self._monitors.targets():
            if subject not in self._local and self._remote_peers(subject) == []:
                self._deliver_down(subject, f"noconnection: node {peer} is down ({reason})")

    def _interest_gone(self, peer: str, pattern: str) -> None:
        """A peer stopped serving ``pattern``: watchers of a subject nobody serves now get
        ``Down``. The far node knows why its actor stopped; this one only sees it go."""
        for subject in self._monitors.targets():
            if (
                subject not in self._local
                and matches(pattern, subject)
                and self._remote_peers(subject) == []
            ):
                self._deliver_down(subject, f"gone: node {peer} stopped serving it")

    def _bad_frame(self, bad: Any) -> None:
        """A link transport refused input: record it as a dead letter."""
        subject = getattr(bad, "subject", None) or "_mesh.link"
        self.dead_letter(
            f"bad frame from {bad.peer}: {bad.reason}", subject, detail=bad.preview or ""
        )

    def demonitor(self, reference: int) -> None:
        """Cancel a monitor made by ``monitor``."""
        self._monitors.remove(reference)

    def incarnation_ended(self, cell: ActorCell, exit: Exit) -> None:
        """Called by a cell when one incarnation of its actor ended."""
        if cell.actor is not None:  # end what the incarnation subscribed, joined or opened
            cell.actor._mesh_incarnation_ended(f"{exit.kind}: {exit.reason}", self._spawn_task)
        self._deliver_down(cell.subject, f"{exit.kind}: {exit.reason}")

    def _deliver_down(self, subject: str, reason: str) -> None:
        for watcher in self._monitors.fire(subject):
            cell = self._local.get(watcher)
            if cell is not None:
                cell.signal(Down(subject, reason))
