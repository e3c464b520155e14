"""The native survey lowering of ``nng+tcp``/``nng+ipc``: Surveyor0 asks, raw Respondent0 votes.

Implements ``patterns.survey.SurveyLowering`` structurally. Each node of a
full mesh has two sockets (:mod:`~synaptic_mesh.transports.nng_native`):

* a raw ``Respondent0`` listening on its own endpoint (``survey``);
* a ``Surveyor0`` dialing the ``survey`` endpoint of every peer *and its
  own*, so the node's own respondents are asked the same way.

A survey:

1. The surveyor resolves the group in the router's interest table: nobody
   there is "no responders" at once; otherwise the nodes to ask, with, for each
   queue group, the one member node chosen round-robin (as the router
   chooses), so a queue group still answers once across the mesh.
2. It waits (at most :data:`~synaptic_mesh.transports.nng_native.READY_WAIT`
   s, within the survey's timeout) until its Surveyor0 reaches each of those
   nodes; a node it cannot reach makes this survey take the generic path
   (counted in ``transport.stats.fallbacks``), so a survey never misses a
   respondent because a native pipe is late.
3. It sends ``[QUESTION, group, {node: [queues]}]`` plus the envelope on a
   context of its own (a pynng context per survey, so concurrent surveys do
   not cancel each other) whose NNG survey time is the timeout plus
   :data:`LATE_GRACE`.
4. Every asked node delivers the question to its own subscriptions of the
   group exactly as the router would deliver a local publish (plain
   subscribers, and the queue groups the header assigned to it), with
   ``reply_to`` set to ``_nng.vote.<node>.<key>``. A vote (or a plain
   subscriber's reply) sent there goes back on the raw Respondent0 with the
   question's NNG backtrace. A *raw* respondent may answer one survey any
   number of times (a cooked one only once), which is what a node hosting
   several voters of one group needs; each answer is its own NNG message,
   so a quorum is met as soon as the votes are in.
5. The surveyor feeds each answer to the pattern until it is complete or the
   deadline passes. Answers that arrive after that, until the NNG survey time
   runs out, are counted in ``node.stats.late_replies`` (later ones are
   dropped by NNG itself, uncounted).

Only in a full mesh: a tree's nodes do not all reach each other, so there the
transport does not declare ``survey`` native (the generic lowering runs).

Bad input: a foreign ``Surveyor0`` that dials the respondent endpoint and
sends anything but a question, or a vote that does not parse, is logged at
ERROR and dead-lettered (``on_bad_frame``); a well-framed message whose
envelope is garbage is dead-lettered by the node's decoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final

import pynng
from pynng import ffi, lib

from synaptic_mesh.runtime.envelope import SURVEY, Envelope
from synaptic_mesh.runtime.errors import TransportClosed
from synaptic_mesh.transports.base import Handler, Subscription
from synaptic_mesh.transports.nng_native import (
    READY_WAIT,
    NativePlumbing,
    NativeSocket,
    pack,
    queues_of,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.nng import _NngTransport

log = logging.getLogger("synaptic_mesh.nng.survey")

QUESTION: Final = "Q"
VOTE: Final = "V"
VOTE_PREFIX: Final = "_nng.vote"
LATE_GRACE: Final = 5.0
"""Seconds after a survey's deadline during which late answers are still counted."""
MAX_OPEN_QUESTIONS: Final = 4096
"""Questions a node keeps answerable at once; the oldest are forgotten beyond it."""


