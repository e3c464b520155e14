"""The native request-reply lowering of ``nng+tcp``/``nng+ipc`` (opt-in): Req0 asks, Rep0 answers.

Implements ``patterns.request_reply.RequestReplyLowering`` structurally.
Opt-in only (``native=...,request-reply``): it gives up one promise of the
generic lowering, see *Order* below.

Each node of a full mesh listens with a cooked ``Rep0`` on its ``rep``
endpoint and, on its first ask to a peer, opens a ``Req0`` that dials only
that peer's ``rep`` endpoint (Req0 spreads requests over its pipes and could
not be aimed at a node otherwise). An ask:

1. resolves the subject in the router's interest table, as a publish would.
   Served on this node, by several nodes' plain subscriptions, or by nobody:
   it is the generic ask (``Node.ask``: the local fast path, first reply
   wins, "no responders" at once with its dead letter). Exactly one remote
   node (an actor is a queue group of its own name): native.
2. It waits (at most ``READY_WAIT`` s, within the timeout) until the Req0 to
   that node has a pipe; without one (or when the node advertises no ``rep``
   endpoint) the ask takes the generic path (``transport.stats.fallbacks``).
3. It sends ``[REQ, subject, reply_to, ttl, queues]`` plus the envelope on a
   Req0 context of its own (concurrent asks do not wait for each other; NNG's
   resend is off: at-most-once, like the rest). ``reply_to`` is
   ``_nng.rep.<serving node>.<asking node>.<n>``, also the envelope's.
4. The serving node takes each request on a fresh Rep0 context and delivers
   it to its own subscription of the subject (the queue groups the header
   names), as a forwarded ask would be. Its actor replies to ``reply_to``,
   which the serving node subscribes: the reply (or error) goes back on the
   request's Rep0 context as ``[REP]`` plus the envelope. A subject nobody
   serves there any more is answered ``[NORESP]`` at once.
5. The asker returns the reply's body; an error reply raises ``RemoteError``
   and ``[NORESP]`` raises ``NoResponders`` (and dead-letters the ask), as
   the generic ask does. No reply within the timeout: ``AskTimeout``. A reply
   that comes later, until :data:`LATE_GRACE` s after the timeout (the
   context's NNG receive time), is dropped and counted in
   ``node.stats.late_replies``; one later still is dropped by NNG, uncounted.
   The serving node forgets an unanswered request after its ``ttl``.

Order: **given up**, per-sender order between an ask and the sender's
earlier messages to the same actor. A ``tell`` (or publish) travels on the
router's link and a native ask on the Req0 socket, so an ask sent after a
tell may be handled first, which the generic lowering never allows
(DESIGN.md section 5, "messages from one sender to one actor arrive in the
order sent"). Replies still match their asks exactly (one context per ask).

Bad input: anyone may dial the ``rep`` endpoint with a Req0. A request that
does not parse is logged at ERROR and dead-lettered (``on_bad_frame``) and its
context closed (that Req0 gets no answer); a well-framed request whose
envelope is garbage is dead-lettered by the node's decoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import pynng
from pynng import lib

from synaptic_mesh.runtime.envelope import ASK, ERROR, REPLY
from synaptic_mesh.runtime.errors import (
    AskTimeout,
    NoResponders,
    RemoteError,
    TransportClosed,
)
from synaptic_mesh.transports.nng_native import (
    READY_WAIT,
    NativePlumbing,
    NativeSocket,
    is_queue_list,
    pack,
    remote_of,
    unpack,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.reqrep")

REQ: Final = "Q"
REP: Final = "R"
NORESP: Final = "N"
REPLY_PREFIX: Final = "_nng.rep"
LATE_GRACE: Final = 5.0
"""Seconds after an ask's timeout during which a late reply is still counted."""
MAX_OPEN_REQUESTS: Final = 4096
"""Requests a serving node keeps answerable at once; the oldest are forgotten beyond it."""
NO_TIMEOUT_TTL: Final = 3600.0
"""How long a serving node keeps a request without a deadline answerable."""


