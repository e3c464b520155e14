"""The drain loop: take one message at a time and hand it to its handler.

This is the hot path of every actor. A plain tell with a known handler costs
one ``popleft``, one dict lookup by class and one ``await``; everything else
(asks, subscription deliveries, unknown types, system messages) leaves the
fast path for :meth:`Dispatcher._slow`.
"""

from __future__ import annotations

import asyncio
import contextvars
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from synaptic_mesh.actors.handlers import lookup_handler
from synaptic_mesh.actors.signals import Call, Exit, Signal
from synaptic_mesh.runtime.eager import Resumed
from synaptic_mesh.runtime.errors import RemoteError, TransportClosed

if TYPE_CHECKING:
    from synaptic_mesh.actors.actor import AgentActor
    from synaptic_mesh.actors.cell import Host
    from synaptic_mesh.actors.mailbox import Mailbox


class Dispatcher:
    """Mixin of ``ActorCell``: draining, dispatching, replying, dead-lettering."""

    __slots__ = ()  # ActorCell declares the slots; a mixin with none keeps it dict-free

    host: Host
    subject: str
    mailbox: Mailbox
    table: dict[type, Callable[..., Any]]
    actor: AgentActor | None
    actor_class: type[AgentActor]
    current: Call | None
    concurrency: int
    _ending: Exit | None
    _drainer: asyncio.Task[Any] | None
    _resumed: Resumed | None
    _context: contextvars.Context | None

    def _system(self, item: Any) -> bool:
        raise NotImplementedError

    def _crashed(self, error: BaseException, message: Any) -> bool:
        raise NotImplementedError

    async def drain(self) -> None:
        """Take messages one at a time until this incarnation ends.

        With one drain task (``concurrency`` 1), a message that arrives while
        it sleeps may be begun outside it (:meth:`run_now`); what such a
        message still has to wait for is finished here, before anything else.
        """
        mailbox = self.mailbox
        user = mailbox.user
        table = self.table
        actor = self.actor
        if self.concurrency == 1:
            self._drainer = asyncio.current_task()
        try:
            while self._ending is None:
                system = mailbox.system  # re-read: the lane is made on first use
                if system:
                    item = system.popleft()
                    if item.__class__ is Signal:
                        await self._slow(actor, item.message)
                    elif not self._system(item):
                        mailbox.wake()  # let sibling workers (concurrency > 1) see the end
                        return
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
                            # a Call taken by its class (pipeline item, survey question)
                            failed_on = item.message if isinstance(item, Call) else item
                            if self._crashed(exc, failed_on):
                                mailbox.wake()
                                return
                    else:
                        await self._slow(actor, item)
                    continue
                if mailbox.closed:
                    return
                item = None  # do not keep the last message (and its buffers) alive while idle
                try:
                    await mailbox.wait()
                except BaseException as exc:  # cancelled: the message run_now began learns it
                    resumed = self._resumed
                    if resumed is None:
                        raise
                    self._resumed = None
                    await resumed.throwing(exc)
                    continue
                resumed = self._resumed  # run_now sets it only while the task waits here
                if resumed is not None:  # the rest of a message run_now began
                    self._resumed = None
                    await resumed
        finally:
            self._drainer = None

    def run_now(self, item: Any) -> bool:
        """Handle ``item`` here and now, as the drain task would, if the actor is idle;
        ``False`` (nothing done) tells the caller to queue it.

        A message from another node arrives in a protocol callback. Queued, it
        would wake the drain task, which costs a trip around the event loop
        before the handler starts (and, for an ask, before the reply leaves).
        So while the one drain task (``concurrency`` 1) sleeps on an empty
        mailbox, and no task is running (a callback of the event loop), the
        handler runs right here, as the drain task: that task is the current
        task meanwhile, and its context vars apply, so ``asyncio.timeout``,
        AnyIO cancel scopes and ``current_task`` behave as in the task. If the
        handler has to wait, the drain task takes the rest over (``_resumed``)
        before any other message, so the actor still handles one message at a
        time, in order.
        """
        task = self._drainer
        mailbox = self.mailbox
        if (
            task is None
            or self._resumed is not None
            or mailbox._waiter is None
            or mailbox.user
            or mailbox.system
        ):
            return False
        # (``current_task`` without its loop asks for the running one, a getpid() call)
        loop = task.get_loop()
        if asyncio.current_task(loop) is not None:  # delivered from a task (a reader's): queue
            return False
        handler = self.table.get(item.__class__)
        coro = self._slow(self.actor, item) if handler is None else self._by_class(handler, item)
        _enter_task(loop, task)
        try:
            yielded = self._context.run(coro.send, None)  # type: ignore[union-attr]
        except StopIteration:
            if self._ending is not None:  # a crash ended the incarnation: the task ends it
                mailbox.wake()
            return True
        except BaseException as exc:  # not an Exception (those are handled): the task raises it
            coro, yielded = _raise(exc), None
        finally:
            _leave_task(loop, task)
        self._resumed = Resumed(coro, yielded)
        mailbox.wake()
        return True

    async def _by_class(self, handler: Callable[..., Any], item: Any) -> None:
        """A message taken by its class, as the drain loop handles it."""
        try:
            await handler(self.actor, item)
        except Exception as exc:
            # a Call taken by its class (pipeline item, survey question)
            self._crashed(exc, item.message if isinstance(item, Call) else item)

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
                self._crashed(exc, item)
            return
        call: Call = item
        handler = (
            call.handler
            or self.table.get(call.message.__class__)
            or lookup_handler(self.table, call.message.__class__)
        )
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
            self._crashed(exc, call.message)
        except BaseException:
            # Cancelled mid-handler (shutdown timeout): a local asker learns at once.
            if call.future is not None and not call.future.done():
                call.future.set_exception(
                    TransportClosed(f"actor {self.subject!r} stopped before replying")
                )
            raise
        else:
            if call.future is not None:
                self._answer(call.future, result, None)
            elif call.reply_to is not None:
                await self.host.send_reply(call, result, None)  # no frame of our own between
        finally:
            self.current = None

    async def _reply(self, call: Call, result: Any, error: BaseException | None) -> None:
        if call.future is not None:
            self._answer(call.future, result, error)
        else:
            await self.host.send_reply(call, result, error)

    def _answer(self, future: Any, result: Any, error: BaseException | None) -> None:
        """Settle a local asker's future (unless it gave up: a late reply, counted)."""
        if future.done():
            self.host.note_late_reply()  # the asker gave up (timeout)
        elif error is None:
            future.set_result(result)
        else:
            remote = RemoteError(self.subject, type(error).__name__, str(error))
            remote.__cause__ = error
            future.set_exception(remote)

    def _dropped(self, item: Any, reason: str) -> None:
        self._dead(item, f"{reason} at {self.subject!r}")

    def _dead(self, item: Any, reason: str, sender: str | None = None) -> None:
        if isinstance(item, Call):
            if item.future is not None and not item.future.done():
                item.future.set_exception(RemoteError(self.subject, "DeadLetter", reason))
            self.host.dead_letter(reason, self.subject, item.message, item.sender)
            return
        self.host.dead_letter(reason, self.subject, item, sender)


async def _raise(error: BaseException) -> None:
    """Raise ``error`` in the drain task (what ``run_now`` cannot raise in a callback)."""
    raise error
