"""The native bus lowering of ``nng+tcp``/``nng+ipc``: one NNG ``Bus0`` socket per node.

Implements ``patterns.bus.BusLowering`` structurally. Bus0 is NNG's full
mesh: a message sent on a socket goes once to every pipe of that socket, and
is not forwarded further. So each node of a full-mesh deployment has one
Bus0 socket that listens on its ``bus`` endpoint and dials the ``bus``
endpoint of every peer whose id sorts after its own (one pipe per pair of
nodes; two would deliver everything twice). Each node sends
``[HELLO, node id]`` when a pipe comes up, which tells the other end which
node that pipe reaches.

Membership is the generic lowering's: a member subscribes
``_bus.<bus>.>`` on the router (skipping its own subject), which is both the
interest a sender resolves and where a received message is delivered. A
send:

1. resolves ``_bus.<bus>.<member>`` in the router's interest table (the nodes
   with a member of the bus); nobody: nothing to do;
2. waits (at most ``READY_WAIT`` s) until the Bus0 socket reaches every
   remote one of them; if one stays unreachable the message is published on
   the generic subject instead (``transport.stats.fallbacks``);
3. sends ``[BUS, subject, node id, seq]`` plus the envelope on Bus0, then
   delivers it to this node's own members. Each receiving node delivers it to
   its members of the bus (never to the sender itself), as a forwarded
   publish would be.

Order: per sender, every member sees the messages in the order sent (Bus0
keeps order per pipe; one pipe per pair of nodes). A send that falls back to
the generic subjects travels on the router link instead and may overtake, or
be overtaken by, that sender's native messages around it: order holds only
while the native pipe stays up. Nor is a bus message ordered with the
sender's other traffic on the router (a ``tell`` after ``send``).

Losses: Bus0 drops a message for a pipe whose queue is full, silently. The
queues are deliberately deep (:data:`BUS_BUFFER` messages each way), and
every message carries a sequence number per sending node, so each loss that
a later message reveals is counted in ``transport.stats.gaps`` and logged at
WARNING. Not detectable: losses at the very end of a sender's stream.
Delivery is at-most-once, as the bus promises.

Bad input: anyone may dial the bus endpoint. A message that is not a bus
message is logged at ERROR and dead-lettered (``on_bad_frame``); a
well-framed message with a garbage envelope is dead-lettered by the node's
decoder.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final

import pynng

from synaptic_mesh.runtime.envelope import PUBLISH
from synaptic_mesh.transports.base import Handler, Subscription, eager_as
from synaptic_mesh.transports.nng_native import (
    NativePlumbing,
    NativeSocket,
    SequenceGaps,
    pack,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.bus")

BUS_PREFIX: Final = "_bus"
"""The bus subjects of :mod:`synaptic_mesh.patterns.bus` (transports import no pattern)."""
HELLO: Final = "H"
BUS: Final = "B"
BUS_BUFFER: Final = 1024
"""Messages NNG queues per pipe and on receive (``send_buffer_size``/``recv_buffer_size``)."""


class NngBus:
    """The native bus lowering of one NNG transport (see module docstring)."""

    def __init__(self, transport: _NngTransport) -> None:
        self.transport = transport
        self.socket: NativeSocket | None = None
        self._seq = itertools.count(1)
        self._gaps = SequenceGaps(transport, "bus message(s)", "Bus0")

    async def start(self, plumbing: NativePlumbing) -> None:
        """Open the Bus0 socket and read it."""
        me = self.transport.id
        sock = pynng.Bus0(
            send_buffer_size=BUS_BUFFER,
            recv_buffer_size=BUS_BUFFER,
            recv_max_size=plumbing.recv_max,
        )
        self.socket = NativeSocket(
            plumbing,
            sock,
            listen_as="bus",
            dials="bus",
            dial_if=lambda peer: me < peer,
            on_pipe_up=self._pipe_up,
        )
        plumbing.add(self.socket, "bus")
        plumbing.spawn(self.socket.serve("bus message", _bus_header, self._take))

    def _pipe_up(self, _pipe_id: int) -> None:
        socket = self.socket
        if socket is not None and not socket.closed:
            hello = pack([HELLO, self.transport.id], [b""], self.transport.native.limits)
            try:
                socket.sock.send(hello, block=False)
            except pynng.NNGException as exc:
                log.warning("%s: bus hello not sent: %s", self.transport.id, exc)

    # -- BusLowering ---------------------------------------------------------------------

    async def join(self, node: Node, bus: str, member: str, handler: Handler) -> Subscription:
        own = f"{BUS_PREFIX}.{bus}.{member}"

        async def others_only(subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
            if subject != own:
                await handler(subject, frames, reply_to)

        return await node.transport.subscribe(
            f"{BUS_PREFIX}.{bus}.>", eager_as(handler, others_only)
        )

    def send(self, node: Node, bus: str, member: str, message: Any) -> Awaitable[None]:
        return self._send(node, f"{BUS_PREFIX}.{bus}.{member}", member, message)

    async def _send(self, node: Node, subject: str, member: str, message: Any) -> None:
        t = self.transport
        socket = t.native.usable(self.socket, "bus")
        targets = await t.native_targets(subject)
        if not targets:
            return  # no member anywhere: at-most-once, like a publish nobody wants
        remote = [peer for peer in targets if peer != t.id]
        if await socket.falls_back(remote, f"bus message on {subject}"):
            await node.publish(subject, message, sender=member)
            return
        frames = node.encode(node.make_envelope(PUBLISH, subject, message, member))
        if remote:
            data = pack([BUS, subject, t.id, next(self._seq)], frames, t.native.limits)
            socket.send_now(data, f"bus message on {subject}")
        if t.id in targets:
            await t.deliver_here(subject, list(frames), None, [])

    # -- receiving -----------------------------------------------------------------------

    async def _take(self, message: pynng.Message, header: list[Any], frames: list[bytes]) -> None:
        """A hello names its pipe; a bus message goes to this node's members."""
        t = self.transport
        if header[0] == HELLO:
            if message.pipe is not None and self.socket is not None:
                self.socket.reached(message.pipe.id, header[1])
            return
        _, subject, sender, seq = header
        t.stats.received += 1
        self._gaps.saw(sender, seq)
        await t.native.deliver("bus message", subject, frames, None, [])


def _bus_header(header: Any) -> list[Any]:
    """``header`` if it is a hello ``[HELLO, node id]`` or a bus message ``[BUS, subject,
    sender, seq]``; ``ValueError`` for anything else."""
    if not isinstance(header, list) or not header:
        raise ValueError(f"not a bus message (header {header!r:.60})")
    if header[0] == HELLO and len(header) == 2 and isinstance(header[1], str):
        return header
    kind, subject, sender, seq = header
    if not (
        kind == BUS
        and isinstance(subject, str)
        and subject.startswith(BUS_PREFIX + ".")
        and isinstance(sender, str)
        and type(seq) is int
    ):
        raise ValueError(f"not a bus message (header {header!r:.60})")
    return header
