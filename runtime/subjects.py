"""Subjects, patterns and the routing table every transport resolves them with.

Synaptic Mesh follows the NATS subject model (DESIGN.md section 3), so these
rules are NATS's, written down once:

* A *subject* is what a message is published on: dot-separated tokens such as
  ``core.claude`` or ``_INBOX.node1.42``. Tokens are non-empty and contain no
  whitespace (and, being split on ``.``, no dot).
* A *pattern* is what is subscribed to. It may use ``*`` as a whole token (it
  matches exactly one token) and ``>`` as the last whole token (it matches one
  or more remaining tokens, so ``foo.>`` matches ``foo.a.b`` but not ``foo``).

One choice goes beyond NATS: ``*`` and ``>`` may not appear *inside* a token
(``foo*``), neither in a pattern nor in a subject. NATS would treat ``foo*`` in
a subject as a literal, but the same text means a glob to Redis and a routing
key wildcard to RabbitMQ, so rejecting it here keeps every transport agreeing.

:class:`SubjectTable` is the structure transports and the link router resolve a
published subject with; see its docstring for the caching and queue-group rules.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from .errors import MeshError

# fmt: off
__all__ = [
    "DEFAULT_CACHE_SIZE", "FULL_WILDCARD", "MAX_SUBJECT_LENGTH", "ONE_TIME_PREFIX",
    "SINGLE_WILDCARD",
    "InvalidSubject", "Match", "SubjectTable",
    "is_pattern", "matches", "validate_pattern", "validate_subject",
]
# fmt: on

T = TypeVar("T")

MAX_SUBJECT_LENGTH: Final = 1024
"""Longest subject or pattern accepted, in characters (brokers cap it too)."""

SINGLE_WILDCARD: Final = "*"
FULL_WILDCARD: Final = ">"

DEFAULT_CACHE_SIZE: Final = 10_000
ONE_TIME_PREFIX: Final = "_INBOX."
"""Subjects under this prefix are reply inboxes, each serving one ask or survey (as in
NATS): they get a small cache of their own instead of the main one."""
ONE_TIME_CACHE_SIZE: Final = 256
"""Concrete subjects a :class:`SubjectTable` remembers before starting over."""

_WHITESPACE: Final = re.compile(r"\s")


class InvalidSubject(MeshError, ValueError):
    """A subject or pattern breaks the syntax rules; the message says which rule.

    A :class:`ValueError` (it is a bad argument) and a ``MeshError`` (so one
    ``except MeshError`` still catches everything the runtime raises on purpose).
    ``subject`` is the offending text and ``reason`` the explanation alone.
    """

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(reason)
        self.subject = subject
        self.reason = reason


def _split(text: str, kind: str, wildcards: bool) -> tuple[str, ...]:
    """Check ``text`` as a subject or (``wildcards``) a pattern; return its tokens.

    Shared by both validators so the rules and messages cannot drift apart, and
    returns the tokens so :meth:`SubjectTable.add` splits only once.
    """
    if not isinstance(text, str):
        raise TypeError(f"{kind} must be a str, got {type(text).__name__}: {text!r}")
    if not text:
        raise InvalidSubject(text, f"{kind} must not be empty")
    if len(text) > MAX_SUBJECT_LENGTH:
        raise InvalidSubject(
            text,
            f"{kind} is {len(text)} characters long, over the limit of "
            f"{MAX_SUBJECT_LENGTH}: {text[:40]!r}...",
        )
    tokens = tuple(text.split("."))
    # Fast path, taken by nearly every subject and literal pattern: no wildcard
    # character, no empty token, no whitespace. Checked on the whole text at
    # once (a few C-level scans) instead of token by token; anything else goes
    # through the loop below, which finds the rule broken and says which.
    if (
        SINGLE_WILDCARD not in text
        and FULL_WILDCARD not in text
        and "" not in tokens
        and _WHITESPACE.search(text) is None
    ):
        return tokens
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if not token:
            raise InvalidSubject(
                text, f"{kind} {text!r} has an empty token (leading, trailing or doubled '.')"
            )
        if _WHITESPACE.search(token):
            raise InvalidSubject(text, f"token {token!r} of {kind} {text!r} contains whitespace")
        if token in (SINGLE_WILDCARD, FULL_WILDCARD):
            if not wildcards:
                raise InvalidSubject(
                    text,
                    f"{kind} {text!r} contains the wildcard {token!r}; wildcards are only "
                    "allowed in subscription patterns",
                )
            if token == FULL_WILDCARD and i != last:
                raise InvalidSubject(
                    text, f"'>' must be the last token of {kind} {text!r}, found at token {i + 1}"
                )
        elif SINGLE_WILDCARD in token or FULL_WILDCARD in token:
            raise InvalidSubject(
                text,
                f"token {token!r} of {kind} {text!r} mixes a wildcard with other characters; "
                "'*' and '>' must stand alone as a whole token",
            )
    return tokens


def validate_subject(subject: str) -> str:
    """Return ``subject`` unchanged if it is publishable, else raise :class:`InvalidSubject`."""
    _split(subject, "subject", wildcards=False)
    return subject


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` unchanged if it can be subscribed to, else raise :class:`InvalidSubject`.

    Every valid subject is also a valid pattern (one that matches only itself).
    """
    _split(pattern, "pattern", wildcards=True)
    return pattern


