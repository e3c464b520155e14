"""``ActorRef``: a location-transparent handle on an actor's subject.

A ref names a subject, not an instance: it stays valid across restarts and
reaches whichever actor serves the subject. When that actor lives on the same
node the ref caches its mailbox, so ``tell_nowait`` is one append and never
touches a transport or the codec.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

DEFAULT_ASK_TIMEOUT = 60.0
"""Seconds an ask waits by default: long, because LLM calls are slow."""

if TYPE_CHECKING:
    from synaptic_mesh.actors.mailbox import Mailbox
    from synaptic_mesh.runtime.node import Node


class ActorRef:
    """Send to the actor at ``address``: ``tell``, ``tell_nowait``, ``ask``."""

    __slots__ = ("_mailbox", "_node", "address")

    def __init__(self, node: Node, address: str, mailbox: Mailbox | None = None) -> None:
        self._node = node
        self.address = address
        self._mailbox = mailbox

    def __repr__(self) -> str:
        where = "local" if self._local_mailbox() is not None else "remote"
        return f"ActorRef({self.address!r}, {where})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)

    def _local_mailbox(self) -> Mailbox | None:
        mailbox = self._mailbox
        if mailbox is None or mailbox.closed:
            mailbox = self._mailbox = self._node.local_mailbox(self.address)
        return mailbox

    def tell_nowait(self, message: Any) -> None:
        """Queue ``message`` without waiting.

        Raises ``MailboxFull`` when the local mailbox is full (``block`` and
        ``fail`` policies) or the node's outbound buffer is, and
        ``TransportClosed`` once the node is closed.
        """
        mailbox = self._mailbox
        if mailbox is not None:
            # The mailbox's own put_nowait, inlined: this is the hottest path
            # of the runtime. A closed mailbox has _limit 0, so it goes below.
            user = mailbox.user
            if len(user) < mailbox._limit and not mailbox._putters:
                user.append(message)
                waiter = mailbox._waiter
                if waiter is not None:
                    mailbox._waiter = None
                    if not waiter.done():
                        waiter.set_result(None)
                return
        mailbox = self._local_mailbox()
        if mailbox is not None:
            mailbox.put_nowait(message)
        else:
            self._node.tell_nowait(self.address, message)

    async def tell(self, message: Any) -> None:
        """Send ``message``; waits while the receiver's mailbox is full (``block``)."""
        mailbox = self._mailbox
        if mailbox is None or mailbox.closed:
            mailbox = self._local_mailbox()
        if mailbox is not None:
            await mailbox.put(message)
        else:
            await self._node.tell(self.address, message)

    def ask(
        self, message: Any, *, timeout: float | None = DEFAULT_ASK_TIMEOUT
    ) -> Coroutine[Any, Any, Any]:
        """Send ``message`` and return (a coroutine of) the reply: ``await ref.ask(msg)``.

        Raises ``AskTimeout`` after ``timeout`` seconds (a late reply is
        dropped and counted), ``NoResponders`` at once when nobody serves the
        subject, ``RemoteError`` when the handler raised.
        """
        return self._node.ask(self.address, message, timeout=timeout)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the actor after its current message and wait until it has stopped."""
        await self._node.stop(self.address, timeout=timeout)
