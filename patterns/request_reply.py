"""Request-reply: ``await self.ask(subject, msg, timeout=)``.

Semantics (the same on every transport):

- The message goes to the one actor serving ``subject``; its handler's return
  value is the reply. On the same node the ask never touches the transport
  or the codec: the message goes into the actor's mailbox with a future.
- Across nodes the ask is an envelope of kind ``ask`` published on
  ``subject`` (each actor subscribes its subject as a queue group of its own
  name, so exactly one actor gets it), with ``reply_to`` set to the asking
  node's inbox ``_INBOX.<node id>.<corr>``. One subscription per node,
  ``_INBOX.<node id>.>``, receives every reply; ``corr`` (a per-node counter,
  never reused) finds the waiting ask in the node's pending table.
- Errors: ``AskTimeout`` after ``timeout`` seconds (at most 10 ms late);
  ``NoResponders`` at once when the transport knows that nobody serves the
  subject (``capabilities.knows_interest``), else ``AskTimeout``;
  ``RemoteError`` when the handler raised (``remote_type`` and
  ``remote_message`` name the exception); ``TransportClosed`` when the node
  closes first.
- Late replies: when an ask ends (reply, timeout, error), its pending entry
  is removed at once. A reply that arrives later finds no entry for its
  ``corr``; it is dropped and counted in ``node.stats.late_replies``. Because
  ``corr`` values are never reused, a late reply can never be taken for the
  reply of another ask, even one to the same subject with an equal message
  (``tests/patterns/test_request_reply.py`` checks it locally and across
  every transport). A local handler that finishes after its asker gave up
  is counted the same way.

Lowering: the generic lowering is the node's inbox (``Node.ask``). A
transport that lists ``"request-reply"`` in ``capabilities.native`` supplies
a :class:`RequestReplyLowering` (NATS requests, ZeroMQ REQ/REP); it must keep
the promises above, including the local fast path (by calling ``node.ask``
for subjects served on ``node``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from synaptic_mesh.actors.ref import DEFAULT_ASK_TIMEOUT
from synaptic_mesh.patterns.lowering import REQUEST_REPLY, lowering_for

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node


class RequestReplyLowering(Protocol):
    """What a native request-reply lowering supplies."""

    async def ask(
        self,
        node: Node,
        subject: str,
        message: Any,
        *,
        timeout: float | None,
        sender: str | None,
    ) -> Any:
        """Send ``message`` to ``subject`` for ``node`` and return the reply (raises as above)."""
        ...


class GenericRequestReply:
    """Request-reply on the node's reply inbox (see module docstring)."""

    def ask(
        self,
        node: Node,
        subject: str,
        message: Any,
        *,
        timeout: float | None,
        sender: str | None,
    ) -> Coroutine[Any, Any, Any]:
        # The node's own coroutine, not a wrapper around it: the hook costs no extra await.
        return node.ask(subject, message, timeout=timeout, sender=sender)


def ask(
    node: Node,
    subject: str,
    message: Any,
    *,
    timeout: float | None = DEFAULT_ASK_TIMEOUT,
    sender: str | None = None,
) -> Coroutine[Any, Any, Any]:
    """Send ``message`` to ``subject``; ``await`` it for the reply (see the module docstring).

    Raises ``AskTimeout``, ``NoResponders``, ``RemoteError`` or
    ``TransportClosed`` as stated there.
    """
    lowering = node.lowerings.get(REQUEST_REPLY) or lowering_for(
        node, REQUEST_REPLY, GenericRequestReply
    )
    if lowering.__class__ is GenericRequestReply:  # the node's own ask, without the hop
        return node.ask(subject, message, timeout=timeout, sender=sender)
    return lowering.ask(node, subject, message, timeout=timeout, sender=sender)  # type: ignore[no-any-return]
