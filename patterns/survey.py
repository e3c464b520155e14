"""Survey: ``await self.survey(group, question, timeout=, quorum=)`` and ``@respond(group)``.

One question to a group of respondents; the votes that arrive in time.

Respondents are actors with a method marked ``@respond("council")``: it
receives the question through the actor's mailbox (one message at a time,
like any handler) and its return value is the actor's vote. The mark lasts
as long as the actor (across supervisor restarts), like ``@subscribe``.

Semantics of :func:`survey`:

- The question is published on the subject ``group``; every respondent
  subscribed to it (and one member per ``queue`` group) gets it. The
  envelope carries the absolute deadline; a respondent that takes a question
  from its mailbox after the deadline skips it (no vote, no work).
- It returns a :class:`SurveyResult`: a sequence of :class:`Vote` in arrival
  order, each respondent at most once (a second answer from the same
  respondent, e.g. from a second ``@respond`` method on the same group, is
  dropped and counted in ``duplicates``), and never a vote that arrived after
  the deadline (it is dropped and counted in ``node.stats.late_replies``).
- With ``quorum=n`` it returns as soon as ``n`` votes are in
  (``quorum_met``); later votes are dropped and counted as late. Without a
  quorum, or when the quorum is not reached, it returns at the deadline. A
  quorum larger than the group is never met: the survey returns at the
  deadline with what came.
- A respondent that raises does not vote: the result lists it in
  ``failures`` (exception type and text), it counts as that respondent's
  one answer, and the actor's failure goes to its supervisor as usual.
- With no respondent at all, the survey returns at once with no votes and
  ``no_responders`` set on transports that know interest
  (``capabilities.knows_interest``); elsewhere it returns at the deadline.
- A plain ``@subscribe`` handler on the group hears the question, but its
  return value is not a vote (it carries no respondent identity); such
  answers are counted in ``ignored``.
- Raises ``ValueError`` for ``timeout <= 0`` or ``quorum < 1``,
  ``InvalidSubject`` for a bad group, ``TransportClosed`` when the node no
  longer sends. A survey never raises because of what respondents did.

Lowering: the generic lowering publishes the question (kind ``survey``)
with ``reply_to`` on the node's inbox and collects the answers (kind
``vote``) through a multi-reply slot (``Node.collect_replies``); respondents
subscribe to the group subject. A transport listing ``"survey"`` in
``capabilities.native`` supplies a :class:`SurveyLowering` (NNG
Surveyor0/Respondent0, NATS).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar, overload

from synaptic_mesh.actors.signals import Call
from synaptic_mesh.patterns.attach import RESPOND_ATTR
from synaptic_mesh.patterns.lowering import SURVEY, lowering_for
from synaptic_mesh.runtime import envelope as kinds
from synaptic_mesh.runtime.eager import DONE
from synaptic_mesh.runtime.envelope import Envelope
from synaptic_mesh.runtime.errors import MeshError
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.subjects import validate_subject
from synaptic_mesh.transports.base import Handler, Subscription, eager_handler

if TYPE_CHECKING:
    from synaptic_mesh.actors.actor import AgentActor
    from synaptic_mesh.runtime.node import Node

log = logging.getLogger("synaptic_mesh.patterns.survey")

DEFAULT_SURVEY_TIMEOUT: Final = 10.0
"""Seconds a survey waits by default (LLM respondents are slow)."""

F = TypeVar("F", bound=Callable[..., Any])


@message(name="_mesh.VoteFailed")
class VoteFailed:
    """The answer of a respondent whose method raised (travels as the vote's body)."""

    error_type: str
    message: str


class Vote(NamedTuple):
    """One respondent's answer: who (its subject), what it returned, and when.

    ``after`` is the seconds between sending the question and the vote's arrival.
    """

    respondent: str
    value: Any
    after: float = 0.0


class VoteFailure(NamedTuple):
    """A respondent that raised instead of voting."""

    respondent: str
    error_type: str
    message: str


@dataclass(frozen=True)
class SurveyResult(Sequence[Vote]):
    """The votes of one survey, in arrival order; also a sequence of :class:`Vote`.

    ``quorum_met`` is true when a quorum was asked for and reached.
    ``no_responders``: the transport reported that nobody subscribes to the group.
    ``duplicates``: second answers of a respondent, dropped.
    ``ignored``: answers that were not votes (plain ``@subscribe`` replies).
    """

    group: str
    votes: tuple[Vote, ...]
    failures: tuple[VoteFailure, ...] = ()
    quorum: int | None = None
    no_responders: bool = False
    duplicates: int = 0
    ignored: int = 0

    @property
    def quorum_met(self) -> bool:
        return self.quorum is not None and len(self.votes) >= self.quorum

    @property
    def respondents(self) -> list[str]:
        """Subjects of the actors that voted, in arrival order."""
        return [v.respondent for v in self.votes]

    @overload
    def __getitem__(self, index: int) -> Vote: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Vote]: ...
    def __getitem__(self, index: int | slice) -> Vote | Sequence[Vote]:
        return self.votes[index]

    def __len__(self) -> int:
        return len(self.votes)

    def __iter__(self) -> Iterator[Vote]:
        return iter(self.votes)


