"""Tests for subject validation, wildcard matching and the cached routing table."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from synaptic_mesh.runtime.errors import MeshError
from synaptic_mesh.runtime.subjects import (
    MAX_SUBJECT_LENGTH,
    InvalidSubject,
    Match,
    SubjectTable,
    is_pattern,
    matches,
    validate_pattern,
    validate_subject,
)

# --- validation ------------------------------------------------------------

VALID_SUBJECTS = [
    "core",
    "core.claude",
    "tot.branch3.exploration",
    "_INBOX.node1.42",
    "a-b_c.d$e.ñ",
    "x" * MAX_SUBJECT_LENGTH,
    ".".join(["a"] * 512)[: MAX_SUBJECT_LENGTH - 1],
]


@pytest.mark.parametrize("subject", VALID_SUBJECTS)
def test_valid_subjects_are_returned_unchanged(subject: str) -> None:
    assert validate_subject(subject) == subject
    assert validate_pattern(subject) == subject  # every subject is also a pattern
    assert not is_pattern(subject)


@pytest.mark.parametrize(
    "pattern",
    ["*", ">", "core.*", "core.>", "*.claude", "*.*.>", "tot.*.exploration", "a.*.b.>"],
)
def test_valid_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern
    assert is_pattern(pattern)


# (input, fragments that must all appear in the message)
INVALID_COMMON = [
    ("", ["empty"]),
    (".core", ["empty token", "'.core'"]),
    ("core.", ["empty token", "'core.'"]),
    ("core..claude", ["empty token", "'core..claude'"]),
    ("core.cl aude", ["whitespace", "'cl aude'", "'core.cl aude'"]),
    ("core\t.x", ["whitespace", "'core\\t.x'"]),
    ("a\n", ["whitespace"]),
    ("foo*", ["'foo*'", "whole token"]),
    ("a.*b.c", ["'*b'", "whole token"]),
    ("a.b>", ["'b>'", "whole token"]),
    ("x" * (MAX_SUBJECT_LENGTH + 1), [str(MAX_SUBJECT_LENGTH + 1), str(MAX_SUBJECT_LENGTH)]),
]


@pytest.mark.parametrize(("text", "fragments"), INVALID_COMMON)
def test_invalid_subjects(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidSubject) as info:
        validate_subject(text)
    message = str(info.value)
    assert "subject" in message
    for fragment in fragments:
        assert fragment in message
    assert info.value.subject == text


@pytest.mark.parametrize(("text", "fragments"), INVALID_COMMON)
def test_invalid_patterns(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidSubject) as info:
        validate_pattern(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("core.*", ["'core.*'", "'*'", "only allowed in subscription patterns"]),
        ("core.>", ["'core.>'", "'>'", "only allowed in subscription patterns"]),
        ("*", ["wildcard"]),
    ],
)
def test_wildcards_are_rejected_in_subjects(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidSubject) as info:
        validate_subject(text)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("a.>.b", ["'>' must be the last token", "'a.>.b'", "token 2"]),
        (">.a", ["'>' must be the last token"]),
        ("a.>.>", ["'>' must be the last token"]),
        ("a.**", ["'**'", "whole token"]),
        ("a.>>", ["'>>'", "whole token"]),
        ("a.*>", ["'*>'", "whole token"]),
    ],
)
def test_invalid_wildcard_use_in_patterns(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidSubject) as info:
        validate_pattern(text)
    assert str(info.value).startswith("pattern") or "of pattern" in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_invalid_subject_is_a_value_error_and_a_mesh_error() -> None:
    with pytest.raises(ValueError):
        validate_subject("a..b")
    with pytest.raises(MeshError):
        validate_pattern("a.>.b")


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        validate_subject(42)  # type: ignore[arg-type]


@given(st.text(alphabet="ab.*> \t", max_size=12))
def test_validation_agrees_with_a_regex_grammar(text: str) -> None:
    token = r"[ab]+"
    subject_re = rf"{token}(\.{token})*"
    pattern_re = rf"({token}|\*)(\.({token}|\*))*(\.>)?|>"
    for validate, grammar in ((validate_subject, subject_re), (validate_pattern, pattern_re)):
        try:
            validate(text)
            accepted = True
        except InvalidSubject:
            accepted = False
        assert accepted == bool(re.fullmatch(grammar, text)), (validate.__name__, text)


# --- matching --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("core.claude", "core.claude", True),
        ("core.claude", "core.gemini", False),
        ("core.claude", "core", False),
        ("core", "core.claude", False),
        ("core.*", "core.claude", True),
        ("core.*", "core", False),
        ("core.*", "core.claude.x", False),  # '*' is exactly one token
        ("*", "core", True),
        ("*", "core.claude", False),
        ("*.claude", "core.claude", True),
        ("*.claude", "core.gemini", False),
        ("tot.*.exploration", "tot.branch3.exploration", True),
        ("tot.*.exploration", "tot.branch3.other", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("core.>", "core.claude", True),
        ("core.>", "core.claude.x.y", True),
        ("core.>", "core", False),  # '>' needs at least one token
        ("core.>", "other.claude", False),
        (">", "core", True),
        (">", "a.b.c.d", True),
        ("*.>", "a", False),
        ("*.>", "a.b", True),
        ("a.*.>", "a.b.c", True),
        ("a.*.>", "a.b", False),
        ("_INBOX.node1.*", "_INBOX.node1.42", True),
        ("core.claude", "core.claudex", False),
    ],
)
def test_matches_table(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


def reference_matches(pattern: str, subject: str) -> bool:
    """Independent oracle: translate the pattern into a regular expression."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.fullmatch(r"\.".join(parts), subject) is not None


