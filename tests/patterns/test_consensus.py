"""Consensus rules: each decision names its winner and the votes that made it."""

from __future__ import annotations

import math

import pytest

from synaptic_mesh import Ballot, Vote, majority, unanimous, weighted_by_confidence


def votes(*pairs: tuple[str, object]) -> list[Vote]:
    return [Vote(who, value) for who, value in pairs]


def test_majority_needs_more_than_half() -> None:
    cast = votes(("a", "x"), ("b", "x"), ("c", "y"))
    decision = majority(cast)
    assert decision.decided and decision.value == "x"
    assert [v.respondent for v in decision.votes] == ["a", "b"]
    assert decision.tally == (("x", 2.0), ("y", 1.0))
    split = majority(votes(("a", "x"), ("b", "y"), ("c", "z"), ("d", "x")))
    assert split.outcome == "split" and split.value is None and not split
    assert "no choice has more than half of 4 votes" in split.reason


def test_no_quorum_is_a_clear_outcome() -> None:
    for rule in (majority, unanimous, weighted_by_confidence):
        empty = rule([])
        assert empty.outcome == "no_quorum" and not empty.decided
        assert empty.reason == "no quorum: 0 vote(s), 1 needed"
        short = rule(votes(("a", "x"), ("b", "x")), quorum=3)
        assert short.outcome == "no_quorum" and short.counted == tuple(
            votes(("a", "x"), ("b", "x"))
        )
    with pytest.raises(ValueError):
        majority([], quorum=0)


def test_weighted_by_confidence_reads_ballots() -> None:
    cast = votes(
        ("a", Ballot("branch1", 0.9)),
        ("b", Ballot("branch2", 0.4)),
        ("c", Ballot("branch2", 0.4)),
        ("d", Ballot("branch3", 0.1)),
    )
    decision = weighted_by_confidence(cast)
    assert decision.decided and decision.value == "branch1"
    assert [v.respondent for v in decision.votes] == ["a"]
    assert [c for c, _ in decision.tally] == ["branch1", "branch2", "branch3"]
    assert majority(cast).outcome == "split"  # by head count, branch2 leads but has no majority


def test_weighted_tie_and_zero_confidence_are_split() -> None:
    tie = weighted_by_confidence(votes(("a", Ballot("x", 0.5)), ("b", Ballot("y", 0.5))))
    assert tie.outcome == "split" and "tie for first place" in tie.reason
    zero = weighted_by_confidence(votes(("a", Ballot("x", 0.0))))
    assert zero.outcome == "split" and zero.reason == "every vote has confidence 0"


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "high", True])
def test_bad_confidence_names_the_respondent(bad: object) -> None:
    with pytest.raises(ValueError, match=r"council\.b"):
        weighted_by_confidence(
            votes(("council.a", Ballot("x", 0.5)), ("council.b", Ballot("x", bad)))
        )


def test_unanimous_names_the_dissent() -> None:
    assert unanimous(votes(("a", 1), ("b", 1))).value == 1
    dissent = unanimous(votes(("a", 1), ("b", 2), ("c", 1)))
    assert dissent.outcome == "split" and dissent.reason.endswith("dissent from b")


def test_custom_choice_and_unhashable_choices() -> None:
    cast = votes(("a", {"pick": "x"}), ("b", {"pick": "x"}))
    decision = majority(cast, choice=lambda v: v.value["pick"])
    assert decision.value == "x"
    with pytest.raises(TypeError, match="not hashable"):
        majority(cast)
