"""Checks shared by every table of a deployment file, and the actor table itself.

Deployment loading is strict, as a compiler is: each check raises one
:class:`DeploymentError` naming the file, the table and the key at fault.
``[[actor]]`` tables and the actor children of ``[[supervisor]]`` tables
share :func:`parse_actor_table`, so both accept exactly the same keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from synaptic_mesh.actors.mailbox import OVERFLOW_POLICIES
from synaptic_mesh.runtime.errors import DeploymentError
from synaptic_mesh.runtime.subjects import InvalidSubject, is_pattern, validate_pattern

ACTOR_KEYS: Final = ("args", "capacity", "class", "concurrency", "kwargs", "overflow", "subject")
SPAWN_PARAMETERS: Final = ("actor_class", "capacity", "concurrency", "overflow", "subject")
"""Names ``Node.spawn`` keeps for itself, so they cannot reach an actor as kwargs."""


@dataclass(frozen=True)
class ActorSpec:
    """One ``[[actor]]`` table: what to pass to ``Node.spawn``.

    ``args`` is kept as a tuple (the TOML list, made immutable) and ``kwargs``
    as a dict; ``None`` for a mailbox setting means the class's own default.
    """

    class_path: str
    subject: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    capacity: int | None = None
    overflow: str | None = None
    concurrency: int | None = None


def kind_of(value: Any) -> str:
    """The TOML word for a parsed value's type, for messages."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def check_keys(file: Path, where: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        hints = [
            f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)
            for key in unknown
            for close in [difflib.get_close_matches(key, allowed, n=1)]
        ]
        raise DeploymentError(
            f"{file}: {where}: unknown key {', '.join(hints)}; allowed keys: {', '.join(allowed)}"
        )


def optional(file: Path, where: str, table: Mapping[str, Any], key: str, kind: type) -> Any:
    value = table.get(key)
    # bool is an int in Python but not in TOML: `capacity = true` is a type error.
    if value is not None and (not isinstance(value, kind) or (kind is int and type(value) is bool)):
        raise DeploymentError(
            f"{file}: {where} {key} must be {kind_of(kind())}, not {kind_of(value)} ({value!r})"
        )
    return value


def required(file: Path, where: str, table: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in table:
        raise DeploymentError(f"{file}: {where} has no {key!r} key; it is required")
    value = optional(file, where, table, key, kind)
    if kind is str and not value.strip():
        raise DeploymentError(f"{file}: {where} {key} is empty")
    return value


def positive(file: Path, where: str, table: Mapping[str, Any], key: str) -> int | None:
    value = optional(file, where, table, key, int)
    if value is not None and value < 1:
        raise DeploymentError(f"{file}: {where} {key} must be at least 1, got {value}")
    return value


def check_class_path(file: Path, where: str, class_path: str) -> None:
    module, sep, attr = class_path.partition(":")
    if not sep or not module.strip() or not attr.strip() or ":" in attr:
        raise DeploymentError(
            f"{file}: {where} class = {class_path!r}: write it as 'package.module:ClassName'"
        )


def parse_actor_table(
    file: Path,
    where: str,
    table: dict[str, Any],
    subject: str,
    extra_keys: tuple[str, ...] = (),
) -> ActorSpec:
    """Validate one actor table (``[[actor]]`` or an actor ``[[supervisor.child]]``)."""
    check_keys(file, where, table, tuple(sorted(ACTOR_KEYS + extra_keys)))
    class_path = required(file, where, table, "class", str)
    check_class_path(file, where, class_path)
    try:
        validate_pattern(subject)
    except InvalidSubject as exc:
        raise DeploymentError(f"{file}: {where} subject: {exc}") from None
    if is_pattern(subject):
        raise DeploymentError(
            f"{file}: {where} subject {subject!r} contains a wildcard; an actor's "
            f"subject must be one address (subscribe to patterns with @subscribe)"
        )
    args = optional(file, where, table, "args", list) or []
    kwargs = optional(file, where, table, "kwargs", dict) or {}
    taken = sorted(set(kwargs) & set(SPAWN_PARAMETERS))
    if taken:
        raise DeploymentError(
            f"{file}: {where} [actor.kwargs] cannot use {', '.join(map(repr, taken))}: "
            f"Node.spawn takes these itself (set capacity, overflow and concurrency "
            f"in the [[actor]] table)"
        )
    capacity = positive(file, where, table, "capacity")
    concurrency = positive(file, where, table, "concurrency")
    overflow = optional(file, where, table, "overflow", str)
    if overflow is not None and overflow not in OVERFLOW_POLICIES:
        raise DeploymentError(
            f"{file}: {where} overflow = {overflow!r}: choose one of {', '.join(OVERFLOW_POLICIES)}"
        )
    return ActorSpec(
        class_path, subject, tuple(args), dict(kwargs), capacity, overflow, concurrency
    )
