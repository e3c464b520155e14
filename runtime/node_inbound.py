"""The receiving side of a ``Node``: frames from the transport into mailboxes.

A mixin of :class:`~synaptic_mesh.runtime.node.Node`: decoding (and
dead-lettering what fails to decode), turning envelopes into mailbox items
for actors and subscriptions, and resolving asks from the node's inbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from synaptic_mesh.actors.signals import Call
from synaptic_mesh.runtime import codec
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.envelope import ASK, ERROR, PUBLISH, REPLY, TELL, Envelope
from synaptic_mesh.runtime.errors import (
    DecodeError,
    MailboxFull,
    NoResponders,
    RemoteError,
    TransportClosed,
)
from synaptic_mesh.transports.base import Frame, eager_handler

if TYPE_CHECKING:
    from synaptic_mesh.actors.cell import ActorCell
    from synaptic_mesh.runtime.node import NodeStats

log = logging.getLogger("synaptic_mesh.node")


class NodeInbound:
    """What a node does with the frames its transport delivers."""

    codec_limits: codec.CodecLimits
    stats: NodeStats
    _by_reference: bool
    _inbox: str
    _pending: dict[str, tuple[asyncio.Future[Any], str, Any]]

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

    async def send_reply(self, call: Call, result: Any, error: BaseException | None) -> None:
        raise NotImplementedError

    # -- receiving -------------------------------------------------------------

    def _open(self, subject: str, frames: Sequence[Frame]) -> Envelope | None:
        """The envelope in ``frames``, or ``None`` after dead-lettering a bad frame."""
        try:
            if type(frames[0]) is Envelope:
                return frames[0]
        except IndexError:
            self.dead_letter("empty message (no frames)", subject)
            return None
        except TypeError:
            pass  # not a sequence of frames: the codec says so below
        try:
            return codec.decode(frames, self.codec_limits)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            log.warning("undecodable frame on %s: %s", subject, exc.reason)
            first = frames[0] if isinstance(frames, list | tuple) and frames else None
            preview = (
                bytes(first[:48]).hex() if isinstance(first, bytes | bytearray | memoryview) else ""
            )
            self.dead_letter(f"decode error: {exc.reason}", subject, detail=preview)
            return None

    @eager_handler
    def _on_actor_frames(
        self, cell: ActorCell, subject: str, frames: Sequence[Frame], reply_to: str | None
    ) -> Awaitable[None]:
        """Queue a message for the actor at ``cell``: ``DONE`` when it went in at once."""
        env = self._open(subject, frames)
        if env is None:
            return DONE
        reply_to = env.reply_to or reply_to
        if env.kind == ASK or (reply_to is not None and env.kind in (TELL, PUBLISH)):
            item: Any = Call(
                env.body, reply_to=reply_to, corr=env.corr, sender=env.sender, subject=subject
            )
            # Somebody waits for the answer: if the actor sleeps, its handler runs here,
            # and the reply leaves without a trip around the loop. A one-way message
            # is queued: the task takes a burst of them in one go, for less per message.
            # (In process, the sender's task delivers: never a time to run now.)
            if not self._by_reference and cell.run_now(item):
                return DONE
        elif env.kind in (TELL, PUBLISH):
            item = env.body
        else:
            self.dead_letter(f"unexpected {env.kind!r} message", subject, env.body, env.sender)
            return DONE
        try:
            cell.mailbox.put_nowait(item)  # the common case: room in the mailbox
        except (MailboxFull, TransportClosed):  # waits under "block", else dead-lettered
            return self._enqueue(cell, item, env)
        return DONE

    @eager_handler
    def _on_subscribed_frames(
        self,
        cell: ActorCell,
        handler: Callable[..., Any],
        subject: str,
        frames: Sequence[Frame],
        reply_to: str | None,
    ) -> Awaitable[None]:
        """Queue a subscription's delivery for ``handler``: ``DONE`` when it went in at once."""
        env = self._open(subject, frames)
        if env is None:
            return DONE
        call = Call(
            env.body,
            handler=handler,
            subject=subject,
            sender=env.sender,
            reply_to=env.reply_to or reply_to,
            corr=env.corr,
        )
        if call.reply_to is not None and not self._by_reference and cell.run_now(call):
            return DONE
        try:
            cell.mailbox.put_nowait(call)  # the common case: room in the mailbox
        except (MailboxFull, TransportClosed):  # waits under "block", else dead-lettered
            return self._enqueue(cell, call, env)
        return DONE

    async def _enqueue(self, cell: ActorCell, item: Any, env: Envelope) -> None:
        try:
            await cell.mailbox.put(item)
        except (MailboxFull, TransportClosed) as exc:
            self.dead_letter(str(exc), cell.subject, env.body, env.sender)
            if isinstance(item, Call) and item.reply_to is not None:
                await self.send_reply(item, None, exc)

    @eager_handler
    def _on_inbox(
        self, subject: str, frames: Sequence[Frame], reply_to: str | None
    ) -> Awaitable[None]:
        """A reply (or a vote, or "no responders") for an ask or collector of this node."""
        corr = subject[len(self._inbox) :]
        collector = self._collectors.get(corr)
        if collector is not None:  # many replies for one corr (a survey); see collect_replies
            if not frames:
                collector(None)
                return DONE
            env = self._open(subject, frames)
            if env is not None:
                collector(env)
            return DONE
        pending = self._pending.pop(corr, None)
        if not frames:  # the transport's "no responders" status
            if pending is not None:
                future, asked, message = pending
                self.dead_letter("no responders", asked, message)
                if not future.done():
                    future.set_exception(NoResponders(asked))
            return DONE
        env = self._open(subject, frames)
        if env is None:
            return DONE
        if pending is None or pending[0].done():
            self.stats.late_replies += 1
            log.debug("late reply on %s dropped", subject)
            return DONE
        future, asked, _message = pending
        if env.kind == REPLY:
            future.set_result(env.body)
        elif env.kind == ERROR:
            body = env.body if isinstance(env.body, dict) else {}
            future.set_exception(
                RemoteError(asked, str(body.get("type", "Error")), str(body.get("message", "")))
            )
        else:
            future.set_exception(RemoteError(asked, "ProtocolError", f"got {env.kind!r} as reply"))
        return DONE
