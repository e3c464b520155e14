"""The runtime half of an actor: its mailbox, its task and its lifecycle.

The user's :class:`AgentActor` holds behaviour and state; the cell owns the
mailbox, drains it in one task (``concurrency`` tasks if the actor asks for
more), runs the lifecycle hooks, and reports failures. A cell outlives
restarts of its actor (supervision swaps ``cell.actor``), which is why
``ActorRef``s stay valid across a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskStatus

from synaptic_mesh.actors.handlers import lookup_handler
from synaptic_mesh.actors.mailbox import Mailbox, Overflow
from synaptic_mesh.runtime.errors import ActorStartError, RemoteError, TransportClosed

if TYPE_CHECKING:
    import asyncio

    from synaptic_mesh.actors.actor import AgentActor

log = logging.getLogger("synaptic_mesh.actors")

STOP_HOOK_TIMEOUT = 5.0
"""Seconds ``on_stop`` may take before it is cancelled."""


class Call:
    """A mailbox item that needs more than type dispatch.

    Local asks carry ``future``; asks from other nodes carry ``reply_to`` and
    ``corr``; subscription deliveries carry the ``handler`` their subscription
    chose and the concrete ``subject``. A plain tell is queued bare, without a Call.
    """

    __slots__ = ("corr", "future", "handler", "message", "reply_to", "sender", "subject")

    def __init__(
        self,
        message: Any,
        *,
        handler: Callable[..., Any] | None = None,
        future: asyncio.Future[Any] | None = None,
        reply_to: str | None = None,
        corr: str | None = None,
        subject: str | None = None,
        sender: str | None = None,
    ) -> None:
        self.message = message
        self.handler = handler
        self.future = future
        self.reply_to = reply_to
        self.corr = corr
        self.subject = subject
        self.sender = sender

    @property
    def wants_reply(self) -> bool:
        return self.future is not None or self.reply_to is not None


class Stop:
    """System message: finish the current message, then stop."""

    __slots__ = ("reason",)

    def __init__(self, reason: str = "stopped") -> None:
        self.reason = reason


class Host(Protocol):
    """What a cell needs from its node (implemented by ``Node``)."""

    def dead_letter(
        self, reason: str, subject: str, message: Any = None, sender: str | None = None
    ) -> None: ...

    def actor_failed(self, cell: ActorCell, error: BaseException, message: Any) -> None: ...

    async def send_reply(self, call: Call, result: Any, error: BaseException | None) -> None: ...

    async def cell_stopped(self, cell: ActorCell) -> None: ...

    def note_late_reply(self) -> None: ...


class ActorCell:
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
        self.actor: AgentActor | None = None
        self.started = False
        self.stop_reason: str | None = None
        self.failure: BaseException | None = None
        self.done = anyio.Event()
        self.scope: anyio.CancelScope | None = None
        self.current: Call | None = None
        self.subscriptions: list[Any] = []

    def __repr__(self) -> str:
        return f"<ActorCell {self.subject} {self.actor_class.__qualname__}>"

    # -- lifecycle ---------------------------------------------------------

    def new_actor(self) -> AgentActor:
        """A fresh instance, with its cell attached before ``__init__`` runs."""
        actor = self.actor_class.__new__(self.actor_class)
        actor._mesh_cell = self
        actor.__init__(*self.args, **self.kwargs)
        return actor

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the actor, drain its mailbox until stopped, then stop it.

        ``task_status.started()`` is called once ``on_start`` returned; if it
        raises, the error is kept in ``self.failure`` and the spawner raises
        :class:`ActorStartError`.
        """
        with anyio.CancelScope() as scope:
            self.scope = scope
            try:
                try:
                    self.actor = self.new_actor()
                    await self.actor._mesh_start()
                except Exception as exc:
                    self.failure = exc
                    self.stop_reason = f"on_start raised {type(exc).__name__}: {exc}"
                    task_status.started()
                    return
                self.started = True
                task_status.started()
                if self.concurrency == 1:
                    await self.drain()
                else:
                    async with anyio.create_task_group() as workers:
                        for _ in range(self.concurrency):
                            workers.start_soon(self.drain)
            finally:
                await self._finish()

    async def _finish(self) -> None:
        with anyio.CancelScope(shield=True):
            for item in self.mailbox.close():
                self._dead(item, f"actor {self.subject!r} stopped before handling it")
            if self.started and self.actor is not None:
                with anyio.move_on_after(STOP_HOOK_TIMEOUT):
                    try:
                        await self.actor._mesh_stop()
                    except Exception:
                        log.exception("on_stop of %s raised", self.subject)
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

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the actor to stop after its current message (system lane)."""
        if not self.mailbox.closed:
            self.mailbox.put_system(Stop(reason))

    # -- the drain loop ------------------------------------------------------

    async def drain(self) -> None:
        """Take messages one at a time until a Stop arrives or the mailbox closes."""
        mailbox = self.mailbox
        user = mailbox.user
        system = mailbox.system
        table = self.table
        actor = self.actor
        while True:
            if system:
                if not self._system(system.popleft()):
                    return
                actor = self.actor
                continue
            if user:
                item = user.popleft()
                if mailbox._putters:
                    mailbox.taken()
                handler = table.get(item.__class__)
                if handler is not None:
                    try:
                        await handler(actor, item)
                    except Exception as exc:
                        self.host.actor_failed(self, exc, item)
                else:
                    await self._slow(actor, item)
                continue
            if mailbox.closed:
                return
            await mailbox.wait()

    def _system(self, item: Any) -> bool:
        if isinstance(item, Stop):
            self.stop_reason = item.reason
            for left in self.mailbox.close():
                self._dead(left, f"actor {self.subject!r} stopped ({item.reason})")
            return False
        log.warning("actor %s ignored unknown system message %r", self.subject, item)
        return True

    async def _slow(self, actor: Any, item: Any) -> None:
        """Everything but a bare tell with a known handler: asks, subscriptions, unknowns."""
        if item.__class__ is not Call:
            handler = lookup_handler(self.table, item.__class__)
            if handler is None:
                self._dead(item, f"{self.actor_class.__qualname__} has no handler for it")
                return
            try:
                await handler(actor, item)
            except Exception as exc:
                self.host.actor_failed(self, exc, item)
            return
        call: Call = item
        handler = call.handler or lookup_handler(self.table, call.message.__class__)
        if handler is None:
            reason = (
                f"{self.actor_class.__qualname__} has no handler for "
                f"{type(call.message).__qualname__}"
            )
            self._dead(call.message, reason, call.sender)
            if call.wants_reply:
                await self._reply(call, None, LookupError(reason))
            return
        self.current = call
        try:
            result = await handler(actor, call.message)
        except Exception as exc:
            if call.wants_reply:
                await self._reply(call, None, exc)
            self.host.actor_failed(self, exc, call.message)
        except BaseException:
            # Cancelled mid-handler (shutdown timeout): a local asker learns at once.
            if call.future is not None and not call.future.done():
                call.future.set_exception(
                    TransportClosed(f"actor {self.subject!r} stopped before replying")
                )
            raise
        else:
            if call.wants_reply:
                await self._reply(call, result, None)
        finally:
            self.current = None

    async def _reply(self, call: Call, result: Any, error: BaseException | None) -> None:
        future = call.future
        if future is not None:
            if future.done():
                self.host.note_late_reply()  # the asker gave up (timeout)
                return
            if error is None:
                future.set_result(result)
            else:
                remote = RemoteError(self.subject, type(error).__name__, str(error))
                remote.__cause__ = error
                future.set_exception(remote)
            return
        await self.host.send_reply(call, result, error)

    # -- losses --------------------------------------------------------------

    def _dropped(self, item: Any, reason: str) -> None:
        self._dead(item, f"{reason} at {self.subject!r}")

    def _dead(self, item: Any, reason: str, sender: str | None = None) -> None:
        if isinstance(item, Call):
            if item.future is not None and not item.future.done():
                item.future.set_exception(RemoteError(self.subject, "DeadLetter", reason))
            self.host.dead_letter(reason, self.subject, item.message, item.sender)
            return
        self.host.dead_letter(reason, self.subject, item, sender)

    @property
    def idle(self) -> bool:
        """Started, nothing queued, and the drain loop asleep on the mailbox."""
        return self.started and self.mailbox.idle_waiting