def is_pattern(s: str) -> bool:
    """Whether ``s`` (assumed valid) contains a wildcard token, i.e. can match many subjects."""
    return any(t in (SINGLE_WILDCARD, FULL_WILDCARD) for t in s.split("."))


def _match_tokens(pattern: tuple[str, ...], subject: tuple[str, ...]) -> bool:
    """Match pre-split tokens; the one loop both :func:`matches` and the table run."""
    n = len(pattern)
    if pattern[-1] == FULL_WILDCARD:
        if len(subject) < n:  # '>' needs at least one token of its own
            return False
        n -= 1
    elif len(subject) != n:
        return False
    for i in range(n):
        p = pattern[i]
        if p != SINGLE_WILDCARD and p != subject[i]:
            return False
    return True


def matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` is delivered to a subscription on ``pattern``.

    Pure and unchecked: both arguments are assumed valid (validate at the
    boundary, where the user hands them in, not on every message).
    """
    if pattern == subject:
        return True
    return _match_tokens(tuple(pattern.split(".")), tuple(subject.split(".")))


@dataclass(frozen=True, slots=True)
class Match(Generic[T]):
    """Everything one concrete subject resolves to; immutable so it can be cached and shared.

    ``plain``: every subscriber without a queue group whose pattern matches, in
    subscription order. ``groups``: for each queue group with at least one
    matching member, those members in subscription order; groups are ordered by
    their first matching subscription. ``queues``: the queue name of each entry
    of ``groups``, at the same index (the link router forwards it to peers).
    """

    plain: tuple[T, ...] = ()
    groups: tuple[tuple[T, ...], ...] = ()
    queues: tuple[str, ...] = ()
    fixed: tuple[T, ...] | None = field(init=False, repr=False, compare=False)
    """The recipients of every message when no group has a choice to make (each has one
    member, the common case of an actor's own queue group), else ``None``: then
    :meth:`SubjectTable.pick` returns it without a round-robin step."""
    sole: tuple[T, tuple[str, ...]] | None = field(init=False, repr=False, compare=False)
    """The one recipient, with the queue groups to name when forwarding to it, when there
    is exactly one: one plain subscriber, or one queue group of one member (an actor's
    own subject); else ``None``. The link router's common case."""

    def __post_init__(self) -> None:
        fixed = sole = None
        if not self.groups:
            fixed = self.plain
            if len(self.plain) == 1:
                sole = (self.plain[0], ())
        elif all(len(members) == 1 for members in self.groups):
            fixed = self.plain + tuple(members[0] for members in self.groups)
            if not self.plain and len(self.groups) == 1:
                sole = (self.groups[0][0], self.queues)
        object.__setattr__(self, "fixed", fixed)
        object.__setattr__(self, "sole", sole)

    def __bool__(self) -> bool:
        """True when at least one subscriber receives the message."""
        return bool(self.plain or self.groups)


@dataclass(frozen=True, slots=True)
class _Subscription(Generic[T]):
    """One held subscription; ``seq`` is its place in subscription order.

    ``tokens`` is the split pattern for a wildcard pattern and ``()`` for a
    literal one, which is found by its text and never token-matched (a node
    holds one literal subscription per actor: not keeping their tokens saves
    a tuple and a string per token each).
    """

    pattern: str
    tokens: tuple[str, ...]
    item: T
    queue: str | None
    seq: int
    unless: str | None = None
    """A concrete subject the pattern matches but this subscription does not take."""


class SubjectTable(Generic[T]):
    """Subscriptions (pattern, item, optional queue group) and who gets a subject.

    Items are whatever the owner routes to: handlers for the in-process
    transport, peer links for the router. Semantics are NATS's:

    * The same ``(pattern, item, queue)`` added twice is held twice, as two NATS
      subscriptions would be, and is delivered twice; :meth:`remove` drops one
      (the earliest).
    * A queue group is identified by its queue name alone; members may subscribe
      with different patterns, and a message goes to one member among those
      whose pattern matches. :meth:`pick` chooses round-robin per queue name, so
      work is spread evenly and tests are deterministic.

    :meth:`match` runs on every publish, so results are cached per concrete
    subject. A subscribe or unsubscribe drops only the cached subjects its
    pattern matches: an actor joining ``tot.>`` leaves ``core.*`` traffic warm,
    and the many short-lived ``_INBOX.*`` reply subscriptions, which are literal
    subjects, cost one dict pop. The cache is bounded (``cache_size``); when full
    it is cleared rather than tracked LRU, which keeps hits a single dict lookup.

    Literal patterns (every actor's own subject, reply inboxes) are indexed by
    their text and wildcard patterns kept apart, so a cache miss costs one dict
    lookup plus a linear scan over the wildcard patterns only, and adding or
    removing a subscription does not depend on how many are held: a node with
    100k actors subscribes and unsubscribes each in constant time.
    """

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._cache_size = cache_size
        self._seq = itertools.count()
        # literal pattern -> its subscriptions, in subscription order
        self._exact: dict[str, list[_Subscription[T]]] = {}
        # seq -> wildcard subscription; dicts keep insertion (= subscription) order
        self._wild: dict[int, _Subscription[T]] = {}
        self._count = 0
        self._members: dict[str, int] = {}  # queue name -> subscriptions in that group
        # subject -> (its tokens, for invalidation without re-splitting; its Match)
        self._cache: dict[str, tuple[tuple[str, ...], Match[T]]] = {}
        # reply subjects (ONE_TIME_PREFIX): a small cache of their own, emptied by any change,
        # and, while no subscription tells their last tokens apart, one result per parent
        self._once: dict[str, Match[T]] = {}
        self._once_parents: dict[str, Match[T]] = {}  # parent subject -> its children's Match
        self._one_time_guards = 0  # subscriptions that could tell two reply subjects apart
        self._turns: dict[str, int] = {}  # queue name -> messages picked so far

    def __len__(self) -> int:
        """Number of subscriptions held, duplicates included."""
        return self._count

    def add(
        self, pattern: str, item: T, queue: str | None = None, *, unless: str | None = None
    ) -> None:
        """Subscribe ``item`` to ``pattern``, in queue group ``queue`` if given.

        ``unless``: one concrete subject ``item`` does not get although the
        pattern matches it (a bus member's own sends): :meth:`match` leaves it
        out, so a publish there does not count ``item`` among its recipients.
        Raises :class:`InvalidSubject` for a bad pattern, and for a queue name
        that is empty or holds whitespace (NATS rejects those too).
        """
        tokens = _split(pattern, "pattern", wildcards=True)
        if unless is not None:
            _split(unless, "subject", wildcards=False)
        self._once.clear()
        self._once_parents.clear()
        if queue is not None and (not queue or _WHITESPACE.search(queue)):
            raise InvalidSubject(
                queue, f"queue name {queue!r} must be non-empty without whitespace"
            )
        seq = next(self._seq)
        if _guards_one_time(pattern, tokens) or _unless_one_time(unless):
            self._one_time_guards += 1
        if SINGLE_WILDCARD in tokens or FULL_WILDCARD in tokens:
            self._wild[seq] = _Subscription(pattern, tokens, item, queue, seq, unless)
            self._invalidate(pattern, tokens)
        else:
            sub = _Subscription(pattern, (), item, queue, seq, unless)
            held = self._exact.get(pattern)
            if held is None:
                self._exact[pattern] = [sub]
            else:
                held.append(sub)
            self._cache.pop(pattern, None)
        self._count += 1
        if queue is not None:
            self._members[queue] = self._members.get(queue, 0) + 1

    def remove(self, pattern: str, item: T, queue: str | None = None) -> bool:
        """Drop one subscription equal to ``(pattern, item, queue)``; False if none is held.

        Items compare with ``==`` (after ``is``), so a bound method fetched again
        from its object removes the subscription made with an earlier fetch.
        When several are equal, the earliest goes.
        """
        held = self._exact.get(pattern)
        if held is not None:
            candidates: list[_Subscription[T]] = held
        else:
            candidates = [s for s in self._wild.values() if s.pattern == pattern]
        for sub in candidates:
            if sub.queue == queue and (sub.item is item or sub.item == item):
                break
        else:
            return False
        self._once.clear()
        self._once_parents.clear()
        if _guards_one_time(pattern, sub.tokens or (ONE_TIME_FIRST,)) or _unless_one_time(
            sub.unless
        ):
            self._one_time_guards -= 1
        if held is not None:
            held.remove(sub)
            if not held:
                del self._exact[pattern]
            self._cache.pop(pattern, None)
        else:
            del self._wild[sub.seq]
            self._invalidate(pattern, sub.tokens)
        self._count -= 1
        if queue is not None:
            left = self._members[queue] - 1
            if left:
                self._members[queue] = left
            else:  # group gone: a new one starts fresh
                del self._members[queue]
                self._turns.pop(queue, None)
        return True

    def clear(self) -> None:
        """Drop every subscription, cached result and round-robin position."""
        self._exact.clear()
        self._wild.clear()
        self._count = 0
        self._members.clear()
        self._cache.clear()
        self._once.clear()
        self._once_parents.clear()
        self._one_time_guards = 0
        self._turns.clear()

    def match(self, subject: str) -> Match[T]:
        """Everyone whose pattern matches the concrete ``subject``.

        A cache hit is one dict lookup; only a miss validates ``subject``
        (raising :class:`InvalidSubject`), so bad subjects never enter the cache.
        """
        entry = self._cache.get(subject)
        if entry is not None:
            return entry[1]
        once = self._once.get(subject)
        if once is not None:
            return once
        if not self._one_time_guards and subject.startswith(ONE_TIME_PREFIX):
            # ``_INBOX.<node>.<corr>``: every subscription ends in a wildcard there, so
            # all subjects under one parent resolve alike; the parent was checked when
            # it was first resolved, the last token is checked here
            parent, _, last = subject.rpartition(".")
            found = self._once_parents.get(parent)
            if (
                found is not None
                and (last.isalnum() or _plain_token(last))  # a corr is digits: no regex
                and len(subject) <= MAX_SUBJECT_LENGTH
            ):
                # remembered too: a survey's votes all come back on one reply subject
                if len(self._once) >= ONE_TIME_CACHE_SIZE:
                    self._once.clear()
                self._once[subject] = found
                return found
            tokens = _split(subject, "subject", wildcards=False)
            result = self._scan(tokens)
            if len(self._once_parents) >= ONE_TIME_CACHE_SIZE:
                self._once_parents.clear()
            self._once_parents[parent] = result
            return result
        tokens = _split(subject, "subject", wildcards=False)
        result = self._scan(tokens)
        if subject.startswith(ONE_TIME_PREFIX):
            # a reply subject serves one ask (or one survey's votes): kept apart, so that the
            # stream of them never evicts the subjects that repeat
            if len(self._once) >= ONE_TIME_CACHE_SIZE:
                self._once.clear()
            self._once[subject] = result
            return result
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[subject] = (tokens, result)
        return result

    def pick(self, subject: str) -> tuple[T, ...]:
        """The recipients of one message: all plain subscribers, then one member per group.

        Each call advances the chosen groups' round-robin position, so call it
        once per message actually delivered.
        """
        m = self.match(subject)
        fixed = m.fixed
        if fixed is not None:
            return fixed
        chosen = list(m.plain)
        for queue, members in zip(m.queues, m.groups, strict=True):
            turn = self._turns.get(queue, 0)
            chosen.append(members[turn % len(members)])
            self._turns[queue] = turn + 1
        return tuple(chosen)

    def is_empty(self, subject: str) -> bool:
        """Whether nobody at all would receive ``subject`` (NATS' "no responders")."""
        return not self.match(subject)

    def _scan(self, tokens: tuple[str, ...]) -> Match[T]:
        """Resolve a subject without the cache: the reference the cache must agree with."""
        subject = ".".join(tokens)
        exact = self._exact.get(subject, ())
        wild = [s for s in self._wild.values() if _match_tokens(s.tokens, tokens)]
        # both kinds matched: merge them back into subscription order
        found = sorted((*exact, *wild), key=_by_seq) if exact and wild else wild or exact
        plain: list[T] = []
        groups: dict[str, list[T]] = {}  # insertion order = first matching subscription
        for sub in found:
            if sub.unless == subject:
                continue
            if sub.queue is None:
                plain.append(sub.item)
            else:
                groups.setdefault(sub.queue, []).append(sub.item)
        return Match(tuple(plain), tuple(tuple(g) for g in groups.values()), tuple(groups))

    def _invalidate(self, pattern: str, tokens: tuple[str, ...]) -> None:
        """Forget the cached subjects a changed ``pattern`` matches, and only those."""
        if SINGLE_WILDCARD not in tokens and FULL_WILDCARD not in tokens:
            self._cache.pop(pattern, None)
            return
        stale = [s for s, (toks, _) in self._cache.items() if _match_tokens(tokens, toks)]
        for s in stale:
            del self._cache[s]


ONE_TIME_FIRST: Final = ONE_TIME_PREFIX.rstrip(".")


def _guards_one_time(pattern: str, tokens: tuple[str, ...]) -> bool:
    """Whether a subscription could tell two reply subjects of one parent apart.

    A literal under ``ONE_TIME_PREFIX``, or a wildcard pattern that could
    reach there (its first token ``_INBOX`` or ``*``) and ends in a literal.
    """
    if SINGLE_WILDCARD not in tokens and FULL_WILDCARD not in tokens:
        return pattern.startswith(ONE_TIME_PREFIX)
    return tokens[0] in (ONE_TIME_FIRST, SINGLE_WILDCARD) and tokens[-1] not in (
        SINGLE_WILDCARD,
        FULL_WILDCARD,
    )


def _unless_one_time(unless: str | None) -> bool:
    """Whether an ``unless`` subject tells one reply subject apart from its siblings."""
    return unless is not None and unless.startswith(ONE_TIME_PREFIX)


def _plain_token(token: str) -> bool:
    """A valid subject token: not empty, no wildcard, no whitespace."""
    return (
        bool(token)
        and SINGLE_WILDCARD not in token
        and FULL_WILDCARD not in token
        and _WHITESPACE.search(token) is None
    )


def _by_seq(sub: _Subscription[T]) -> int:
    return sub.seq