def respond(group: str, *, queue: str | None = None) -> Callable[[F], F]:
    """Mark an ``async def`` method as this actor's answer to surveys of ``group``.

    The method receives the question and returns the vote (any message or
    plain value). With ``queue``, the respondents sharing that queue name
    answer as one: each survey reaches one of them.
    """
    validate_subject(group)
    if queue is not None:
        validate_subject(queue)

    def mark(fn: F) -> F:
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError(f"@respond method {fn.__qualname__} must be 'async def'")
        existing: tuple[tuple[str, str | None], ...] = getattr(fn, RESPOND_ATTR, ())
        setattr(fn, RESPOND_ATTR, (*existing, (group, queue)))
        return fn

    return mark


# -- lowering ---------------------------------------------------------------------

OnAnswer = Callable[["Envelope | None"], bool]
"""Called with each answer (``None`` for "no responders"); returns true once complete."""


class SurveyLowering(Protocol):
    """What a native survey lowering supplies."""

    async def survey(
        self,
        node: Node,
        group: str,
        question: Any,
        *,
        sender: str | None,
        timeout: float,
        on_answer: OnAnswer,
    ) -> None:
        """Ask ``group``; feed every answer to ``on_answer`` until it returns true or time is up."""
        ...

    async def attach_respondent(
        self, node: Node, group: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        """Deliver the questions asked of ``group`` to ``handler(subject, frames, reply_to)``."""
        ...

    def answer(self, node: Node, vote: Envelope) -> Awaitable[None]:
        """Send ``vote`` (kind ``vote``, subject = the question's ``reply_to``) to the surveyor."""
        ...


class GenericSurvey:
    """Survey on publish with ``reply_to`` and a multi-reply inbox slot."""

    async def survey(
        self,
        node: Node,
        group: str,
        question: Any,
        *,
        sender: str | None,
        timeout: float,
        on_answer: OnAnswer,
    ) -> None:
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + timeout
        done: asyncio.Future[None] = loop.create_future()

        def collect(env: Envelope | None) -> None:
            if done.done():
                node.stats.late_replies += 1
            elif on_answer(env):
                done.set_result(None)

        corr, reply_to = node.collect_replies(collect)
        try:
            env = node.make_envelope(
                kinds.SURVEY,
                group,
                question,
                sender,
                reply_to=reply_to,
                corr=corr,
                deadline=time.time() + timeout,
            )
            await node.send_frames(group, node.encode(env), reply_to)
            remaining = ends_at - loop.time()
            if remaining > 0 and not done.done():
                # a timer and the future itself: lighter than asyncio.wait's waiter and set
                timer = loop.call_later(remaining, _finish, done)
                try:
                    await done
                finally:
                    timer.cancel()
        finally:
            node.stop_collecting(corr)
            if not done.done():
                done.cancel()

    async def attach_respondent(
        self, node: Node, group: str, handler: Handler, *, queue: str | None
    ) -> Subscription:
        return await node.transport.subscribe(group, handler, queue)

    def answer(self, node: Node, vote: Envelope) -> Awaitable[None]:
        return node.send_frames(vote.subject, node.encode(vote))


def _finish(done: asyncio.Future[None]) -> None:
    """The survey's deadline: stop waiting for votes."""
    if not done.done():
        done.set_result(None)


def _lowering(node: Node) -> SurveyLowering:
    return node.lowerings.get(SURVEY) or lowering_for(node, SURVEY, GenericSurvey)


# -- the surveyor -----------------------------------------------------------------


async def survey(
    node: Node,
    group: str,
    question: Any,
    *,
    timeout: float = DEFAULT_SURVEY_TIMEOUT,
    quorum: int | None = None,
    sender: str | None = None,
) -> SurveyResult:
    """Ask ``group`` and return the votes that arrived in time; see the module docstring."""
    validate_subject(group)
    if not timeout > 0:
        raise ValueError(f"survey timeout must be > 0 seconds, got {timeout!r}")
    if quorum is not None and quorum < 1:
        raise ValueError(f"quorum must be at least 1, got {quorum!r}")
    # The survey's own clock, read once per vote: time.monotonic itself, not the loop's
    # time() around it (the lowering's deadline timer runs on the loop's clock; both are
    # monotonic and measure from here)
    clock = time.monotonic
    started = clock()
    deadline = started + timeout
    votes: dict[str, Vote] = {}
    failures: dict[str, VoteFailure] = {}
    tally = {"duplicates": 0, "ignored": 0, "no_responders": False}
    needed, vote_kind = math.inf if quorum is None else quorum, kinds.VOTE

    def on_answer(env: Envelope | None) -> bool:
        now = clock()
        if now > deadline:  # the timer has not woken the surveyor yet: still late
            node.stats.late_replies += 1
            return True
        if env is None:
            tally["no_responders"] = True
            return True
        who = env.sender
        if env.kind != vote_kind or who is None:
            tally["ignored"] += 1
            return False
        if who in votes or who in failures:
            tally["duplicates"] += 1
            return False
        body = env.body
        if isinstance(body, VoteFailed):
            failures[who] = VoteFailure(who, body.error_type, body.message)
            return False
        votes[who] = tuple.__new__(Vote, (who, body, now - started))  # Vote(...), minus a call
        return len(votes) >= needed

    await _lowering(node).survey(
        node, group, question, sender=sender, timeout=timeout, on_answer=on_answer
    )
    return SurveyResult(
        group,
        tuple(votes.values()),
        tuple(failures.values()),
        quorum,
        bool(tally["no_responders"]),
        int(tally["duplicates"]),
        int(tally["ignored"]),
    )


# -- respondents -------------------------------------------------------------------


class Respondent:
    """One ``@respond`` method of one actor, subscribed to one group: what its answers need."""

    __slots__ = ("cell", "fn", "lowering", "me", "node")

    def __init__(self, actor: AgentActor, fn: Callable[..., Any], lowering: SurveyLowering) -> None:
        self.node = actor.node
        self.cell = actor._mesh_cell
        self.me = actor.subject
        self.fn = fn
        self.lowering = lowering


class QuestionCall(Call):
    """A survey question in a respondent's mailbox.

    A :class:`~synaptic_mesh.actors.signals.Call`, so ``current_sender`` and
    ``current_subject`` name the surveyor and the group and a closing mailbox
    dead-letters the question. The respondent's handler table maps this class
    to :func:`answer_question` (set as it attaches), so the drain loop hands
    it over by its class, as it does a plain tell. The surveyor's inbox is
    ``answer_to``, not ``reply_to``: a vote is not a reply.
    """

    __slots__ = ("answer_to", "deadline", "respondent")

    def __init__(
        self,
        question: Any,
        respondent: Respondent,
        answer_to: str,
        corr: str | None,
        deadline: float | None,
        subject: str,
        sender: str | None,
    ) -> None:
        self.message = question
        self.respondent = respondent
        self.answer_to = answer_to
        self.corr = corr
        self.deadline = deadline
        self.subject = subject
        self.sender = sender
        self.handler = self.future = self.reply_to = None


async def attach_respondent(
    actor: AgentActor, group: str, method: str, *, queue: str | None = None
) -> None:
    """Subscribe ``actor``'s ``@respond`` method ``method`` to ``group`` for the actor's life."""
    node = actor.node
    cell = actor._mesh_cell
    fn = getattr(type(actor), method)
    lowering = _lowering(node)
    respondent = Respondent(actor, fn, lowering)
    cell.table.setdefault(QuestionCall, answer_question)  # the class's table: once per class

    @eager_handler
    def on_question(subject: str, frames: Sequence[Any], reply_to: str | None) -> Awaitable[None]:
        env = node.open_envelope(subject, frames)  # in process: the Envelope itself
        if env is None:
            return DONE
        answer_to = env.reply_to or reply_to
        call: Call
        if env.kind != kinds.SURVEY or answer_to is None:  # a plain publish: heard, not answered
            call = Call(env.body, handler=fn, subject=subject, sender=env.sender)
        else:
            call = QuestionCall(
                env.body, respondent, answer_to, env.corr, env.deadline, subject, env.sender
            )
        try:
            cell.mailbox.put_nowait(call)  # the common case: room in the mailbox
        except MeshError:  # full (waits under "block") or closed (dead-lettered): the slow path
            return node.deliver(cell, call, env)
        return DONE

    subscription = await lowering.attach_respondent(node, group, on_question, queue=queue)
    cell.subscriptions.append(subscription)


async def answer_question(actor: AgentActor, call: QuestionCall) -> None:
    """Run a respondent's method on a question and send its vote (or its failure)."""
    respondent = call.respondent
    node, me = respondent.node, respondent.me
    deadline = call.deadline
    if deadline is not None and time.time() > deadline:
        log.debug("%s skips a question of an expired survey", me)
        return
    cell = respondent.cell
    cell.current = call  # what current_sender and current_subject report, as for any Call
    try:
        try:
            value = await respondent.fn(actor, call.message)
        except Exception as exc:
            failed = VoteFailed(type(exc).__name__, str(exc))
            await _send_vote(node, me, call.answer_to, call.corr, failed)
            raise
        vote = node.make_envelope(kinds.VOTE, call.answer_to, value, me, corr=call.corr)
        try:
            await respondent.lowering.answer(node, vote)
        except (TypeError, ValueError, MeshError) as exc:  # cannot be encoded, or not sent
            failed = VoteFailed(type(exc).__name__, f"vote not sent: {exc}")
            await _send_vote(node, me, call.answer_to, call.corr, failed)
    finally:
        cell.current = None


async def _send_vote(node: Node, sender: str, reply_to: str, corr: str | None, body: Any) -> None:
    try:
        vote = node.make_envelope(kinds.VOTE, reply_to, body, sender, corr=corr)
        await _lowering(node).answer(node, vote)
    except MeshError as exc:
        log.warning("%s could not send its vote to %s: %s", sender, reply_to, exc)
