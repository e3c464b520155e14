"""Supervision trees as data: ``Supervisor`` and ``child`` specs.

As in Erlang/OTP, a child spec is data (what to start, under which subject,
its restart type and shutdown time) and a supervisor is a strategy, a restart
intensity (two numbers) and an ordered list of children, some of which may be
supervisors themselves. The same tree can be written in Python or in the
``[[supervisor]]`` tables of a deployment file (:mod:`.toml_tree`).

Restart types (what happens when a child's incarnation ends):

- ``permanent``: always restarted, after a crash and after a normal exit.
- ``transient``: restarted only after a crash (a handler or ``on_restart``
  raised, or it was killed); a normal exit (``self.stop()``) ends it.
- ``temporary``: never restarted; it is removed from the supervisor when it
  ends, and also when a sibling's restart under ``one_for_all`` or
  ``rest_for_one`` stops it.

Strategies (which children are restarted when one must be):

- ``one_for_one``: only that child.
- ``one_for_all``: all children: the others are stopped in reverse start
  order, then all are restarted in start order.
- ``rest_for_one``: that child and the children started after it, stopped
  in reverse order and restarted in order.
- ``simple_one_for_one``: a dynamic pool of children of one spec, added with
  ``start_child`` and removed with ``terminate_child``; restarts are one for one.

Restart intensity: if more than ``max_restarts`` restarts happen within
``within`` seconds, the supervisor stops all its children (reverse order)
and fails; its parent then treats it as a crashed child. A failing root
supervisor stops the node with :class:`SupervisorFailed` naming the chain.

Backoff: ``backoff=None`` restarts at once, as OTP does; a :class:`Backoff`
waits ``initial * factor**(n-1)`` seconds (capped at ``max``, spread by
``jitter``) before the n-th consecutive restart of the same child; the count
starts again once the child has run for ``within`` seconds.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
RESTART_TYPES: Final = get_args(RestartType)
STRATEGIES: Final = get_args(Strategy)

DEFAULT_SHUTDOWN: Final = 5.0
"""Seconds a child gets to finish its message and ``on_stop`` before it is cancelled."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between restarts of one child."""

    initial: float = 0.01
    factor: float = 2.0
    max: float = 5.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(
                f"invalid backoff {self}: initial and max must be >= 0, factor >= 1, "
                f"jitter between 0 and 1"
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the ``attempt``-th consecutive restart (from 1)."""
        base = min(self.max, self.initial * self.factor ** max(attempt - 1, 0))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))


@dataclass(frozen=True)
class ChildSpec:
    """One actor child: its class, subject, restart type and shutdown time."""

    actor_class: type
    subject: str
    restart: RestartType = "permanent"
    shutdown: float = DEFAULT_SHUTDOWN
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    capacity: int | None = None
    overflow: str | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        _check_restart(self.restart, self.subject)
        if self.shutdown < 0:
            raise ValueError(f"child {self.subject!r}: shutdown must be >= 0 seconds")

    @property
    def name(self) -> str:
        return self.subject

    def structure(self) -> tuple[Any, ...]:
        """A plain-data picture of the spec (for comparing trees)."""
        cls = self.actor_class
        return (
            "child",
            f"{cls.__module__}:{cls.__qualname__}",
            self.subject,
            self.restart,
            self.shutdown,
            tuple(self.args),
            tuple(sorted(self.kwargs.items())),
            self.capacity,
            self.overflow,
            self.concurrency,
        )


def child(
    actor_class: type,
    subject: str,
    *,
    restart: RestartType = "permanent",
    shutdown: float = DEFAULT_SHUTDOWN,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    capacity: int | None = None,
    overflow: str | None = None,
    concurrency: int | None = None,
) -> ChildSpec:
    """Spec of an actor child: ``actor_class(*args, **kwargs)`` at ``subject``."""
    return ChildSpec(
        actor_class,
        subject,
        restart,
        shutdown,
        tuple(args),
        dict(kwargs or {}),
        capacity,
        overflow,
        concurrency,
    )


@dataclass(frozen=True, init=False)
class Supervisor:
    """A supervisor spec; a child of another supervisor, or the root of a tree."""

    name: str
    strategy: Strategy
    max_restarts: int
    within: float
    backoff: Backoff | None
    children: tuple[ChildSpec | Supervisor, ...]
    restart: RestartType
    shutdown: float

    def __init__(
        self,
        name: str,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: Backoff | None = None,
        children: Iterable[ChildSpec | Supervisor] = (),
        *,
        restart: RestartType = "permanent",
        shutdown: float = 30.0,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "strategy", strategy)
        set_(self, "max_restarts", max_restarts)
        set_(self, "within", within)
        set_(self, "backoff", backoff)
        set_(self, "children", tuple(children))
        set_(self, "restart", restart)
        set_(self, "shutdown", shutdown)
        self._validate()

    def _validate(self) -> None:
        where = f"supervisor {self.name!r}"
        if not self.name:
            raise ValueError("a supervisor needs a name")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"{where}: unknown strategy {self.strategy!r}; one of {STRATEGIES}")
        if self.max_restarts < 0 or self.within <= 0:
            raise ValueError(f"{where}: max_restarts must be >= 0 and within > 0")
        _check_restart(self.restart, self.name)
        for item in self.children:
            if not isinstance(item, ChildSpec | Supervisor):
                raise TypeError(f"{where}: child {item!r} is neither child(...) nor Supervisor")
        if self.strategy == "simple_one_for_one" and (
            len(self.children) != 1 or not isinstance(self.children[0], ChildSpec)
        ):
            raise ValueError(f"{where}: simple_one_for_one takes exactly one child(...) spec")
        names = [c.name for c in self.walk()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{where}: names used twice in the tree: {', '.join(duplicates)}")

    def walk(self) -> Iterable[ChildSpec | Supervisor]:
        """This supervisor and every spec below it, depth first."""
        yield self
        for item in self.children:
            if isinstance(item, Supervisor):
                yield from item.walk()
            else:
                yield item

    def structure(self) -> tuple[Any, ...]:
        """A plain-data picture of the tree (Python and TOML trees compare equal)."""
        return (
            "supervisor",
            self.name,
            self.strategy,
            self.max_restarts,
            self.within,
            self.backoff,
            self.restart,
            self.shutdown,
            tuple(c.structure() for c in self.children),
        )


def _check_restart(restart: str, name: str) -> None:
    if restart not in RESTART_TYPES:
        raise ValueError(f"{name!r}: unknown restart type {restart!r}; one of {RESTART_TYPES}")
