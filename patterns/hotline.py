"""PAIR hotline: an exclusive, ordered, two-way line between two actors.

Caller side::

    async with self.hotline("core.gemini") as line:
        await line.send(Draft("..."))
        async for reply in line:
            ...

Answering side: the peer's class defines ``async def on_hotline(self, line)``;
defining it is what makes an actor take hotlines.

Semantics:

- Exclusive: an actor answers at most one line at a time. A caller asking
  for a peer that is on a line gets ``HotlineBusy`` at once (the check runs
  on the peer's node outside its mailbox, so a busy peer is not in the way).
  A caller may hold several lines to different peers. The caller the peer is
  on a line with is answered once that line has closed, or with
  ``HotlineBusy`` after ``REOPEN_GRACE`` seconds: opening again right after
  hanging up, its hang-up may still be on its way (on a native PAIR line it
  travels on the line's own socket, apart from the request).
- ``on_hotline(line)`` runs as one of the peer's messages (in its mailbox,
  after what is queued before it); the line lasts until it returns, and the
  peer handles nothing else meanwhile unless it has ``concurrency > 1``.
  Messages the caller sends before it starts are buffered on the line.
- Ordered: each side receives the other's messages in the order sent, each
  once. Envelopes on a line carry consecutive ``seq`` numbers; a gap (a
  message lost on an at-most-once transport) closes the line instead of
  skipping a message. ``send`` waits while the peer's buffer holds
  ``capacity`` unread messages (back-pressure).
- Closing: leaving the ``async with`` normally, ``on_hotline`` returning, or
  ``line.close()`` hangs up *normally*: the other side's ``async for`` ends
  and its ``line.closed_reason`` says who hung up. Everything else closes
  the line *abnormally* and the other side's iteration (and ``receive``,
  ``send``) raises ``HotlineClosed(reason)``: the other side raised (the
  reason names the exception), its actor stopped, crashed, was restarted or
  killed, or its node closed (the line ends with the incarnation that holds
  it, and its node sends the reason; a node that closes ends its lines at
  the next heartbeat tick instead of waiting for its actors' shutdown
  timeout), or nothing was heard from it for
  ``misses * heartbeat`` seconds (its node died without a word: detected by a
  heartbeat, a ping each side sends when it has sent nothing for
  ``heartbeat`` seconds). Messages that arrived before the close are still
  received first.
- Opening raises ``HotlineBusy``, ``HotlineRefused`` (nobody at ``peer`` takes
  hotlines), ``AskTimeout`` (no answer within ``timeout``), ``ValueError``
  (calling oneself), ``TransportClosed``.
- A ``HotlineClosed`` escaping ``on_hotline`` for its own line (the caller
  went away) is not counted as the peer's failure; any other exception is.

Monitors are not used for local peers: a ``Down`` lands in the mailbox of an
actor that is busy on the line. Instead each end's node closes the line when
the end's incarnation ends, whichever side is local; the heartbeat covers a
node that vanished. Link transports' ``on_peer_down`` hooks are not used
(they name nodes, not actors); the heartbeat detects the same loss.

Lowering: the generic lowering asks ``_hotline.<peer>`` (request-reply) to
open. The caller subscribes to ``_line.<id>`` for its line; an answering
actor subscribes once, when it starts, to ``_lines.<peer>.*`` and its node
routes each line's frames by id, so accepting a line subscribes nothing
(a subscribe inside the delivery of the request would wait on the very link
it is delivering from). A full mailbox refuses the line with
``HotlineBusy`` rather than stall that delivery. A transport listing
``"pair"`` in ``capabilities.native`` supplies a :class:`PairLowering`
(ZeroMQ PAIR).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final
from weakref import WeakKeyDictionary

from synaptic_mesh.actors.signals import Call
from synaptic_mesh.patterns import attach
from synaptic_mesh.patterns.line import (
    DEFAULT_HEARTBEAT,
    DEFAULT_MISSES,
    HOTLINE_PREFIX,
    GenericPair,
    Hotline,
    PairLowering,
    pair_lowering,
)
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.errors import (
    HotlineBusy,
    HotlineClosed,
    HotlineRefused,
    MailboxFull,
    MeshError,
    NoResponders,
    RemoteError,
    TransportClosed,
)
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.subjects import validate_subject
from synaptic_mesh.transports.base import eager_handler

if TYPE_CHECKING:
    from synaptic_mesh.actors.actor import AgentActor
    from synaptic_mesh.runtime.node import Node

__all__ = ["GenericPair", "Hotline", "PairLowering", "accept_hotlines", "open_hotline"]

log = logging.getLogger("synaptic_mesh.patterns.hotline")

DEFAULT_OPEN_TIMEOUT = 5.0
REOPEN_GRACE: Final = 1.0
"""Seconds a peer waits for a caller's line to close when the same caller opens another:
its hang-up may travel apart from the request, on the line's own socket (native PAIR)."""