TOKENS = st.sampled_from(["a", "b", "ab", "_X", "$1"])
SUBJECTS = st.lists(TOKENS, min_size=1, max_size=5).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.one_of(TOKENS, st.just("*")), min_size=0, max_size=4))
    if not tokens or draw(st.booleans()):
        tokens.append(">")
    return ".".join(tokens)


@given(patterns(), SUBJECTS)
def test_matches_agrees_with_regex_reference(pattern: str, subject: str) -> None:
    validate_pattern(pattern)
    validate_subject(subject)
    assert matches(pattern, subject) == reference_matches(pattern, subject)


@given(SUBJECTS)
def test_subject_matches_itself_and_its_wildcard_forms(subject: str) -> None:
    tokens = subject.split(".")
    assert matches(subject, subject)
    assert matches(".".join("*" for _ in tokens), subject)
    assert matches(">", subject)
    assert matches(".".join([*tokens[:-1], ">"]), subject)


# --- the table -------------------------------------------------------------


def test_match_collects_plain_in_subscription_order() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("core.>", "h1")
    table.add("core.claude", "h2")
    table.add("other", "h3")
    table.add("*.claude", "h4")
    assert table.match("core.claude") == Match(plain=("h1", "h2", "h4"))
    assert table.match("core.gemini").plain == ("h1",)
    assert table.is_empty("nobody.here")
    assert not table.is_empty("other")
    assert len(table) == 4


def test_a_match_names_its_sole_recipient_only_when_there_is_exactly_one() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("one.plain", "p")
    table.add("two.plain", "p1")
    table.add("two.plain", "p2")
    table.add("one.member", "m", "one.member")
    table.add("two.members", "m1", "g")
    table.add("two.members", "m2", "g")
    table.add("mixed", "p")
    table.add("mixed", "m", "g")
    table.add("two.groups", "m1", "g1")
    table.add("two.groups", "m2", "g2")
    assert table.match("one.plain").sole == ("p", ())
    assert table.match("one.member").sole == ("m", ("one.member",))
    for subject in ("two.plain", "two.members", "mixed", "two.groups", "nobody"):
        assert table.match(subject).sole is None, subject


def test_duplicate_subscriptions_are_held_twice_and_removed_one_at_a_time() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("a.*", "h")
    table.add("a.*", "h")
    assert table.match("a.b").plain == ("h", "h")
    assert table.remove("a.*", "h")
    assert table.match("a.b").plain == ("h",)
    assert table.remove("a.*", "h")
    assert not table.remove("a.*", "h")
    assert table.is_empty("a.b")
    assert len(table) == 0


