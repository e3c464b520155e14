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
import contextvars
import logging
import weakref
from collections.abc import Coroutine, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from synaptic_mesh.actors.dispatch import Dispatcher
from synaptic_mesh.actors.mailbox import Mailbox, Overflow
from synaptic_mesh.actors.signals import Call, Exit, Signal, Stop, Suspend
from synaptic_mesh.runtime.eager import Resumed
from synaptic_mesh.runtime.errors import ActorStartError

if TYPE_CHECKING:
    from synaptic_mesh.actors.actor import AgentActor

log = logging.getLogger("synaptic_mesh.actors")

STOP_HOOK_TIMEOUT = 5.0
"""Seconds ``on_stop`` may take before it is cancelled."""

_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})
"""Shared by every cell spawned without keyword arguments (most): one dict less each."""


class Done:
    """A one-shot event (``set``, ``is_set``, ``await wait()``), as ``anyio.Event``.

    A cell's ``done`` is read by everyone and awaited by few (whoever stops
    the actor), so the waiters' futures are made by ``wait`` and nothing else
    is: an idle actor's ``done`` is one small object, where an ``anyio.Event``
    carries an ``asyncio.Event`` and its waiter ``deque`` (close to 1 KiB)
    from birth. Like ``anyio.Event.wait``, waiting on an event already set
    still yields once to the loop (a checkpoint), and a cancelled waiter
    leaves the others waiting.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        if self._set:
            await asyncio.sleep(0)
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


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


_KEEPERS: weakref.WeakKeyDictionary[TaskGroup, TaskKeeper] = weakref.WeakKeyDictionary()


class TaskKeeper:
    """Runs actor cells as bare asyncio tasks owned by one task of an AnyIO task group.

    Why not ``TaskGroup.start_soon`` for each cell: with AnyIO 4.16 every task
    it starts carries a ``TaskHandle``, a cancel scope with two sets, an
    ``Event`` (an ``asyncio.Event`` and its ``deque``), a wrapper coroutine,
    a task-state entry and a done-callback closure: about 2.3 KiB and several
    microseconds per task, times every actor of a node. A bare task costs
    none of that.

    Ownership is unchanged: the keeper itself is a task of the node's group.
    When the group is cancelled (the node closes), the keeper cancels the
    cells still running and waits for them, so no task outlives the group;
    an exception escaping a cell's ``run`` (a runtime bug: ``run`` handles
    what the actor raises) is re-raised by the keeper, which fails the group
    as a failing child task would have.
    """

    __slots__ = ("__weakref__", "_context", "_failure", "_on_done", "_tasks", "_wake")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None
        # One bound method and one (empty) context shared by every task's
        # done callback, instead of a fresh pair per task.
        self._on_done = self._task_done
        self._context = contextvars.Context()

    @classmethod
    async def of(cls, group: TaskGroup) -> TaskKeeper:
        """The keeper of ``group``, started in it on first use."""
        keeper = _KEEPERS.get(group)
        if keeper is None:
            # Registered before the await, so concurrent spawns share this one.
            keeper = _KEEPERS[group] = cls()
            try:
                await group.start(keeper._keep)
            except BaseException:
                del _KEEPERS[group]
                raise
        return keeper

    def spawn(
        self,
        coro: Coroutine[Any, Any, None],
        name: str,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[None]:
        """Run ``coro`` as a bare task named ``name`` (shared: no new string), in
        ``context`` if given (else a copy of the current one, as ``create_task``)."""
        task = asyncio.get_running_loop().create_task(coro, name=name, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._on_done, context=self._context)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._failure is not None:
            return
        error = task.exception()
        if error is not None:
            self._failure = error
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)

    async def _keep(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        loop = asyncio.get_running_loop()
        try:
            task_status.started()
            while self._failure is None:
                self._wake = loop.create_future()
                await self._wake
            raise self._failure
        finally:
            self._wake = None
            left = list(self._tasks)
            for task in left:
                task.cancel()
            if left:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait(left)


class ActorCell(Dispatcher):
    """Mailbox, task(s) and lifecycle of one actor under one subject.

    Slotted: a node may hold 100k cells, and a slotted object is smaller than
    one with a ``__dict__`` and quicker to build.
    """

    __slots__ = (
        "_alive",
        "_begun",
        "_context",
        "_drainer",
        "_ending",
        "_instruction",
        "_killed",
        "_life",
        "_resumed",
        "_started_signal",
        "actor",
        "actor_class",
        "args",
        "concurrency",
        "current",
        "done",
        "failure",
        "host",
        "incarnation",
        "kwargs",
        "mailbox",
        "restarts",
        "scope",
        "started",
        "stop_reason",
        "subject",
        "subscriptions",
        "supervisor",
        "table",
    )

    def __init__(
        self,
        host: Host,
        actor_class: type[AgentActor],
        subject: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
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
        self.kwargs = kwargs or _NO_KWARGS
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
        self.done = Done()
        self.scope: anyio.CancelScope | None = None  # the running incarnation's
        self.current: Call | None = None
        self.subscriptions: list[Any] = []
        self._ending: Exit | None = None
        self._alive = False  # an instance has started and its on_stop has not run yet
        self._killed = False  # terminate gave up waiting (or the spawner): end now
        self._life: anyio.CancelScope | None = None
        self._instruction: asyncio.Future[tuple[str, str]] | None = None
        self._begun: asyncio.Future[BaseException | None] | None = None
        self._started_signal: asyncio.Future[None] | None = None
        self._context: contextvars.Context | None = None  # the cell task's (see start_task)
        self._drainer: asyncio.Task[Any] | None = None
        self._resumed: Resumed | None = None

    def __repr__(self) -> str:
        return f"<ActorCell {self.subject} {self.actor_class.__qualname__}>"

    # -- the cell's task -----------------------------------------------------

    def start_task(self, keeper: TaskKeeper) -> asyncio.Future[None]:
        """Start this cell's task under ``keeper``; returns the future of its start.

        The future resolves once ``on_start`` returned (see :meth:`run`). A
        plain future the spawner awaits does what ``TaskGroup.start`` did for
        a fraction of the cost: no task status object, no cancel scope moved
        between owners, fewer trips through the event loop per spawn.
        """
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._started_signal = started
        # The task runs in a context the cell keeps, so that a message begun
        # outside the task (``Dispatcher.run_now``) sees the task's context vars.
        self._context = contextvars.copy_context()
        keeper.spawn(self.run(), self.subject, self._context)
        return started

    async def run(self) -> None:
        """Start the actor, then live incarnation after incarnation until stopped.

        The start future (:meth:`start_task`) is resolved once ``on_start``
        returned; if it raised, the error is kept in ``self.failure`` and the
        spawner raises :class:`ActorStartError`. If the cell ends before that
        (killed, or :meth:`abort_start`), the future gets an ``ActorStartError``.
        """
        try:
            restart_reason: str | None = None
            while (exit := await self._incarnation(restart_reason)) is not None:
                if self._alive:  # it started (a failed on_restart did not): on_stop, monitors
                    await self._end_incarnation(exit)
                restart_reason = await self._after(exit)
                if restart_reason is None:
                    return
        finally:
            await self._finish()

    def _signal_started(self, error: BaseException | None = None) -> None:
        started, self._started_signal = self._started_signal, None
        if started is not None and not started.done():
            if error is None:
                started.set_result(None)
            else:
                started.set_exception(error)

    def abort_start(self) -> None:
        """The spawner was cancelled while ``on_start`` ran: kill the starting cell."""
        self._kill()

    def _kill(self) -> None:
        """End the cell now, whatever it is doing (except its shielded clean-up).

        Cancels the running incarnation's scope (its start hook or its drain
        loop) and ends a wait for the supervisor's word; the cell then runs
        ``on_stop`` and stops without asking its supervisor anything.
        """
        self._killed = True
        if self.scope is not None:
            self.scope.cancel()
        instruction = self._instruction
        if instruction is not None and not instruction.done():
            instruction.set_result(("stop", "cancelled"))

    async def _incarnation(self, restart_reason: str | None) -> Exit | None:
        """Build and start a fresh instance, then drain the mailbox until it ends.

        Returns why it ended, or ``None`` when the cell must stop (``on_start``
        raised, or the cell was killed). An ``on_restart`` that raised is
        reported and returned as a crash, with ``self._alive`` still false.

        Start hook and drain loop run in one cancel scope, the incarnation's:
        ``terminate`` cancels it after its timeout (:meth:`_kill`), ``suspend``
        after its own, and then only while draining (``self._life``). One
        scope per incarnation, where there used to be one per cell plus one
        per incarnation, so an idle actor holds one, not two (with their two
        sets each, about 650 bytes), and a spawn enters one.
        """
        if self._killed:
            return None
        with anyio.CancelScope() as scope:
            self.scope = scope
            error = await self._begin(restart_reason)
            if restart_reason is None:
                self._signal_started()
                if error is not None:
                    self.failure = error
                    self.stop_reason = f"on_start raised {type(error).__name__}: {error}"
                    return None
                self.started = True
            else:
                begun, self._begun = self._begun, None
                if begun is not None and not begun.done():
                    begun.set_result(error)
                if error is not None:
                    self.host.actor_failed(self, error, None)
                    why = f"on_restart raised {type(error).__name__}: {error}"
                    return Exit("crash", why, error)
            self._life = scope
            try:
                if self.concurrency == 1:
                    await self.drain()
                else:
                    async with anyio.create_task_group() as workers:
                        for _ in range(self.concurrency):
                            workers.start_soon(self.drain)
            finally:
                self._life = None
        self.scope = None
        if self._killed:
            return None
        if scope.cancelled_caught and self._ending is None:
            self._ending = Exit("killed", "did not stop within its shutdown timeout")
        return self._ending or Exit("normal", "mailbox closed")

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

    async def _end_incarnation(self, exit: Exit) -> None:
        """Run ``on_stop`` of the ending instance (best effort) and tell monitors.

        An actor that keeps the base class's ``on_stop`` (a no-op) is not
        given the shielded, timed scope that a real hook needs: that is two
        cancel scopes and a timer per restart, for nothing.
        """
        actor = self.actor
        if actor is not None and self._alive:
            self._alive = False
            if _default_stop(type(actor)):
                self.host.incarnation_ended(self, exit)
                return
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_HOOK_TIMEOUT):
                try:
                    await actor._mesh_stop()
                except Exception:
                    log.exception("on_stop of %s raised", self.subject)
        self.host.incarnation_ended(self, exit)

    async def _after(self, exit: Exit) -> str | None:
        """Ask the supervisor what follows ``exit``: the restart's reason, or ``None`` to stop.

        ``None`` also when there is no supervisor, after a shutdown, or once
        killed. The restarted incarnation then runs from :meth:`run`, so its
        drain loop is no deeper in coroutines than the first one.
        """
        supervisor = self.supervisor
        if supervisor is None or exit.kind == "shutdown":
            self.stop_reason = exit.reason
            return None
        self._instruction = asyncio.get_running_loop().create_future()
        supervisor.child_exited(self, exit)
        if self._killed:  # killed while ending: the supervisor is told, not waited for
            self._instruction = None
            return None
        order, reason = await self._instruction
        self._instruction = None
        if self._killed:
            return None
        if order == "stop":
            self.stop_reason = reason
            return None
        self.restarts += 1
        return reason

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
            self._kill()
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
            self._instruction = None
            begun, self._begun = self._begun, None
            if begun is not None and not begun.done():  # killed in on_restart
                begun.set_result(RuntimeError(f"{self.subject} stopped while restarting"))
            if self._alive:  # cancelled while live (shutdown timeout): still clean up
                await self._end_incarnation(Exit("killed", "cancelled after its shutdown timeout"))
            self._close_mailbox(self.stop_reason or "stopped")
            if self.stop_reason is None:
                self.stop_reason = "cancelled"
            try:
                await self.host.cell_stopped(self)
            finally:
                self.done.set()
                self._signal_started(
                    ActorStartError(f"actor at {self.subject!r} stopped before on_start returned")
                )

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


def _default_stop(actor_class: type[AgentActor]) -> bool:
    """Whether ``actor_class`` keeps the no-op ``on_stop`` (and the stock ``_mesh_stop``)."""
    from synaptic_mesh.actors.actor import AgentActor

    return (
        actor_class.on_stop is AgentActor.on_stop
        and actor_class._mesh_stop is AgentActor._mesh_stop
    )