@message(name="_mesh.HotlineOpen")
class HotlineOpen:
    """A caller's request for a line (asked of ``_hotline.<peer>``)."""

    line: str
    caller: str
    heartbeat: float = 0.0
    misses: int = DEFAULT_MISSES


@message(name="_mesh.HotlineAccepted")
class HotlineAccepted:
    line: str


_answering: WeakKeyDictionary[Node, dict[str, Hotline]] = WeakKeyDictionary()
"""Per node: the line each local actor is answering (the busy check)."""


# -- the caller -------------------------------------------------------------------------


@asynccontextmanager
async def open_hotline(
    actor: AgentActor,
    peer: str,
    *,
    timeout: float = DEFAULT_OPEN_TIMEOUT,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
    misses: int = DEFAULT_MISSES,
) -> AsyncIterator[Hotline]:
    """Open a line from ``actor`` to ``peer`` for the ``async with`` block; see module docstring."""
    validate_subject(peer)
    if peer == actor.subject:
        raise ValueError(f"{peer} cannot open a hotline to itself")
    node = actor.node
    line = Hotline(
        node, actor.subject, peer, os.urandom(8).hex(), "caller", heartbeat=heartbeat, misses=misses
    )
    await line._attach()
    request = HotlineOpen(line.id, actor.subject, line._heartbeat or 0.0, line._misses)
    try:
        await node.ask(f"{HOTLINE_PREFIX}.{peer}", request, timeout=timeout, sender=actor.subject)
    except RemoteError as exc:
        await line._end(str(exc), normal=False, tell_peer=False)
        if exc.remote_type == "HotlineBusy":
            raise HotlineBusy(exc.remote_message) from None
        if exc.remote_type == "HotlineRefused":
            raise HotlineRefused(peer) from None
        raise
    except NoResponders:
        await line._end(f"{peer} takes no hotlines", normal=False, tell_peer=False)
        raise HotlineRefused(peer) from None
    except BaseException as exc:  # timeout, cancel: the peer may have accepted after all
        await line._end(
            f"{actor.subject} gave up opening: {_describe(exc)}", normal=False, tell_peer=True
        )
        raise
    attach.track(actor, line)
    line._on_close.append(lambda: attach.untrack(actor, line))
    line._start_heartbeat()
    try:
        yield line
    except BaseException as exc:
        await line._end(f"{actor.subject} left: {_describe(exc)}", normal=False, tell_peer=True)
        raise
    else:
        await line.close(f"{actor.subject} hung up")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the answering side ---------------------------------------------------------------


