"""``@on`` and ``@subscribe``: how an actor declares what it handles.

The decorators only mark methods; :func:`build_handler_table` reads the marks
once per class (from ``AgentActor.__init_subclass__``), so dispatching a
message is one dict lookup by the message's class.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from synaptic_mesh.runtime.subjects import validate_pattern

F = TypeVar("F", bound=Callable[..., Any])

ON_ATTR = "__mesh_on__"
SUBSCRIBE_ATTR = "__mesh_subscribe__"


def on(*message_types: type) -> Callable[[F], F]:
    """Mark a method as the handler of ``message_types``.

    The method receives the message; for an ask, its return value is the
    reply and an exception it raises reaches the asker as ``RemoteError``.
    On ``AgentActor`` the method must be ``async def``; on
    ``ThreadedAgentActor`` it must be a plain ``def`` (it runs in a thread).
    """
    if not message_types or not all(isinstance(t, type) for t in message_types):
        raise TypeError("@on needs at least one message class, e.g. @on(Verify)")

    def mark(fn: F) -> F:
        existing: tuple[type, ...] = getattr(fn, ON_ATTR, ())
        setattr(fn, ON_ATTR, existing + message_types)
        return fn

    return mark


@dataclass(frozen=True)
class SubscriptionSpec:
    """One ``@subscribe`` mark: the pattern, optional queue group, method name."""

    pattern: str
    queue: str | None
    method: str


def subscribe(pattern: str, *, queue: str | None = None) -> Callable[[F], F]:
    """Mark a method to receive what is published on subjects matching ``pattern``.

    ``*`` matches one token and ``>`` the rest, as in NATS. With ``queue``,
    the actors subscribed under that queue name share the messages (each goes
    to one of them). The subscription lives as long as the actor.
    """
    validate_pattern(pattern)

    def mark(fn: F) -> F:
        existing: tuple[tuple[str, str | None], ...] = getattr(fn, SUBSCRIBE_ATTR, ())
        setattr(fn, SUBSCRIBE_ATTR, (*existing, (pattern, queue)))
        return fn

    return mark


def build_handler_table(
    cls: type, *, want_async: bool
) -> tuple[dict[type, Callable[..., Any]], tuple[SubscriptionSpec, ...]]:
    """Collect ``@on`` and ``@subscribe`` marks of ``cls`` and its bases.

    A subclass's method overrides a base's handler for the same message class.
    Raises ``TypeError`` when a handler's kind (async or not) does not suit
    the actor class, at class creation rather than at the first message.
    """
    table: dict[type, Callable[..., Any]] = {}
    subscriptions: dict[tuple[str, str | None, str], SubscriptionSpec] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            fn = getattr(cls, name, None)
            types = getattr(attr, ON_ATTR, ())
            subs = getattr(attr, SUBSCRIBE_ATTR, ())
            if not types and not subs:
                continue
            _check_kind(cls, name, fn, want_async)
            for message_type in types:
                table[message_type] = fn  # type: ignore[assignment]
            for pattern, queue in subs:
                subscriptions[(pattern, queue, name)] = SubscriptionSpec(pattern, queue, name)
    return table, tuple(subscriptions.values())


def _check_kind(cls: type, name: str, fn: Any, want_async: bool) -> None:
    is_async = inspect.iscoroutinefunction(fn)
    if want_async and not is_async:
        raise TypeError(
            f"{cls.__qualname__}.{name} handles messages on the event loop and must be "
            f"'async def' (use ThreadedAgentActor for blocking code)"
        )
    if not want_async and is_async:
        raise TypeError(
            f"{cls.__qualname__}.{name} runs in a worker thread and must be a plain 'def'"
        )


def lookup_handler(table: dict[type, Callable[..., Any]], message_type: type) -> Any:
    """Find the handler for ``message_type`` through its MRO, caching the answer."""
    for base in message_type.__mro__:
        handler = table.get(base)
        if handler is not None:
            table[message_type] = handler
            return handler
    return None
