"""The native pipeline lowering of ``nng+tcp``/``nng+ipc``: a Push0 per destination, Pull0 per node.

Implements ``patterns.pipeline_run.PipelineLowering`` structurally. NNG's
Push0 round-robins over its pipes and knows neither keys nor queue groups,
so the router still chooses where an item goes, and NNG only carries it:

* each node listens with one ``Pull0`` on its ``pull`` endpoint;
* on its first item for a peer, a node opens a ``Push0`` that dials only that
  peer's ``pull`` endpoint (one pipe: Push0 has nothing to choose).

Workers attach with router subscriptions, as in the generic lowering: a
stage's workers are a queue group on ``_pipe.<name>.<stage>``, a keyed
stage's worker ``n`` subscribes ``_pipe.<name>.<stage>.<n>`` alone. A
dispatch:

1. resolves the item's subject in the router's interest table: for a keyed
   subject the one node of its worker, for a queue group one member node
   chosen round-robin (as the survey lowering chooses); nobody: the item is
   published on the generic path, whose router drops it as it would;
2. delivers it here at once when this node was chosen (to the local member);
3. for each remote node chosen, waits (at most ``READY_WAIT`` s) until that
   node's Push0 has a pipe, then sends ``[PIPE, subject, queues]`` plus the
   envelope on it; the receiving node delivers it to its member of each
   queue group the header names. Push0 does not drop: a full queue makes the
   send wait (at most :data:`SEND_WAIT` s), so back-pressure reaches the
   sender, as the pipeline's credit already bounds what is in flight.

A node without a ``pull`` endpoint, a pipe that does not come up, or a send
that waits too long makes that item take the generic path
(``transport.stats.fallbacks``). Order per key holds while items of the key go
one way (one Push0 pipe, FIFO; the keyed worker is on one node); an item that
falls back travels on the router's link and may overtake, or be overtaken by,
native items of the same key still in flight.

Bad input: anyone may dial the ``pull`` endpoint with a Push0. A message that
is not a pipeline item is logged at ERROR and dead-lettered
(``on_bad_frame``); a well-framed item whose envelope is garbage is
dead-lettered by the node's decoder.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import pynng

from synaptic_mesh.transports.base import Handler, Subscription
from synaptic_mesh.transports.nng_native import (
    READY_WAIT,
    NativePlumbing,
    NativeSocket,
    is_queue_list,
    pack,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.envelope import Envelope
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.pipeline")

PIPE: Final = "I"
PIPE_BUFFER: Final = 256
"""Items a Push0 queues (``send_buffer_size``) and a Pull0 holds before the sender waits."""
SEND_WAIT: Final = 5.0
"""Seconds a native send waits at a full queue before the item takes the generic path."""


class NngPipeline:
    """The native pipeline lowering of one NNG transport (see module docstring)."""

    def __init__(self, transport: _NngTransport) -> None:
        self.transport = transport
        self.plumbing: NativePlumbing | None = None
        self.puller: NativeSocket | None = None

    async def start(self, plumbing: NativePlumbing) -> None:
        """Open the Pull0 and read it."""
        self.plumbing = plumbing
        pull = pynng.Pull0(recv_buffer_size=PIPE_BUFFER, recv_max_size=plumbing.recv_max)
        self.puller = NativeSocket(plumbing, pull, listen_as="pull")
        plumbing.add(self.puller, "pull")
        # drain: items come in bursts, so a hop through NNG's thread only when the Pull0 is empty
        plumbing.spawn(self.puller.serve("pipeline item", _item_header, self._take, drain=True))

    def _pusher(self, peer: str) -> NativeSocket | None:
        """The Push0 aimed at ``peer`` (opened on first use); ``None`` if it has no ``pull``."""
        if self.plumbing is None:
            return None
        return self.plumbing.socket_to(
            peer,
            "pull",
            lambda: pynng.Push0(send_buffer_size=PIPE_BUFFER, send_timeout=int(SEND_WAIT * 1000)),
        )

    # -- PipelineLowering ----------------------------------------------------------------

    async def dispatch(self, node: Node, item: Envelope) -> None:
        t = self.transport
        subject = item.subject
        frames = node.encode(item)
        targets = await t.native_targets(subject) if not t.closing_native else None
        if not targets:
            await node.send_frames(subject, frames)  # nobody: the router drops it as it would
            return
        for peer, queues in targets.items():
            if peer == t.id:
                await t.deliver_here(subject, list(frames), None, queues)
            elif not await self._push(peer, subject, queues, frames):
                t.stats.fallbacks += 1
                await t.send_to_peer(peer, subject, frames, queues)

    async def _push(self, peer: str, subject: str, queues: list[str], frames: Any) -> bool:
        """Send one item on ``peer``'s Push0; ``False`` when it must take the generic path."""
        t = self.transport
        pusher = self._pusher(peer)
        if pusher is None or await pusher.wait_reaching([peer], READY_WAIT):
            log.info("%s: item on %s goes generic: no Push0 pipe to %s", t.id, subject, peer)
            return False
        data = pack([PIPE, subject, queues], frames, t.native.limits)
        try:
            try:
                pusher.sock.send(data, block=False)  # queued at once: no hop to NNG's thread
            except pynng.TryAgain:
                await pusher.sock.asend(data)  # the queue is full: wait (SEND_WAIT at most)
        except pynng.NNGException as exc:
            log.warning("%s: item on %s to %s goes generic: %s", t.id, subject, peer, exc)
            return False
        t.stats.sent += 1
        return True

    async def attach(
        self, node: Node, subject: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        return await node.transport.subscribe(subject, handler, queue)

    # -- receiving -----------------------------------------------------------------------

    async def _take(
        self, _message: pynng.Message, item: tuple[str, list[str]], frames: list[bytes]
    ) -> None:
        """An item goes to this node's member of each of its queue groups."""
        t = self.transport
        subject, queues = item
        t.stats.received += 1
        await t.native.deliver("pipeline item", subject, frames, None, queues)


def _item_header(header: Any) -> tuple[str, list[str]]:
    """``(subject, queues)`` of a pipeline item; ``ValueError`` for anything else."""
    kind, subject, queues = header
    if not (kind == PIPE and isinstance(subject, str) and is_queue_list(queues)):
        raise ValueError(f"not a pipeline item (header {header!r:.60})")
    return subject, queues
