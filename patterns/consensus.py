"""Consensus: turn the votes of a survey into a :class:`Decision`.

Three rules, each a pure function of the votes (any sequence of
:class:`~synaptic_mesh.patterns.survey.Vote`, such as a ``SurveyResult``):

- :func:`majority`: the choice of more than half of the votes cast.
- :func:`weighted_by_confidence`: the choice with the greatest sum of
  confidences; a tie for first place decides nothing.
- :func:`unanimous`: the one choice every vote names.

Every rule first checks the quorum: with fewer than ``quorum`` votes
(default 1, so an empty survey never decides) the outcome is
``"no_quorum"``. Votes that do not settle the question give ``"split"``.
Either way ``decided`` is false, ``value`` is ``None`` and ``reason`` says
why in words; a decided outcome names the winning ``value`` and the
``votes`` that made it (those for the winner, in arrival order).

What a vote chooses: a :class:`Ballot` respondent's ``choice`` (and its
``confidence``); any other value is itself the choice, with confidence 1.
Pass ``choice=`` and ``confidence=`` to read other vote types (for example
``choice=lambda v: v.value.branch``). Choices must be hashable
(``TypeError`` otherwise); confidences must be finite numbers in ``[0, 1]``
(``ValueError`` naming the respondent otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from synaptic_mesh.patterns.survey import Vote
from synaptic_mesh.runtime.messages import message

Outcome = Literal["decided", "no_quorum", "split"]


@message(name="_mesh.Ballot")
class Ballot:
    """A respondent's vote: its ``choice`` (a plain value), how sure it is, and why."""

    choice: Any
    confidence: float = 1.0
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    """What a consensus rule concluded from the votes.

    ``outcome``: ``"decided"``, ``"no_quorum"`` or ``"split"``.
    ``value``: the winning choice (``None`` unless decided).
    ``votes``: the votes for the winning choice (empty unless decided).
    ``tally``: ``(choice, score)`` pairs, best first (score: vote count, or
    summed confidence for :func:`weighted_by_confidence`).
    ``counted``: every vote considered. ``reason``: the outcome in words.
    ``bool(decision)`` is ``decision.decided``.
    """

    outcome: Outcome
    rule: str
    value: Any = None
    votes: tuple[Vote, ...] = ()
    tally: tuple[tuple[Any, float], ...] = ()
    counted: tuple[Vote, ...] = ()
    reason: str = ""

    @property
    def decided(self) -> bool:
        return self.outcome == "decided"

    def __bool__(self) -> bool:
        return self.decided


def choice_of(vote: Vote) -> Any:
    """The default choice of a vote: a ``Ballot``'s ``choice``, else the value itself."""
    value = vote.value
    return value.choice if isinstance(value, Ballot) else value


def confidence_of(vote: Vote) -> float:
    """The default confidence of a vote: a ``Ballot``'s ``confidence``, else 1."""
    value = vote.value
    return value.confidence if isinstance(value, Ballot) else 1.0  # type: ignore[no-any-return]


ChoiceOf = Callable[[Vote], Any]
ConfidenceOf = Callable[[Vote], float]


def majority(votes: Sequence[Vote], *, quorum: int = 1, choice: ChoiceOf = choice_of) -> Decision:
    """Decide for the choice of more than half of the votes; else ``"split"``."""
    counted = tuple(votes)
    early = _check_quorum("majority", counted, quorum)
    if early is not None:
        return early
    tally = _tally(counted, choice, lambda _vote: 1.0)
    best, score = tally[0]
    if score * 2 > len(counted):
        return _decided(
            "majority", best, counted, tally, choice, f"{score:g} of {len(counted)} votes"
        )
    return Decision(
        "split",
        "majority",
        tally=tally,
        counted=counted,
        reason=f"no choice has more than half of {len(counted)} votes ({_show(tally)})",
    )