async def accept_hotlines(actor: AgentActor) -> None:
    """Let ``actor`` answer hotlines for its whole life (its class defines ``on_hotline``)."""
    node = actor.node
    cell = actor._mesh_cell
    me = actor.subject
    lines = _answering.setdefault(node, {})
    by_id: dict[str, Hotline] = {}  # the lines of this actor that are open, by line id

    @eager_handler
    def on_line(subject: str, frames: Sequence[Any], reply_to: str | None) -> Awaitable[None]:
        line = by_id.get(subject.rpartition(".")[2])
        if line is None:  # a straggler of a closed line: dropped
            return DONE
        return line._on_frames(subject, frames, reply_to)

    async def on_request(subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
        env = node.open_envelope(subject, frames)
        if env is None:
            return
        request = env.body
        answer_to = env.reply_to or reply_to
        if not isinstance(request, HotlineOpen) or answer_to is None:
            node.dead_letter("not a hotline request", subject, request, env.sender)
            return
        reply = Call(request, reply_to=answer_to, corr=env.corr, subject=me)
        busy = lines.get(me)
        if busy is not None and not busy.closed and busy.peer == request.caller:
            # The same caller opens again: it has let go of its line here, whose hang-up
            # may still be on its way (a native PAIR line has a socket of its own, which
            # the request does not travel on). Answer once that line has closed, from a
            # task: this delivery must not wait.
            try:
                node.spawn_system_task(lambda: take_after(busy, request, reply, subject))
                return
            except MeshError:  # the node is closing: no waiting, the answer is busy
                pass
        await take(request, reply, subject)

    async def take_after(busy: Hotline, request: HotlineOpen, reply: Call, subject: str) -> None:
        await busy.wait_closed(REOPEN_GRACE)
        await take(request, reply, subject)

    async def take(request: HotlineOpen, reply: Call, subject: str) -> None:
        """Accept the line ``request`` opens, or answer why not (busy, not running)."""
        busy = lines.get(me)
        if busy is not None and not busy.closed:
            error = HotlineBusy(f"{me} is on a hotline with {busy.peer}")
            await node.send_reply(reply, None, error)
            return
        line = Hotline(
            node, me, request.caller, request.line, "peer",
            heartbeat=request.heartbeat, misses=request.misses,
        )  # fmt: skip
        holder = cell.actor
        try:
            if holder is None:
                raise TransportClosed(f"{me} is not running")
            # Never wait here: this runs in the transport's delivery of the request.
            cell.mailbox.put_nowait(Call(line, handler=_answer, subject=subject, sender=line.peer))
        except (MailboxFull, TransportClosed) as exc:
            error = HotlineBusy(f"{me} cannot take the line: {exc}")
            await node.send_reply(reply, None, error)
            return
        lines[me] = by_id[line.id] = line
        line._on_close.append(lambda: lines.pop(me, None) if lines.get(me) is line else None)
        line._on_close.append(lambda: by_id.pop(line.id, None))
        attach.track(holder, line)
        line._on_close.append(lambda: attach.untrack(holder, line))
        await node.send_reply(reply, HotlineAccepted(line.id), None)
        line._start_heartbeat()

    lowering = pair_lowering(node)
    cell.subscriptions.append(await lowering.serve(node, me, on_line))
    cell.subscriptions.append(await lowering.listen(node, me, on_request))


async def _answer(actor: AgentActor, line: Hotline) -> None:
    """Run ``on_hotline`` as one of the peer's messages; close the line after it."""
    if line.closed:
        return  # the caller gave up before its turn came
    try:
        await actor.on_hotline(line)
    except HotlineClosed:
        if line.closed:
            log.info("%s: line from %s closed: %s", actor.subject, line.peer, line.closed_reason)
            return
        raise
    except BaseException as exc:
        await line._end(f"{actor.subject} {_fate(exc)}", normal=False, tell_peer=True)
        raise
    await line.close(f"{actor.subject} hung up")


def _fate(exc: BaseException) -> str:
    if isinstance(exc, Exception):
        return f"raised {_describe(exc)}"
    return "was killed" if isinstance(exc, asyncio.CancelledError) else f"ended ({_describe(exc)})"