def test_remove_needs_the_same_pattern_and_queue() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("a.*", "h", queue="q")
    assert not table.remove("a.*", "h")
    assert not table.remove("a.>", "h", queue="q")
    assert not table.remove("a.*", "other", queue="q")
    assert table.remove("a.*", "h", queue="q")


def test_remove_compares_items_by_equality() -> None:
    class Actor:
        def handle(self) -> None: ...

    actor = Actor()
    table: SubjectTable[object] = SubjectTable()
    table.add("a", actor.handle)
    assert table.remove("a", actor.handle)  # a fresh bound method, equal not identical


def test_add_validates_pattern_and_queue() -> None:
    table: SubjectTable[str] = SubjectTable()
    with pytest.raises(InvalidSubject, match="'>' must be the last token"):
        table.add("a.>.b", "h")
    with pytest.raises(InvalidSubject, match="queue name"):
        table.add("a", "h", queue="")
    with pytest.raises(InvalidSubject, match="queue name"):
        table.add("a", "h", queue="my queue")
    assert len(table) == 0


def test_match_rejects_invalid_subjects_without_caching_them() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add(">", "h")
    with pytest.raises(InvalidSubject, match="only allowed in subscription patterns"):
        table.match("a.*")
    assert "a.*" not in table._cache


def test_queue_group_round_robin_over_three_members() -> None:
    table: SubjectTable[str] = SubjectTable()
    for member in ("w1", "w2", "w3"):
        table.add("jobs.>", member, queue="workers")
    m = table.match("jobs.render")
    assert m.plain == ()
    assert m.groups == (("w1", "w2", "w3"),)
    assert m.queues == ("workers",)
    assert [table.pick("jobs.render")[0] for _ in range(7)] == [
        "w1", "w2", "w3", "w1", "w2", "w3", "w1",
    ]  # fmt: skip


def test_two_groups_each_get_one_and_plain_subscribers_all_get_it() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("jobs.*", "audit1")
    table.add("jobs.*", "a1", queue="A")
    table.add("jobs.*", "b1", queue="B")
    table.add("jobs.*", "a2", queue="A")
    table.add(">", "audit2")
    table.add("jobs.*", "b2", queue="B")
    m = table.match("jobs.x")
    assert m.plain == ("audit1", "audit2")
    assert m.groups == (("a1", "a2"), ("b1", "b2"))
    assert m.queues == ("A", "B")
    assert table.pick("jobs.x") == ("audit1", "audit2", "a1", "b1")
    assert table.pick("jobs.x") == ("audit1", "audit2", "a2", "b2")
    assert table.pick("jobs.x") == ("audit1", "audit2", "a1", "b1")


def test_queue_group_members_may_use_different_patterns() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("jobs.render", "render-only", queue="w")
    table.add("jobs.>", "generalist", queue="w")
    assert table.match("jobs.render").groups == (("render-only", "generalist"),)
    assert table.match("jobs.index").groups == (("generalist",),)  # still one group "w"
    assert [table.pick("jobs.index") for _ in range(2)] == [("generalist",), ("generalist",)]


def test_pick_without_groups_returns_plain() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("a", "h")
    assert table.pick("a") == ("h",)
    assert table.pick("b") == ()


def test_clear() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("a", "h")
    table.add("a", "w", queue="q")
    table.pick("a")
    table.clear()
    assert len(table) == 0
    assert table.is_empty("a")
    table.add("a", "w2", queue="q")
    table.add("a", "w3", queue="q")
    assert table.pick("a") == ("w2",)  # round robin restarted


def test_invalidation_drops_only_matching_cache_entries() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("core.*", "core")
    subjects = ["core.claude", "core.gemini", "tot.b1.x", "tot.b2.x", "reply.n1.1", "other"]
    for subject in subjects:
        table.match(subject)
    assert set(table._cache) == set(subjects)

    table.add("tot.*.x", "explorer")  # wildcard: drops exactly the tot.* entries
    assert set(table._cache) == {"core.claude", "core.gemini", "reply.n1.1", "other"}
    assert table.match("tot.b1.x").plain == ("explorer",)

    table.add("reply.n1.1", "reply")  # literal: drops exactly that entry
    assert set(table._cache) == {"core.claude", "core.gemini", "other", "tot.b1.x"}

    table.remove("core.*", "core")
    assert set(table._cache) == {"other", "tot.b1.x"}
    assert table.is_empty("core.claude")

    assert not table.remove("nothing.>", "core")  # nothing removed: cache untouched
    assert set(table._cache) == {"other", "tot.b1.x", "core.claude"}

    table.add(">", "everything")
    assert table._cache == {}