def weighted_by_confidence(
    votes: Sequence[Vote],
    *,
    quorum: int = 1,
    choice: ChoiceOf = choice_of,
    confidence: ConfidenceOf = confidence_of,
) -> Decision:
    """Decide for the choice with the greatest summed confidence; a tie for first is ``"split"``."""
    counted = tuple(votes)
    early = _check_quorum("weighted_by_confidence", counted, quorum)
    if early is not None:
        return early
    tally = _tally(counted, choice, _checked(confidence))
    best, score = tally[0]
    if score <= 0:
        return Decision(
            "split",
            "weighted_by_confidence",
            tally=tally,
            counted=counted,
            reason="every vote has confidence 0",
        )
    if len(tally) > 1 and math.isclose(tally[1][1], score):
        tied = [c for c, s in tally if math.isclose(s, score)]
        return Decision(
            "split",
            "weighted_by_confidence",
            tally=tally,
            counted=counted,
            reason=f"tie for first place between {', '.join(map(repr, tied))} at {score:.3g}",
        )
    return _decided(
        "weighted_by_confidence",
        best,
        counted,
        tally,
        choice,
        f"confidence {score:.3g} of {sum(s for _, s in tally):.3g}",
    )


def unanimous(votes: Sequence[Vote], *, quorum: int = 1, choice: ChoiceOf = choice_of) -> Decision:
    """Decide when every vote names the same choice; else ``"split"``."""
    counted = tuple(votes)
    early = _check_quorum("unanimous", counted, quorum)
    if early is not None:
        return early
    tally = _tally(counted, choice, lambda _vote: 1.0)
    if len(tally) == 1:
        return _decided(
            "unanimous", tally[0][0], counted, tally, choice, f"all {len(counted)} votes"
        )
    dissent = [v.respondent for v in counted if choice(v) != tally[0][0]]
    return Decision(
        "split",
        "unanimous",
        tally=tally,
        counted=counted,
        reason=f"not unanimous ({_show(tally)}); dissent from {', '.join(dissent)}",
    )


# -- helpers -----------------------------------------------------------------------


def _check_quorum(rule: str, counted: tuple[Vote, ...], quorum: int) -> Decision | None:
    if quorum < 1:
        raise ValueError(f"quorum must be at least 1, got {quorum!r}")
    if len(counted) >= quorum:
        return None
    return Decision(
        "no_quorum",
        rule,
        counted=counted,
        reason=f"no quorum: {len(counted)} vote(s), {quorum} needed",
    )


def _tally(
    counted: tuple[Vote, ...], choice: ChoiceOf, weight: Callable[[Vote], float]
) -> tuple[tuple[Any, float], ...]:
    """``(choice, score)`` best first; equal scores keep the order choices first appeared."""
    scores: dict[Any, float] = {}
    for vote in counted:
        picked = choice(vote)
        try:
            scores[picked] = scores.get(picked, 0.0) + weight(vote)
        except TypeError:
            raise TypeError(
                f"the choice of {vote.respondent} is not hashable: {picked!r}"
            ) from None
    order = {c: i for i, c in enumerate(scores)}
    return tuple(sorted(scores.items(), key=lambda item: (-item[1], order[item[0]])))


def _checked(confidence: ConfidenceOf) -> Callable[[Vote], float]:
    def weight(vote: Vote) -> float:
        value = confidence(vote)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"confidence of {vote.respondent} is not a number: {value!r}")
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"confidence of {vote.respondent} must be within [0, 1]: {value!r}")
        return float(value)

    return weight


def _decided(
    rule: str,
    value: Any,
    counted: tuple[Vote, ...],
    tally: tuple[tuple[Any, float], ...],
    choice: ChoiceOf,
    why: str,
) -> Decision:
    support = tuple(v for v in counted if choice(v) == value)
    return Decision("decided", rule, value, support, tally, counted, f"{value!r}: {why}")


def _show(tally: tuple[tuple[Any, float], ...]) -> str:
    return ", ".join(f"{c!r}: {s:.3g}" for c, s in tally)