class NngReqRep:
    """The native request-reply lowering of one NNG transport (see module docstring)."""

    def __init__(self, transport: _NngTransport) -> None:
        self.transport = transport
        self.plumbing: NativePlumbing | None = None
        self.replier: NativeSocket | None = None
        self._open: OrderedDict[str, tuple[pynng.Context, float]] = OrderedDict()
        self._keys = itertools.count(1)

    async def start(self, plumbing: NativePlumbing) -> None:
        """Open the Rep0, subscribe this node's reply subjects, serve requests."""
        t = self.transport
        self.plumbing = plumbing
        replier = pynng.Rep0(recv_max_size=plumbing.recv_max)
        self.replier = NativeSocket(plumbing, replier, listen_as="rep")
        plumbing.add(self.replier, "rep")
        await t.subscribe(f"{REPLY_PREFIX}.{t.id}.>", self._on_reply)
        plumbing.spawn(self._serve(plumbing))

    def _requester(self, peer: str) -> NativeSocket | None:
        """The Req0 aimed at ``peer`` (opened on first use); ``None`` if it has no ``rep``."""
        plumbing = self.plumbing
        if plumbing is None:
            return None
        return plumbing.socket_to(peer, "rep", lambda: pynng.Req0(recv_max_size=plumbing.recv_max))

    # -- RequestReplyLowering ------------------------------------------------------------

    async def ask(
        self,
        node: Node,
        subject: str,
        message: Any,
        *,
        timeout: float | None,
        sender: str | None,
    ) -> Any:
        t = self.transport
        targets = await t.native_targets(subject) if not t.closing_native else None
        if not targets or len(targets) != 1 or t.id in targets:
            return await node.ask(subject, message, timeout=timeout, sender=sender)
        ((peer, queues),) = targets.items()
        loop = asyncio.get_running_loop()
        started = loop.time()
        requester = self._requester(peer)
        wait = READY_WAIT if timeout is None else min(READY_WAIT, timeout / 2)
        missing = await requester.wait_reaching([peer], wait) if requester else {peer}
        if missing:
            t.stats.fallbacks += 1
            log.info("%s: ask of %s goes generic: no Req0 pipe to %s", t.id, subject, peer)
            left = None if timeout is None else max(0.0, timeout - (loop.time() - started))
            return await node.ask(subject, message, timeout=left, sender=sender)
        assert requester is not None
        left = None if timeout is None else timeout - (loop.time() - started)
        request = (peer, subject, queues, message, sender)
        return await self._ask(node, requester, request, left, timeout)

    async def _ask(
        self,
        node: Node,
        requester: NativeSocket,
        request: tuple[str, str, list[str], Any, str | None],
        left: float | None,
        timeout: float | None,
    ) -> Any:
        """Ask ``(peer, subject, queues, message, sender)`` on a context of ``requester``."""
        t = self.transport
        peer, subject, queues, message, sender = request
        reply_to = f"{REPLY_PREFIX}.{peer}.{t.id}.{next(self._keys)}"
        deadline = None if left is None else time.time() + left
        env = node.make_envelope(
            ASK, subject, message, sender, reply_to=reply_to, deadline=deadline
        )
        ttl = NO_TIMEOUT_TTL if left is None else left + LATE_GRACE
        data = pack([REQ, subject, reply_to, ttl, queues], node.encode(env), t.native.limits)
        ctx = requester.sock.new_context()
        lib.nng_ctx_set_ms(ctx.context, b"req:resend-time", -1)  # never resend: at-most-once
        if left is not None:
            lib.nng_ctx_set_ms(ctx.context, b"recv-timeout", int(ttl * 1e3))
            # a pipe that dropped since the reach check makes Req0 wait for the next one
            lib.nng_ctx_set_ms(ctx.context, b"send-timeout", max(1, int(left * 1e3)))
        recv: asyncio.Future[pynng.Message] | None = None
        try:
            try:
                await ctx.asend(data)
            except pynng.Timeout:
                raise AskTimeout(subject, timeout if timeout is not None else 0.0) from None
            except pynng.NNGException as exc:
                raise TransportClosed(f"ask of {subject} not sent: {exc}") from None
            t.stats.sent += 1
            recv = asyncio.ensure_future(ctx.arecv_msg())
            done, _ = await asyncio.wait((recv,), timeout=None if left is None else max(left, 0))
            if not done:
                raise AskTimeout(subject, timeout if timeout is not None else 0.0)
            finished, recv = recv, None
            if finished.exception() is not None:
                raise TransportClosed(f"ask of {subject}: {finished.exception()}")
            return self._result(node, subject, message, finished.result())
        finally:
            t.native.spawn(self._settle(node, ctx, recv, counting=left is not None))

    def _result(self, node: Node, subject: str, message: Any, reply: pynng.Message) -> Any:
        data = reply.bytes
        try:
            header, frames = unpack(data, self.transport.native.limits)
            if header not in ([REP], [NORESP]):
                raise ValueError(f"not a reply (header {header!r:.40})")
        except ValueError as exc:
            self.transport.native.bad_input(remote_of(reply), f"reply: {exc}", data, subject)
            raise RemoteError(subject, "ProtocolError", f"malformed native reply: {exc}") from None
        self.transport.stats.received += 1
        if header == [NORESP]:
            node.dead_letter("no responders", subject, message)
            raise NoResponders(subject)
        env = node.open_envelope(subject, frames)
        if env is None:
            raise RemoteError(subject, "DecodeError", "the reply did not decode (dead-lettered)")
        if env.kind == REPLY:
            return env.body
        if env.kind == ERROR:
            body = env.body if isinstance(env.body, dict) else {}
            raise RemoteError(subject, str(body.get("type", "Error")), str(body.get("message", "")))
        raise RemoteError(subject, "ProtocolError", f"got {env.kind!r} as reply")

    async def _settle(
        self,
        node: Node,
        ctx: pynng.Context,
        recv: asyncio.Future[pynng.Message] | None,
        *,
        counting: bool,
    ) -> None:
        """Count a reply that comes after the ask ended, until the context's receive time."""
        try:
            if recv is not None and not counting:
                ctx.close()  # no deadline: nothing to wait for; this ends the receive
            if recv is not None:
                await asyncio.shield(recv)  # never cancel a pynng receive
                node.note_late_reply()
        except (pynng.NNGException, asyncio.CancelledError):
            pass  # the receive time is up (Timeout) or the socket closed
        finally:
            with contextlib.suppress(pynng.NNGException):
                ctx.close()
            if recv is not None:
                with contextlib.suppress(BaseException):
                    await recv

    # -- the serving node ----------------------------------------------------------------

    async def _serve(self, plumbing: NativePlumbing) -> None:
        """Take each request on a fresh Rep0 context and deliver it here.

        Not :meth:`NativeSocket.serve`: each request needs a context of its own,
        which its reply goes back on.
        """
        t = self.transport
        assert self.replier is not None
        sock = self.replier.sock
        while True:
            try:
                ctx = sock.new_context()
            except pynng.NNGException:
                return  # closed
            try:
                message = await ctx.arecv_msg()
            except pynng.NNGException:
                with contextlib.suppress(pynng.NNGException):
                    ctx.close()
                return  # closed
            checked = plumbing.checked(message, "native request", self._request_header)
            if checked is None:
                with contextlib.suppress(pynng.NNGException):
                    ctx.close()  # refused: that Req0 gets no answer
                continue
            (subject, reply_to, ttl, queues), frames = checked
            t.stats.received += 1
            if not t.serves_here(subject):
                await self._answer(ctx, NORESP, [b""])
                continue
            self._remember(reply_to, ctx, min(float(ttl), NO_TIMEOUT_TTL))
            await plumbing.deliver("native request", subject, frames, reply_to, queues)

    def _request_header(self, header: Any) -> tuple[str, str, float, list[str]]:
        """``(subject, reply_to, ttl, queues)`` of a request to this node, or ``ValueError``."""
        kind, subject, reply_to, ttl, queues = header
        if not (
            kind == REQ
            and isinstance(subject, str)
            and isinstance(reply_to, str)
            and reply_to.startswith(f"{REPLY_PREFIX}.{self.transport.id}.")
            and isinstance(ttl, int | float)
            and is_queue_list(queues)
        ):
            raise ValueError(f"not a native request (header {header!r:.60})")
        return subject, reply_to, ttl, queues

    def _remember(self, reply_to: str, ctx: pynng.Context, ttl: float) -> None:
        """Keep a request's context answerable for ``ttl`` s; forget (close) expired ones."""
        now = time.monotonic()
        open_ = self._open
        while open_ and (len(open_) >= MAX_OPEN_REQUESTS or next(iter(open_.values()))[1] < now):
            _, (old, _) = open_.popitem(last=False)
            with contextlib.suppress(pynng.NNGException):
                old.close()
        open_[reply_to] = (ctx, now + ttl)

    async def _on_reply(self, subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
        """A reply to a native request: back to its asker on the request's Rep0 context."""
        known = self._open.pop(subject, None)
        if known is None or known[1] < time.monotonic():
            log.debug("%s: reply on %s has no open request; dropped", self.transport.id, subject)
            if known is not None:
                with contextlib.suppress(pynng.NNGException):
                    known[0].close()
            return
        if not frames:  # the router's "no responders" status
            await self._answer(known[0], NORESP, [b""])
        else:
            await self._answer(known[0], REP, frames)

    async def _answer(self, ctx: pynng.Context, kind: str, frames: Sequence[Any]) -> None:
        try:
            await ctx.asend(pack([kind], frames, self.transport.native.limits))
            self.transport.stats.sent += 1
        except (pynng.NNGException, ValueError) as exc:
            log.debug("%s: native reply not sent: %s", self.transport.id, exc)
        finally:
            with contextlib.suppress(pynng.NNGException):
                ctx.close()

    async def close(self) -> None:
        """Close the contexts of requests still open (before their Rep0 closes)."""
        for ctx, _ in self._open.values():
            with contextlib.suppress(pynng.NNGException):
                ctx.close()
        self._open.clear()
