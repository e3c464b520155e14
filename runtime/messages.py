"""``@message``: the dataclasses that may travel between actors.

Decoding constructs only classes registered here, by name, never by import
path and never with pickle, so a frame off the wire cannot make the process
build an arbitrary object. The registry maps a wire name to its class; the
default name is the class's ``__qualname__``; ``@message(name="verify.v1")``
chooses another (recommended for messages shared with other languages).

Messages are passed by reference in process: treat them as immutable once
sent, as Akka asks. ``@message(frozen=True)`` makes that a rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, overload

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type] = {}
MESSAGE_NAME_ATTR = "__mesh_message_name__"


class MessageRegistrationError(TypeError):
    """Two different classes claim one wire name."""


@overload
def message(cls: T, /) -> T: ...
@overload
def message(*, name: str | None = None, frozen: bool = False) -> Callable[[T], T]: ...


def message(cls: type | None = None, /, *, name: str | None = None, frozen: bool = False) -> Any:
    """Make ``cls`` a dataclass and register it as a message type.

    Raises :class:`MessageRegistrationError` when another class (from another
    module) already holds the name; re-registering the same module and
    qualified name (a module reload) replaces the entry.
    """

    def wrap(klass: type) -> type:
        data_cls = (
            klass
            if dataclasses.is_dataclass(klass)
            else dataclasses.dataclass(frozen=frozen, slots=False)(klass)
        )
        wire_name = name or data_cls.__qualname__
        register(data_cls, wire_name)
        return data_cls

    if cls is not None:
        return wrap(cls)
    return wrap


def register(cls: type, wire_name: str) -> None:
    """Register a dataclass under ``wire_name`` (see :func:`message`)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__qualname__} is not a dataclass; decorate it with @message")
    if not wire_name or wire_name.startswith(" "):
        raise MessageRegistrationError(f"invalid message name {wire_name!r}")
    existing = _REGISTRY.get(wire_name)
    if (
        existing is not None
        and existing is not cls
        and (existing.__module__ != cls.__module__ or existing.__qualname__ != cls.__qualname__)
    ):
        raise MessageRegistrationError(
            f"message name {wire_name!r} is taken by {existing.__module__}."
            f"{existing.__qualname__}; give {cls.__module__}.{cls.__qualname__} "
            f"another with @message(name=...)"
        )
    _REGISTRY[wire_name] = cls
    setattr(cls, MESSAGE_NAME_ATTR, wire_name)


def lookup(wire_name: str) -> type | None:
    """The class registered under ``wire_name``, or ``None``."""
    return _REGISTRY.get(wire_name)


def name_of(cls: type) -> str | None:
    """The wire name of a registered message class, or ``None``."""
    return cls.__dict__.get(MESSAGE_NAME_ATTR)


def is_message(obj: object) -> bool:
    """Whether ``obj`` is an instance of a registered message class."""
    return MESSAGE_NAME_ATTR in type(obj).__dict__
