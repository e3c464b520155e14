"""The runtime half of an actor: its mailbox, its task and its lifecycle.

The user's :class:`AgentActor` holds behaviour and state; the cell owns the
mailbox, drains it in one task (``concurrency`` tasks if the actor asks for
more), runs the lifecycle hooks, and reports failures.

A cell lives through several *incarnations* of its actor: when a supervised
actor crashes, the incarnation ends, the supervisor is told, and on its word
the same cell builds a fresh instance (``on_restart``) and drains the same
mailbox again. The subject, the mailbox and its queued messages survive a
restart, so ``ActorRef``s held elsewhere stay valid (Akka keeps the mailbox
across a restart; OTP's new process starts with an empty one). An
unsupervised actor survives a handler exception instead: the failure is
reported and the message dead-lettered, and it goes on with its state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskStatus

from synaptic_mesh.actors.dispatch import Dispatcher
from synaptic_mesh.actors.mailbox import Mailbox, Overflow
from synaptic_mesh.actors.signals import Call, Exit, Signal, Stop, Suspend
from synaptic_mesh.runtime.errors import ActorStartError

if TYPE_CHECKING:
    from synaptic_mesh.actors.actor import AgentActor

log = logging.getLogger("synaptic_mesh.actors")

STOP_HOOK_TIMEOUT = 5.0
"""Seconds ``on_stop`` may take before it is cancelled."""


class Host(Protocol):
    """What a cell needs from its node (implemented by ``Node``)."""

    def dead_letter(
        self, reason: str, subject: str, message: Any = None, sender: str | None = None
    ) -> None: ...

    def actor_failed(self, cell: ActorCell, error: BaseException, message: Any) -> None: ...

    async def send_reply(self, call: Call, result: Any, error: BaseException | None) -> None: ...

    async def cell_stopped(self, cell: ActorCell) -> None: ...

    def note_late_reply(self) -> None: ...

    def incarnation_ended(self, cell: ActorCell, exit: Exit) -> None: ...


class Supervision(Protocol):
    """What a cell needs from its supervisor."""

    def child_exited(self, cell: ActorCell, exit: Exit) -> None:
        """Called when an incarnation ended; the supervisor answers with ``instruct``."""


class ActorCell(Dispatcher):
    """Mailbox, task(s) and lifecycle of one actor under one subject."""

    def __init__(
        self,
        host: Host,
        actor_class: type[AgentActor],
        subject: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        concurrency: int | None = None,
        supervisor: Supervision | None = None,
    ) -> None:
        self.host = host
        self.actor_class = actor_class
        self.subject = subject
        self.args = args
        self.kwargs = kwargs or {}
        self.concurrency = concurrency or actor_class.concurrency
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        self.mailbox = Mailbox(
            subject,
            capacity or actor_class.capacity,
            overflow or actor_class.overflow,
            on_drop=self._dropped,
        )
        self.table = actor_class._mesh_handlers
        self.supervisor = supervisor
        self.actor: AgentActor | None = None
        self.started = False
        self.incarnation = 0
        self.restarts = 0
        self.stop_reason: str | None = None
        self.failure: BaseException | None = None
        self.done = anyio.Event()
        self.scope: anyio.CancelScope | None = None
        self.current: Call | None = None
        self.subscriptions: list[Any] = []
        self._ending: Exit | None = None
        self._alive = False  # an instance has started and its on_stop has not run yet
        self._life: anyio.CancelScope | None = None
        self._instruction: asyncio.Future[tuple[str, str]] | None = None
        self._begun: asyncio.Future[BaseException | None] | None = None

    def __repr__(self) -> str:
        return f"<ActorCell {self.subject} {self.actor_class.__qualname__}>"

    # -- the cell's task -----------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the actor, then live incarnation after incarnation until stopped.

        ``task_status.started()`` is called once ``on_start`` returned; if it
        raised, the error is kept in ``self.failure`` and the spawner raises
        :class:`ActorStartError`.
        """
        with anyio.CancelScope() as scope:
            self.scope = scope
            try:
                error = await self._begin(None)
                task_status.started()
                if error is not None:
                    self.failure = error
                    self.stop_reason = f"on_start raised {type(error).__name__}: {error}"
                    return
                self.started = True
                while True:
                    exit = await self._live()
                    await self._end_incarnation(exit)
                    if not await self._next_incarnation(exit):
                        return
            finally:
                await self._finish()

    async def _begin(self, restart_reason: str | None) -> BaseException | None:
        """Build a fresh instance and run ``on_start`` (or ``on_restart``)."""
        self._ending = None
        self.incarnation += 1
        try:
            self.actor = self.new_actor()
            if restart_reason is None:
                await self.actor._mesh_start()
            else:
                await self.actor._mesh_restart(restart_reason)
        except Exception as exc:
            return exc
        self._alive = True
        return None

    def new_actor(self) -> AgentActor:
        """A fresh instance, with its cell attached before ``__init__`` runs."""
        actor = self.actor_class.__new__(self.actor_class)
        actor._mesh_cell = self
        actor.__init__(*self.args, **self.kwargs)
        return actor

    async def _live(self) -> Exit:
        """Drain the mailbox until this incarnation ends; say why it ended."""
        with anyio.CancelScope() as life:
            self._life = life
            if self.concurrency == 1:
                await self.drain()
            else:
                async with anyio.create_task_group() as workers:
                    for _ in range(self.concurrency):
                        workers.start_soon(self.drain)
        self._life = None
        if life.cancelled_caught and self._ending is None:
            self._ending = Exit("killed", "did not stop within its shutdown timeout")
        return self._ending or Exit("normal", "mailbox closed")

    async def _end_incarnation(self, exit: Exit) -> None:
        """Run ``on_stop`` of the ending instance (best effort) and tell monitors."""
        actor = self.actor
        if actor is not None and self._alive:
            self._alive = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_HOOK_TIMEOUT):
                try:
                    await actor._mesh_stop()
                except Exception:
                    log.exception("on_stop of %s raised", self.subject)
        self.host.incarnation_ended(self, exit)

    async def _next_incarnation(self, exit: Exit) -> bool:
        """Ask the supervisor what follows ``exit``; restart until it says stop."""
        supervisor = self.supervisor
        if supervisor is None or exit.kind == "shutdown":
            self.stop_reason = exit.reason
            return False
        while True:
            loop = asyncio.get_running_loop()
            self._instruction = loop.create_future()
            supervisor.child_exited(self, exit)
            with anyio.CancelScope(shield=False):
                order, reason = await self._instruction
            self._instruction = None
            if order == "stop":
                self.stop_reason = reason
                return False
            self.restarts += 1
            error = await self._begin(reason)
            begun, self._begun = self._begun, None
            if begun is not None and not begun.done():
                begun.set_result(error)
            if error is None:
                return True
            self.host.actor_failed(self, error, None)
            exit = Exit("crash", f"on_restart raised {type(error).__name__}: {error}", error)

    # -- orders from a supervisor or the node ---------------------------------

    @property
    def awaiting_instruction(self) -> bool:
        """The incarnation has ended and the cell waits for its supervisor's word."""
        return self._instruction is not None and not self._instruction.done()

    def instruct(self, order: str, reason: str) -> asyncio.Future[BaseException | None]:
        """Restart (``"restart"``) or stop (``"stop"``) a cell awaiting instruction.

        The returned future resolves once a restart's ``on_restart`` finished
        (with its error, or ``None``); for a stop, at once.
        """
        loop = asyncio.get_running_loop()
        begun: asyncio.Future[BaseException | None] = loop.create_future()
        if self._instruction is None or self._instruction.done():
            begun.set_result(RuntimeError(f"{self.subject} is not awaiting instruction"))
            return begun
        if order == "restart":
            self._begun = begun
        else:
            begun.set_result(None)
        self._instruction.set_result((order, reason))
        return begun

    async def suspend(self, reason: str, timeout: float) -> None:
        """End the running incarnation (finish the current message, else cancel it)."""
        if self.awaiting_instruction or self.done.is_set():
            return
        self.mailbox.put_system(Suspend(reason))
        await self._until_down(timeout)

    async def terminate(self, reason: str, timeout: float) -> None:
        """Stop for good: no report to the supervisor, no restart."""
        if self.done.is_set():
            return
        if self.awaiting_instruction:
            self.instruct("stop", reason)
        else:
            self.mailbox.put_system(Stop(reason, by_supervisor=True))
            self.mailbox.wake()
        with anyio.move_on_after(timeout):
            await self.done.wait()
        if not self.done.is_set():
            log.warning("actor %s did not stop within %g s; cancelling it", self.subject, timeout)
            if self.scope is not None:
                self.scope.cancel()
            await self.done.wait()

    async def _until_down(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            while not (self.awaiting_instruction or self.done.is_set()):
                await asyncio.sleep(0)
                if not (self.awaiting_instruction or self.done.is_set()):
                    await asyncio.sleep(0.0005)
        if not (self.awaiting_instruction or self.done.is_set()):
            log.warning("actor %s did not stop within %g s; cancelling it", self.subject, timeout)
            if self._life is not None:
                self._life.cancel()
            while not (self.awaiting_instruction or self.done.is_set()):
                await asyncio.sleep(0.0005)

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the actor to stop after its current message (system lane)."""
        if not self.mailbox.closed:
            self.mailbox.put_system(Stop(reason))

    def signal(self, message: Any) -> None:
        """Deliver ``message`` (a ``Down``) on the system lane, past a full mailbox."""
        if not self.mailbox.closed:
            self.mailbox.put_system(Signal(message))

    # -- ending ----------------------------------------------------------------

    def _system(self, item: Any) -> bool:
        """Handle one system message; ``False`` ends the incarnation."""
        if isinstance(item, Stop):
            kind = "shutdown" if item.by_supervisor else "normal"
            if self.supervisor is None or item.by_supervisor:
                self._close_mailbox(item.reason)
            self._ending = Exit(kind, item.reason)
            return False
        if isinstance(item, Suspend):
            self._ending = Exit("suspended", item.reason)
            return False
        log.warning("actor %s ignored unknown system message %r", self.subject, item)
        return True

    def _crashed(self, error: BaseException, message: Any) -> bool:
        """Report a handler's exception; ``True`` if the incarnation must end."""
        self.host.actor_failed(self, error, message)
        if self.supervisor is None:
            return False
        self._ending = Exit("crash", f"{type(error).__name__}: {error}", error)
        return True

    def _close_mailbox(self, reason: str) -> None:
        for left in self.mailbox.close():
            self._dead(left, f"actor {self.subject!r} stopped ({reason})")

    async def _finish(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._alive:  # cancelled while live (shutdown timeout): still clean up
                await self._end_incarnation(Exit("killed", "cancelled after its shutdown timeout"))
            self._close_mailbox(self.stop_reason or "stopped")
            if self.stop_reason is None:
                self.stop_reason = "cancelled"
            try:
                await self.host.cell_stopped(self)
            finally:
                self.done.set()

    def start_error(self) -> ActorStartError | None:
        if self.failure is None or self.started:
            return None
        err = ActorStartError(
            f"{self.actor_class.__qualname__} at {self.subject!r} failed to start: "
            f"{type(self.failure).__name__}: {self.failure}"
        )
        err.__cause__ = self.failure
        return err

    @property
    def idle(self) -> bool:
        """Started, nothing queued, and the drain loop asleep on the mailbox."""
        return self.started and self.mailbox.idle_waiting
