"""``Node``: one per process, the home of actors and the door to a transport.

The node keeps a registry of its local actors: a tell or ask to one of them
goes straight into its mailbox, with no transport and no codec. Anything else
becomes an envelope published on the transport: tells and asks on the actor's
subject (each actor subscribes its subject as a queue group of its own name,
so other nodes reach it), replies on the asker's per-node inbox
``_INBOX.<node id>.<corr>``, publishes on their topic.

The node composes the lower layers (envelope, codec, subjects, transports)
with the actor cells; it is the one runtime module that imports ``actors``.
Its tasks live in one AnyIO task group owned by a runner task, so ``close``
may be called from any task and leaves nothing running behind it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup

from synaptic_mesh.actors.actor import DEFAULT_ASK_TIMEOUT, AgentActor
from synaptic_mesh.actors.cell import ActorCell, Supervision, TaskKeeper
from synaptic_mesh.actors.mailbox import Mailbox
from synaptic_mesh.actors.ref import ActorRef
from synaptic_mesh.actors.signals import Call
from synaptic_mesh.runtime import codec
from synaptic_mesh.runtime.codec_fast import encode_new
from synaptic_mesh.runtime.dead_letters import DEAD_LETTER_SUBJECT, DeadLetter, describe
from synaptic_mesh.runtime.deadlines import Deadlines
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.envelope import ASK, ERROR, PUBLISH, REPLY, TELL, VOTE, Envelope
from synaptic_mesh.runtime.errors import (
    MeshError,
    SupervisorFailed,
    TransportClosed,
)
from synaptic_mesh.runtime.node_inbound import NodeInbound
from synaptic_mesh.runtime.node_supervision import NodeSupervision
from synaptic_mesh.runtime.subjects import ONE_TIME_PREFIX, validate_pattern, validate_subject
from synaptic_mesh.runtime.transport_lookup import open_transport
from synaptic_mesh.supervisors.monitors import Monitors
from synaptic_mesh.supervisors.runtime import SupervisorRuntime
from synaptic_mesh.supervisors.spec import Supervisor
from synaptic_mesh.transports.base import Frame, Subscription, Transport

log = logging.getLogger("synaptic_mesh.node")


_SENDING: Final = ("running", "closing")
"""Node states that send: while closing, stopping actors may still send (from on_stop, say)."""

_ANSWERS = frozenset({REPLY, ERROR, VOTE})
"""Kinds sent to a one-time subject (an inbox slot); their ``seq`` is always 1."""

INBOX_PREFIX = ONE_TIME_PREFIX.rstrip(".")
SHUTDOWN_TIMEOUT = 5.0


@dataclass
class NodeStats:
    """Counters of what a node lost or refused; none of it is silent."""

    dead_letters: int = 0
    late_replies: int = 0
    failures: int = 0
    decode_errors: int = 0


class Node(NodeSupervision, NodeInbound):
    """A process's place in the mesh: spawn actors, talk to any subject.

    ``async with Node(transport="inproc://") as node:`` starts it and closes
    it; ``close`` stops the actors in reverse spawn order (each gets
    ``shutdown_timeout`` seconds to finish its message and ``on_stop``), fails
    pending asks with ``TransportClosed``, drains the outbox, then closes the
    transport.
    """

    def __init__(
        self,
        transport: str | Transport = "inproc://",
        *,
        name: str | None = None,
        supervise: Supervisor | None = None,
        codec_limits: codec.CodecLimits = codec.DEFAULT_LIMITS,
        outbox_capacity: int = 10_000,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        self.transport = (
            transport
            if isinstance(transport, Transport)
            else open_transport(transport, **(transport_options or {}))
        )
        self.id = f"{name or 'node'}-{os.getpid()}-{os.urandom(3).hex()}"
        self.name = name or self.id
        self.supervise = supervise
        self.codec_limits = codec_limits
        self.shutdown_timeout = shutdown_timeout
        self.stats = NodeStats()
        self.recent_dead_letters: deque[tuple[DeadLetter, Any]] = deque(maxlen=100)
        self._by_reference = self.transport.capabilities.by_reference
        self._local: dict[str, ActorCell] = {}
        self._refs: dict[str, ActorRef] = {}
        self._pending: dict[str, tuple[asyncio.Future[Any], str, Any]] = {}
        self._collectors: dict[str, Callable[[Envelope | None], None]] = {}
        self.lowerings: dict[str, Any] = {}  # pattern name -> lowering (patterns.lowering)
        self._ids = itertools.count(1)
        self._seq: dict[tuple[str | None, str], int] = {}
        self._inbox = f"{INBOX_PREFIX}.{self.id}."
        self._tg: TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop_runner: anyio.Event | None = None
        self._spawning = 0
        self._state = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoffs: set[asyncio.Task[None]] = set()  # see _spawn_task
        self._outbox = _make_outbox(self, outbox_capacity)
        self._monitors = Monitors()
        self._deadlines = Deadlines()
        self._supervisors: dict[str, SupervisorRuntime] = {}
        self._roots: list[SupervisorRuntime] = []
        self.failure: SupervisorFailed | None = None
        self._failure_close: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.transport.url} {self._state}>"

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the runner task and the transport, then the supervision tree if any."""
        if self._state != "new":
            if self._state == "running":
                return
            raise TransportClosed(f"node {self.name} was closed; create a new one")
        self._loop = asyncio.get_running_loop()
        ready = anyio.Event()
        self._stop_runner = anyio.Event()
        self._runner = asyncio.get_running_loop().create_task(self._run(ready))
        await ready.wait()
        if hasattr(self.transport, "on_peer_down"):  # link transports: hooks and identity
            self.transport.id = self.id  # type: ignore[attr-defined]
            self.transport.on_peer_down.append(self._peer_down)  # type: ignore[attr-defined]
            gone = getattr(self.transport, "on_interest_gone", None)
            if gone is not None:
                gone.append(self._interest_gone)
            self.transport.on_bad_frame.append(self._bad_frame)  # type: ignore[attr-defined]
        try:
            await self.transport.start()
            await self.transport.subscribe(self._inbox + ">", self._on_inbox)
        except BaseException:
            self._stop_runner.set()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._state = "closed"
            raise
        self._state = "running"
        if self.supervise is not None:
            try:
                await self.start_supervisor(self.supervise)
            except BaseException:
                await self.close()
                raise

    async def _run(self, ready: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            ready.set()
            assert self._stop_runner is not None
            await self._stop_runner.wait()
            tg.cancel_scope.cancel()
        self._tg = None

    async def close(self) -> None:
        """Stop every actor (reverse spawn order), then the transport; idempotent."""
        if self._state in ("closing", "closed"):
            while self._state != "closed":
                await asyncio.sleep(0.001)
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        try:
            for root in reversed(self._roots):
                await root.shutdown("node closing")
            for cell in reversed(list(self._local.values())):
                await cell.terminate("node closing", self.shutdown_timeout)
            for future, _subject, _msg in self._pending.values():
                if not future.done():
                    future.set_exception(TransportClosed(f"node {self.name} closed"))
            self._pending.clear()
            await self._outbox.drain(self.shutdown_timeout)
            for subject, _frames, _reply in self._outbox.close():
                self.stats.dead_letters += 1
                log.warning("node closing: message to %s was never sent", subject)
            await self.transport.close()
        finally:
            self._deadlines.close()
            if self._stop_runner is not None:
                self._stop_runner.set()
            if self._runner is not None:
                await asyncio.gather(self._runner, return_exceptions=True)
            self._state = "closed"

    @property
    def running(self) -> bool:
        return self._state == "running"

    def _check_running(self) -> None:
        if self._state != "running":
            raise TransportClosed(f"node {self.name} is {self._state}, not running")

    def _check_sending(self) -> None:
        if self._state not in _SENDING or self._outbox.closed:
            raise TransportClosed(f"node {self.name} is {self._state}")

    # -- actors ----------------------------------------------------------------

    async def spawn(
        self,
        actor_class: type[AgentActor],
        subject: str,
        *args: Any,
        capacity: int | None = None,
        overflow: Any = None,
        concurrency: int | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start ``actor_class(*args, **kwargs)`` at ``subject`` and return its ref.

        The actor is not supervised: a handler exception is reported and
        dead-lettered and the actor goes on. Returns once ``on_start`` has
        finished. Raises ``ActorStartError`` if ``on_start`` raised,
        ``ValueError`` if the subject is invalid or already served here.
        """
        await self.start_cell(
            actor_class,
            subject,
            args,
            kwargs,
            capacity=capacity,
            overflow=overflow,
            concurrency=concurrency,
        )
        return self.ref(subject)

    async def start_cell(
        self,
        actor_class: type[AgentActor],
        subject: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        capacity: int | None = None,
        overflow: Any = None,
        concurrency: int | None = None,
        supervisor: Supervision | None = None,
    ) -> ActorCell:
        """Create, subscribe and start the cell of one actor (``spawn`` and supervisors)."""
        self._check_running()
        validate_subject(subject)
        if not (isinstance(actor_class, type) and issubclass(actor_class, AgentActor)):
            raise TypeError(f"{actor_class!r} is not an AgentActor subclass")
        if subject in self._local:
            raise ValueError(f"an actor already serves {subject!r} on node {self.name}")
        cell = ActorCell(
            self,
            actor_class,
            subject,
            tuple(args),
            kwargs,
            capacity=capacity,
            overflow=overflow,
            concurrency=concurrency,
            supervisor=supervisor,
        )
        self._local[subject] = cell
        self._spawning += 1
        try:
            await self._subscribe_cell(cell)
            await self._start_cell_task(cell)
        except BaseException:
            await self._release_cell(cell)
            raise
        finally:
            self._spawning -= 1
        error = cell.start_error()
        if error is not None:
            await cell.done.wait()
            raise error
        return cell

    async def _start_cell_task(self, cell: ActorCell) -> None:
        """Run ``cell`` in the node's task group; return once its ``on_start`` returned.

        What ``TaskGroup.start(cell.run)`` did, for less: the cell runs as a
        bare task owned by the group's ``TaskKeeper`` and resolves a plain
        future after ``on_start`` (see ``ActorCell.start_task``). If this task
        is cancelled meanwhile, the starting cell is cancelled and waited for,
        as ``TaskGroup.start`` does; if the cell ends before ``on_start``
        returned, its ``ActorStartError`` is raised here.
        """
        if self._tg is None:
            raise TransportClosed(f"node {self.name} is not running")
        started = cell.start_task(await TaskKeeper.of(self._tg))
        try:
            await started
        except BaseException:
            started.cancel()
            cell.abort_start()  # a cell task that has not run yet then returns at once
            with anyio.CancelScope(shield=True):
                await cell.done.wait()
            raise

    async def _subscribe_cell(self, cell: ActorCell) -> None:
        cell.subscriptions.append(
            await self.transport.subscribe(
                cell.subject, partial(self._on_actor_frames, cell), queue=cell.subject
            )
        )
        for spec in cell.actor_class._mesh_subscriptions:
            handler = cell.actor_class._mesh_wrap_handler(getattr(cell.actor_class, spec.method))
            cell.subscriptions.append(
                await self.transport.subscribe(
                    spec.pattern, partial(self._on_subscribed_frames, cell, handler), spec.queue
                )
            )

    async def _release_cell(self, cell: ActorCell) -> None:
        if self._local.get(cell.subject) is cell:
            del self._local[cell.subject]
        subscriptions, cell.subscriptions = cell.subscriptions, []
        for sub in subscriptions:
            try:
                await sub.unsubscribe()
            except MeshError as exc:
                log.debug("unsubscribe of %s failed: %s", sub.pattern, exc)

    async def cell_stopped(self, cell: ActorCell) -> None:
        """Called by a cell after its actor stopped: forget it and its monitors."""
        self._monitors.drop_watcher(cell.subject)
        await self._release_cell(cell)

    def ref(self, subject: str) -> ActorRef:
        """An ``ActorRef`` for ``subject``, local or not (validated, cached)."""
        ref = self._refs.get(subject)
        if ref is None:
            validate_subject(subject)
            ref = self._refs[subject] = ActorRef(self, subject, self.local_mailbox(subject))
        return ref

    def local_mailbox(self, subject: str) -> Mailbox | None:
        """The mailbox of the live local actor at ``subject``, if there is one."""
        cell = self._local.get(subject)
        if cell is None or cell.mailbox.closed:
            return None
        return cell.mailbox

    def actors(self) -> list[str]:
        """Subjects of the actors running on this node, in spawn order."""
        return list(self._local)

    async def stop(self, subject: str, *, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop the local actor at ``subject`` for good, after its current message.

        It gets ``timeout`` seconds to finish and run ``on_stop``, then is
        cancelled. A supervised actor is removed from its supervisor (OTP's
        ``terminate_child``), so it is not restarted. Raises ``LookupError``
        if no local actor serves ``subject``.
        """
        cell = self._local.get(subject)
        if cell is None:
            raise LookupError(f"no local actor at {subject!r} on node {self.name}")
        if isinstance(cell.supervisor, SupervisorRuntime):
            await cell.supervisor.terminate_child(subject)
        else:
            await cell.terminate("stopped", timeout)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Return once every local actor is started and idle and nothing is in flight.

        Raises ``TimeoutError`` if that does not happen within ``timeout``, and
        ``SupervisorFailed`` if a root supervisor gave up (the node then closes).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.0005
        while True:
            if self.failure is not None:
                raise self.failure
            if self._idle_now() and await self._still_idle() and await self._still_idle():
                return
            if deadline is not None and loop.time() >= deadline:
                busy = [c.subject for c in self._local.values() if not c.idle]
                raise TimeoutError(f"node {self.name} not idle after {timeout} s; busy: {busy}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)

    async def _still_idle(self) -> bool:
        """Idle again once the transport settled: what we sent ourselves through a broker
        may have been in flight. ``wait_idle`` asks twice, so a message that the first
        round's deliveries sent through the broker is seen by the second."""
        await self.transport.settled()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return self._idle_now()

    def _idle_now(self) -> bool:
        return (
            self._spawning == 0
            and self._outbox.idle
            and not any(s.busy for s in self._supervisors.values())
            and all(cell.idle or cell.done.is_set() for cell in self._local.values())
        )

    # -- sending ---------------------------------------------------------------

    def _stamp(self, kind: str, subject: str, sender: str | None) -> tuple[str, int]:
        """A new message's id (unique) and ``seq`` (per sender and subject)."""
        if kind in _ANSWERS:
            seq = 1  # a one-time subject (an inbox slot): a counter would never be reused
        else:
            key = (sender, subject)
            seq = self._seq[key] = self._seq.get(key, 0) + 1
        return f"{self.id}.{next(self._ids)}", seq

    def make_envelope(
        self,
        kind: str,
        subject: str,
        body: Any,
        sender: str | None,
        *,
        reply_to: str | None = None,
        corr: str | None = None,
        deadline: float | None = None,
        headers: dict[str, Any] | None = None,
    ) -> Envelope:
        """A new envelope from this node (unique id, ``seq`` per sender and subject)."""
        id_, seq = self._stamp(kind, subject, sender)
        return Envelope(
            id_,
            kind,
            subject,
            body,
            sender=sender,
            reply_to=reply_to,
            corr=corr,
            seq=seq,
            deadline=deadline,
            headers=headers,
        )

    def new_frames(
        self,
        kind: str,
        subject: str,
        body: Any,
        sender: str | None,
        reply_to: str | None = None,
        corr: str | None = None,
        deadline: float | None = None,
    ) -> Sequence[Frame]:
        """``encode(make_envelope(...))`` for the node's own sends; the usual message is
        encoded straight from its parts (:func:`codec_fast.encode_new`), with no envelope made.

        Raises ``TypeError``/``ValueError`` when the body cannot be encoded.
        """
        if self._by_reference:
            return (
                self.make_envelope(
                    kind, subject, body, sender, reply_to=reply_to, corr=corr, deadline=deadline
                ),
            )
        id_, seq = self._stamp(kind, subject, sender)
        limits = self.codec_limits
        frame0 = encode_new(id_, kind, subject, body, sender, reply_to, corr, seq, deadline, limits)
        if frame0 is not None:
            return [frame0]
        env = Envelope(
            id_,
            kind,
            subject,
            body,
            sender=sender,
            reply_to=reply_to,
            corr=corr,
            seq=seq,
            deadline=deadline,
        )
        return codec.encode(env, limits)

    def encode(self, env: Envelope) -> Sequence[Frame]:
        """The frames of ``env`` for this node's transport (the object itself in process).

        Raises ``TypeError``/``ValueError`` when the body cannot be encoded.
        """
        if self._by_reference:
            return (env,)
        return codec.encode(env, self.codec_limits)

    async def tell(self, subject: str, message: Any, *, sender: str | None = None) -> None:
        """Send without a reply; waits while a local mailbox or the outbox is full."""
        cell = self._local.get(subject)
        if cell is not None and not cell.mailbox.closed:
            await cell.mailbox.put(message)
            return
        self._check_sending()
        frames = self.new_frames(TELL, subject, message, sender)
        if not self._outbox.try_send(subject, frames, None):
            await self._outbox.send(subject, frames, None)

    def tell_nowait(self, subject: str, message: Any, *, sender: str | None = None) -> None:
        """Send without waiting; raises ``MailboxFull`` when the mailbox or outbox is full."""
        cell = self._local.get(subject)
        if cell is not None and not cell.mailbox.closed:
            cell.mailbox.put_nowait(message)
            return
        self._check_sending()
        self._outbox.send_nowait(subject, self.new_frames(TELL, subject, message, sender), None)

    async def publish(self, topic: str, message: Any, *, sender: str | None = None) -> None:
        """Publish ``message`` to every subscriber of ``topic`` (through the transport)."""
        self._check_sending()
        frames = self.new_frames(PUBLISH, topic, message, sender)
        if not self._outbox.try_send(topic, frames, None):
            await self._outbox.send(topic, frames, None)

    async def ask(
        self,
        subject: str,
        message: Any,
        *,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
        sender: str | None = None,
    ) -> Any:
        """Send ``message`` to ``subject`` and return the reply.

        Raises ``AskTimeout`` after ``timeout`` seconds (at most 10 ms later,
        see :mod:`~synaptic_mesh.runtime.deadlines`), ``NoResponders`` at once
        when the transport knows nobody serves the subject (the message is also
        recorded as a dead letter), ``RemoteError`` when the handler raised,
        ``TransportClosed`` when the node closes first.
        """
        # the loop found at start: get_running_loop costs a getpid() call per ask
        future: asyncio.Future[Any] = (self._loop or asyncio.get_running_loop()).create_future()
        slot = None if timeout is None else self._deadlines.add(future, subject, timeout)
        try:
            cell = self._local.get(subject)
            if cell is not None and not cell.mailbox.closed:
                await cell.mailbox.put(Call(message, future=future, sender=sender))
                return await future
            outbox = self._outbox
            if self._state not in _SENDING or outbox.closed:
                self._check_sending()  # raises, saying why
            corr = str(next(self._ids))
            reply_to = self._inbox + corr
            deadline = None if timeout is None else time.time() + timeout
            pending = self._pending
            pending[corr] = (future, subject, message)
            try:
                frames = self.new_frames(ASK, subject, message, sender, reply_to, corr, deadline)
                if not outbox.try_send(subject, frames, reply_to):
                    await outbox.send(subject, frames, reply_to)
                return await future
            finally:
                pending.pop(corr, None)
        finally:
            if slot is not None:
                slot.pop(future, None)  # the ask is over: its deadline goes

    async def send_reply(self, call: Call, result: Any, error: BaseException | None) -> None:
        """Reply to an ask that came from another node (called by the cell).

        A reply that cannot be sent (the node is closing, the link is gone)
        is logged: the asker's timeout tells it.
        """
        subject = call.reply_to
        assert subject is not None
        frames: Sequence[Frame] | None = None
        if error is None:
            try:
                frames = self.new_frames(REPLY, subject, result, call.subject, corr=call.corr)
            except (TypeError, ValueError) as exc:
                error = exc
        if frames is None:
            body = {"type": type(error).__name__, "message": str(error)}
            frames = self.new_frames(ERROR, subject, body, call.subject, corr=call.corr)
        outbox = self._outbox
        try:
            if not outbox.try_send(subject, frames, None):
                await outbox.send(subject, frames, None)
        except MeshError as exc:
            log.warning("could not send reply to %s: %s", subject, exc)

    # -- subscribing -----------------------------------------------------------

    async def subscribe(
        self,
        pattern: str,
        callback: Callable[[Any, str], Awaitable[None]],
        *,
        queue: str | None = None,
    ) -> Subscription:
        """Call ``await callback(message, subject)`` for each publish matching ``pattern``.

        For code outside actors (tests, taps, bridges); actors use ``@subscribe``.
        """
        self._check_running()
        validate_pattern(pattern)

        async def deliver(subject: str, frames: Sequence[Frame], reply_to: str | None) -> None:
            env = self._open(subject, frames)
            if env is not None:
                try:
                    await callback(env.body, subject)
                except Exception:
                    log.exception("subscriber callback for %s raised", pattern)

        return await self.transport.subscribe(pattern, deliver, queue)

    # -- pattern support ---------------------------------------------------------
    #
    # The few node services the modules of ``synaptic_mesh.patterns`` build on.

    def collect_replies(self, collector: Callable[[Envelope | None], None]) -> tuple[str, str]:
        """Open a slot on this node's inbox that takes many replies; returns ``(corr, reply_to)``.

        ``collector(env)`` is called for every envelope published on
        ``reply_to`` until :meth:`stop_collecting`, and ``collector(None)``
        for the transport's "no responders" status. A reply arriving after
        ``stop_collecting`` is dropped and counted in ``stats.late_replies``,
        as a late ask reply is. ``corr`` comes from the same counter as ask
        correlation ids, so a slot never shares one with an ask.
        """
        corr = str(next(self._ids))
        self._collectors[corr] = collector
        return corr, self._inbox + corr

    def stop_collecting(self, corr: str) -> None:
        """Close a slot opened by :meth:`collect_replies` (idempotent)."""
        self._collectors.pop(corr, None)

    open_envelope = NodeInbound._open
    """The envelope in delivered ``frames``, or ``None`` after dead-lettering a bad frame."""

    def send_frames(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None = None
    ) -> Awaitable[None]:
        """Publish ``frames`` through the outbox, in order with this node's other sends.

        A plain function returning what to await (the patterns' hot paths pay
        no coroutine of their own; none at all when the transport took the
        frames at once). Raises ``TransportClosed`` once the node no longer sends.
        """
        self._check_sending()
        outbox = self._outbox
        if outbox.try_send(subject, frames, reply_to):
            return DONE
        return outbox.send(subject, frames, reply_to)

    def forget_sequence(self, sender: str | None, subject: str) -> None:
        """Drop the ``seq`` counter of a subject that will not be used again (a closed line)."""
        self._seq.pop((sender, subject), None)

    def local_cell(self, subject: str) -> ActorCell | None:
        """The cell of the live local actor at ``subject``, if there is one."""
        cell = self._local.get(subject)
        if cell is None or cell.mailbox.closed:
            return None
        return cell

    async def deliver(self, cell: ActorCell, item: Any, env: Envelope) -> None:
        """Queue ``item`` (a message or a ``Call``) in ``cell``'s mailbox, as a delivery would.

        A full (``fail``) or closed mailbox dead-letters ``env``'s body instead.
        """
        await self._enqueue(cell, item, env)

    def subscription_delivery(
        self, cell: ActorCell, handler: Callable[..., Any]
    ) -> Callable[[str, Sequence[Frame], str | None], Awaitable[None]]:
        """A transport handler that queues each delivery for ``handler(actor, message)``.

        The same path ``@subscribe`` deliveries take: through ``cell``'s
        mailbox, one at a time, with ``current_subject`` set.
        """
        return partial(self._on_subscribed_frames, cell, handler)

    # -- losses ----------------------------------------------------------------

    def dead_letter(
        self,
        reason: str,
        subject: str,
        message: Any = None,
        sender: str | None = None,
        *,
        detail: str = "",
    ) -> None:
        """Record a lost message: count it, keep it, publish it on ``_mesh.dead``."""
        self.stats.dead_letters += 1
        type_name, preview = describe(message)
        letter = DeadLetter(reason, subject, type_name, sender, detail or preview)
        self.recent_dead_letters.append((letter, message))
        log.debug("dead letter to %s: %s", subject, reason)
        if self._state != "running" or subject == DEAD_LETTER_SUBJECT:
            return
        try:
            frames = self.new_frames(PUBLISH, DEAD_LETTER_SUBJECT, letter, None)
            self._outbox.send_nowait(DEAD_LETTER_SUBJECT, frames, None)
        except MeshError:
            pass  # counted above; a flood of dead letters must not flood the outbox

    def note_late_reply(self) -> None:
        self.stats.late_replies += 1

    def actor_failed(self, cell: ActorCell, error: BaseException, message: Any) -> None:
        """A handler raised: count, log, dead-letter the message; the actor resumes.

        Supervision replaces this with restart decisions.
        """
        self.stats.failures += 1
        log.error(
            "actor %s failed on %s: %s",
            cell.subject,
            type(message).__qualname__,
            error,
            exc_info=error,
        )
        self.dead_letter(f"handler raised {type(error).__name__}: {error}", cell.subject, message)

    def _spawn_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn()`` in the node's task group.

        Called from a callback (a delivery a link transport started eagerly,
        see ``runtime/eager.py``) there is no current task, which AnyIO needs:
        a small asyncio task hands ``fn`` to the task group instead.
        """
        if self._tg is None:
            raise TransportClosed(f"node {self.name} is not running")
        if asyncio.current_task() is None:
            handoff = asyncio.get_running_loop().create_task(self._spawn_from_task(fn))
            self._handoffs.add(handoff)
            handoff.add_done_callback(self._handoffs.discard)
            return
        self._tg.start_soon(fn)

    async def _spawn_from_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            if self._tg is None:
                raise RuntimeError("the task group is gone")
            self._tg.start_soon(fn)
        except RuntimeError as exc:
            log.warning("node %s closed before %r could start: %s", self.name, fn, exc)

    def _outbox_failed(
        self, item: tuple[str, Sequence[Frame], str | None], exc: BaseException
    ) -> None:
        subject, _frames, reply_to = item
        self.dead_letter(f"could not publish: {exc}", subject)
        if reply_to is not None and reply_to.startswith(self._inbox):
            pending = self._pending.pop(reply_to[len(self._inbox) :], None)
            if pending is not None and not pending[0].done():
                pending[0].set_exception(exc)


def _make_outbox(node: Node, capacity: int) -> Any:
    from synaptic_mesh.runtime.outbox import Outbox

    transport = node.transport
    return Outbox(
        transport.publish,
        node._spawn_task,
        capacity,
        node._outbox_failed,
        transport.publish_now if transport.sends_now else None,  # else never asked
    )