def test_reply_inboxes_resolve_apart_from_the_main_cache() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("_INBOX.n1.>", "inbox")
    table.add("core.claude", "claude")
    table.match("core.claude")
    for corr in range(100):
        assert table.match(f"_INBOX.n1.{corr}").plain == ("inbox",)
    assert set(table._cache) == {"core.claude"}, "used-once reply subjects stay out of the cache"
    first = table.match("_INBOX.n1.survey")
    assert table.match("_INBOX.n1.survey") is first, "a survey's votes share one resolution"
    table.add("_INBOX.n1.survey", "collector")  # any change forgets reply subjects
    assert table.match("_INBOX.n1.survey").plain == ("inbox", "collector")


def test_cache_is_bounded() -> None:
    table: SubjectTable[str] = SubjectTable(cache_size=3)
    table.add(">", "h")
    for i in range(3):
        table.match(f"s.{i}")
    assert len(table._cache) == 3
    table.match("s.3")  # full: cleared, then this one stored
    assert set(table._cache) == {"s.3"}
    assert table.match("s.0").plain == ("h",)
    with pytest.raises(ValueError, match="cache_size"):
        SubjectTable(cache_size=0)


def test_unless_leaves_one_subject_out_for_one_subscription() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("_bus.c.>", "m1", unless="_bus.c.m1")
    table.add("_bus.c.>", "m2", unless="_bus.c.m2")
    table.add("_bus.c.>", "peer")
    assert table.match("_bus.c.m1").plain == ("m2", "peer")
    assert table.match("_bus.c.m2").plain == ("m1", "peer")
    assert table.match("_bus.c.m3").plain == ("m1", "m2", "peer")
    assert table.remove("_bus.c.>", "peer")
    assert table.match("_bus.c.m1").plain == ("m2",), "the cached match was dropped"
    assert table.remove("_bus.c.>", "m2")
    assert not table.match("_bus.c.m1"), "nobody else: no recipient at all"
    with pytest.raises(InvalidSubject):
        table.add("_bus.c.>", "m3", unless="_bus.*")


def test_cache_hit_returns_the_same_match_object() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("a.*", "h")
    assert table.match("a.b") is table.match("a.b")


# --- cache vs. uncached scan, under arbitrary operations --------------------

ITEMS = st.sampled_from(["h1", "h2", "h3"])
QUEUES = st.sampled_from([None, None, "q1", "q2"])
SMALL_PATTERNS = st.sampled_from(
    ["a", "a.b", "a.*", "*.b", "a.>", ">", "*", "*.*", "b.a", "a.b.c", "*.b.>"]
)
SMALL_SUBJECTS = st.sampled_from(["a", "b", "a.b", "b.a", "a.a", "a.b.c", "b.b.b", "a.b.c.d"])
UNLESS = st.sampled_from([None, None, None, "a.b", "a.b.c", "b"])