class NngSurvey:
    """The native survey lowering of one NNG transport (see module docstring)."""

    def __init__(self, transport: _NngTransport) -> None:
        self.transport = transport
        self.surveyor: NativeSocket | None = None
        self.respondent: NativeSocket | None = None
        self._questions: OrderedDict[int, tuple[bytes, float]] = OrderedDict()
        self._keys = itertools.count(1)

    # -- setup ---------------------------------------------------------------------------

    async def start(self, plumbing: NativePlumbing) -> None:
        """Open the two sockets, subscribe this node's vote subject, serve questions."""
        t = self.transport
        size = plumbing.recv_max
        respondent = pynng.Respondent0(opener=lib.nng_respondent0_open_raw, recv_max_size=size)
        self.respondent = NativeSocket(plumbing, respondent, listen_as="survey")
        plumbing.add(self.respondent, "sv")
        self.surveyor = NativeSocket(
            plumbing, pynng.Surveyor0(recv_max_size=size), dials="survey", dial_self=True
        )
        plumbing.add(self.surveyor)
        await t.subscribe(f"{VOTE_PREFIX}.{t.id}.*", self._on_vote)
        plumbing.spawn(self.respondent.serve("survey question", self._question_header, self._take))

    # -- the surveyor --------------------------------------------------------------------

    async def survey(
        self,
        node: Node,
        group: str,
        question: Any,
        *,
        sender: str | None,
        timeout: float,
        on_answer: Any,
    ) -> None:
        t = self.transport
        surveyor = t.native.usable(self.surveyor, "surveyor")
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + timeout
        targets = await t.native_targets(group)
        if not targets:
            on_answer(None)  # nobody subscribes to the group: "no responders"
            return
        if await surveyor.falls_back(targets, f"survey of {group}", min(READY_WAIT, timeout / 2)):
            await self._generic(node, group, question, sender, ends_at - loop.time(), on_answer)
            return
        env = node.make_envelope(SURVEY, group, question, sender, deadline=time.time() + timeout)
        ttl = timeout + LATE_GRACE
        body = pack([QUESTION, group, targets, ttl], node.encode(env), t.native.limits)
        ctx = surveyor.sock.new_context()
        lib.nng_ctx_set_ms(ctx.context, b"surveyor:survey-time", int(ttl * 1e3))
        try:
            await ctx.asend(body)
        except pynng.NNGException as exc:
            with contextlib.suppress(pynng.NNGException):
                ctx.close()
            raise TransportClosed(f"survey of {group} not sent: {exc}") from None
        t.stats.sent += 1
        recv: asyncio.Future[pynng.Message] | None = None
        try:
            while True:
                remaining = ends_at - loop.time()
                if remaining <= 0:
                    break
                if recv is None:
                    recv = asyncio.ensure_future(ctx.arecv_msg())
                done, _ = await asyncio.wait((recv,), timeout=remaining)
                if not done:
                    break
                finished, recv = recv, None
                if finished.exception() is not None:
                    return  # the survey time ran out or the socket closed: nothing more comes
                answer = self._answer_of(node, group, finished.result())
                if answer is not None and on_answer(answer):
                    break
        finally:
            t.native.spawn(self._count_late(node, ctx, recv))

    async def _count_late(
        self, node: Node, ctx: pynng.Context, recv: asyncio.Future[pynng.Message] | None
    ) -> None:
        """Count the answers that come after the survey ended, until NNG's survey time is up."""
        try:
            while True:
                if recv is None:
                    recv = asyncio.ensure_future(ctx.arecv_msg())
                message = await asyncio.shield(recv)  # never cancel a pynng receive
                recv = None
                if self._answer_of(node, "", message) is not None:
                    node.note_late_reply()
        except pynng.NNGException:
            pass  # the survey time is up (Timeout) or the socket closed
        finally:
            with contextlib.suppress(pynng.NNGException):
                ctx.close()  # completes a receive still pending (never cancel one: see close)
            if recv is not None:
                with contextlib.suppress(BaseException):
                    await recv

    def _answer_of(self, node: Node, group: str, message: pynng.Message) -> Envelope | None:
        checked = self.transport.native.checked(message, "survey answer", _vote_header)
        if checked is None:
            return None
        self.transport.stats.received += 1
        return node.open_envelope(group or "_nng.vote", checked[1])

    async def _generic(
        self,
        node: Node,
        group: str,
        question: Any,
        sender: str | None,
        timeout: float,
        on_answer: Any,
    ) -> None:
        """The generic lowering's survey (publish with ``reply_to``, collect on the inbox),
        for a question the native sockets cannot carry."""
        # The lowering itself, not a copy of it. Imported here: transports do not import
        # patterns at module level (the patterns build on the transport SPI).
        from synaptic_mesh.patterns.survey import GenericSurvey

        await GenericSurvey().survey(
            node, group, question, sender=sender, timeout=timeout, on_answer=on_answer
        )

    # -- respondents ---------------------------------------------------------------------

    async def attach_respondent(
        self, node: Node, group: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        # A router subscription as in the generic lowering: it is the interest the
        # surveyor resolves, and native questions are delivered to it (step 4).
        return await node.transport.subscribe(group, handler, queue)

    def answer(self, node: Node, vote: Envelope) -> Awaitable[None]:
        return node.send_frames(vote.subject, node.encode(vote))

    def _question_header(self, header: Any) -> tuple[str, list[str] | None, float]:
        """``(group, queues here, ttl)`` of a survey question; ``ValueError`` otherwise."""
        kind, group, targets, ttl = header
        if (
            kind != QUESTION
            or not isinstance(group, str)
            or not isinstance(targets, dict)
            or not isinstance(ttl, int | float)
        ):
            raise ValueError(f"not a survey question (header {header!r:.40})")
        return group, queues_of(targets, self.transport.id), ttl

    async def _take(
        self,
        message: pynng.Message,
        question: tuple[str, list[str] | None, float],
        frames: list[bytes],
    ) -> None:
        """A question asked of this node goes to its respondents, replying to a vote subject."""
        t = self.transport
        group, queues, ttl = question
        if queues is None:
            return  # asked of other nodes only
        t.stats.received += 1
        key = self._remember(_backtrace(message), min(float(ttl), 3600.0))
        reply_to = f"{VOTE_PREFIX}.{t.id}.{key}"
        await t.native.deliver("survey question", group, frames, reply_to, queues)

    def _remember(self, backtrace: bytes, ttl: float) -> int:
        """Keep a question's backtrace for ``ttl`` s (its survey time); returns its key."""
        now = time.monotonic()
        questions = self._questions
        while questions and (
            len(questions) >= MAX_OPEN_QUESTIONS or next(iter(questions.values()))[1] < now
        ):
            questions.popitem(last=False)
        key = next(self._keys)
        questions[key] = (backtrace, now + ttl)
        return key

    async def _on_vote(self, subject: str, frames: Sequence[Any], reply_to: str | None) -> None:
        """A vote (or any reply) to a native question: back to its surveyor on the raw socket."""
        try:
            key = int(subject.rpartition(".")[2])
        except ValueError:
            return
        known = self._questions.get(key)
        if known is not None and known[1] < time.monotonic():
            known = None  # the surveyor no longer listens: NNG would drop it
        respondent = self.respondent
        if known is None or respondent is None or respondent.closed or not frames:
            log.debug("%s: answer on %s has no open question; dropped", self.transport.id, subject)
            return
        out = pynng.Message(pack([VOTE], frames, self.transport.native.limits))
        lib.nng_msg_header_append(out._nng_msg, known[0], len(known[0]))
        try:
            await respondent.sock.asend_msg(out)
            self.transport.stats.sent += 1
        except pynng.NNGException as exc:
            log.debug("%s: answer on %s not sent: %s", self.transport.id, subject, exc)


def _vote_header(header: Any) -> None:
    """Nothing: a vote's header is ``[VOTE]``; ``ValueError`` for anything else."""
    if header != [VOTE]:
        raise ValueError(f"not a vote (header {header!r:.40})")


def _backtrace(message: pynng.Message) -> bytes:
    """The NNG header of a question a raw respondent received: its way back to the surveyor."""
    msg = message._nng_msg
    return bytes(ffi.buffer(lib.nng_msg_header(msg), lib.nng_msg_header_len(msg)))