class CachedTableMachine(RuleBasedStateMachine):
    """Drives a cached SubjectTable next to a plain list of its subscriptions."""

    @initialize(cache_size=st.integers(min_value=1, max_value=6))
    def make_table(self, cache_size: int) -> None:
        self.table: SubjectTable[str] = SubjectTable(cache_size=cache_size)
        self.model: list[tuple[str, str, str | None, str | None]] = []

    @rule(pattern=SMALL_PATTERNS, item=ITEMS, queue=QUEUES, unless=UNLESS)
    def add(self, pattern: str, item: str, queue: str | None, unless: str | None) -> None:
        self.table.add(pattern, item, queue, unless=unless)
        self.model.append((pattern, item, queue, unless))

    @rule(pattern=SMALL_PATTERNS, item=ITEMS, queue=QUEUES)
    def remove(self, pattern: str, item: str, queue: str | None) -> None:
        held = [entry for entry in self.model if entry[:3] == (pattern, item, queue)]
        assert self.table.remove(pattern, item, queue) == bool(held)
        if held:
            self.model.remove(held[0])  # the earliest goes

    @rule(subject=SMALL_SUBJECTS)
    def match(self, subject: str) -> None:
        fresh: SubjectTable[str] = SubjectTable()
        for pattern, item, queue, unless in self.model:
            fresh.add(pattern, item, queue, unless=unless)
        expected = fresh.match(subject)
        assert self.table.match(subject) == expected
        assert self.table._scan(tuple(subject.split("."))) == expected
        plain = tuple(
            i
            for p, i, q, u in self.model
            if q is None and u != subject and reference_matches(p, subject)
        )
        assert expected.plain == plain

    @rule(subject=SMALL_SUBJECTS)
    def pick(self, subject: str) -> None:
        m = self.table.match(subject)
        picked = self.table.pick(subject)
        assert picked[: len(m.plain)] == m.plain
        assert len(picked) == len(m.plain) + len(m.groups)
        for chosen, members in zip(picked[len(m.plain) :], m.groups, strict=True):
            assert chosen in members

    @invariant()
    def cache_is_bounded_and_fresh(self) -> None:
        if not hasattr(self, "table"):
            return
        assert len(self.table._cache) <= self.table._cache_size
        assert len(self.table) == len(self.model)
        for subject, (tokens, cached) in self.table._cache.items():
            assert cached == self.table._scan(tokens), subject


CachedTableMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
test_cached_table_equals_uncached_scan = CachedTableMachine.TestCase


def test_reply_subjects_of_one_parent_resolve_once_unless_a_subscription_tells_them_apart() -> None:
    table: SubjectTable[str] = SubjectTable()
    table.add("_INBOX.n1.>", "inbox")
    table.add("_INBOX.*.*", "any")
    assert table.match("_INBOX.n1.1").plain == ("inbox", "any")
    assert table.match("_INBOX.n1.2") is table.match("_INBOX.n1.3"), "one resolution per parent"
    assert table.match("_INBOX.n1").plain == (), "the parent itself is a different subject"
    with pytest.raises(InvalidSubject):
        table.match("_INBOX.n1.bad token")
    table.add("*.*.7", "seven")  # a literal last token: subjects under one parent differ now
    assert table.match("_INBOX.n1.7").plain == ("inbox", "any", "seven")
    assert table.match("_INBOX.n1.8").plain == ("inbox", "any")
    table.remove("*.*.7", "seven")
    table.add("_INBOX.n1.9", "exact")
    assert table.match("_INBOX.n1.9").plain == ("inbox", "any", "exact")
    assert table.match("_INBOX.n1.10").plain == ("inbox", "any")
    table.remove("_INBOX.n1.9", "exact")
    assert table.match("_INBOX.n1.9").plain == ("inbox", "any")


_patterns = st.tuples(
    st.sampled_from(["_INBOX", "*", ">"]),
    st.lists(st.sampled_from(["n1", "n2", "7", "*"]), max_size=2),
    st.sampled_from(["7", "1", "*", ">", "n1"]),
).map(lambda t: [t[0], *t[1], t[2]])


@settings(max_examples=400, deadline=None)
@given(
    patterns=st.lists(_patterns, max_size=5),
    corrs=st.lists(st.sampled_from(["1", "2", "7", "n1"]), min_size=1, max_size=6),
    parents=st.sampled_from(["_INBOX.n1", "_INBOX.n2", "_INBOX.n1.7"]),
    unless=st.sampled_from([None, "_INBOX.n1.7", "_INBOX.n2.1"]),
)
def test_reply_subject_fast_path_agrees_with_the_reference(
    patterns: list[list[str]], corrs: list[str], parents: str, unless: str | None
) -> None:
    table: SubjectTable[int] = SubjectTable()
    for i, tokens in enumerate(patterns):
        pattern = ".".join(tokens)
        try:
            validate_pattern(pattern)
        except InvalidSubject:
            continue
        table.add(pattern, i, unless=unless if i % 2 else None)
    for corr in corrs:
        subject = f"{parents}.{corr}"
        assert table.match(subject) == table._scan(tuple(subject.split("."))), subject
