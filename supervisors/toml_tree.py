"""Supervision trees from the ``[[supervisor]]`` tables of a deployment file.

::

    [[supervisor]]
    name = "core"
    strategy = "one_for_one"        # one_for_all, rest_for_one, simple_one_for_one
    max_restarts = 3
    within = 5.0
    backoff = { initial = 0.01, factor = 2.0, max = 1.0, jitter = 0.2 }   # optional
    restart = "permanent"           # as a child of another supervisor (optional)
    shutdown = 30.0                 # optional

      [[supervisor.child]]          # children start in this order
      class = "agents:Gemini"
      subject = "core.gemini"
      restart = "permanent"         # optional; also args, kwargs, capacity, ...
      shutdown = 5.0

      [[supervisor.child]]
      supervisor = "workers"        # nests the [[supervisor]] named "workers" here

A supervisor no other one nests is a root; roots start in file order.
Parsing checks the shape and the references (unknown, nested twice, cycles)
without importing anything; :func:`build_trees` then loads the classes and
builds the same :class:`Supervisor` objects Python code would write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from synaptic_mesh.runtime.errors import DeploymentError
from synaptic_mesh.runtime.toml_tables import (
    ActorSpec,
    check_keys,
    optional,
    parse_actor_table,
    required,
)
from synaptic_mesh.supervisors.spec import RESTART_TYPES, STRATEGIES, Backoff, Supervisor, child

SUPERVISOR_KEYS: Final = (
    "backoff",
    "child",
    "max_restarts",
    "name",
    "restart",
    "shutdown",
    "strategy",
    "within",
)
CHILD_EXTRA_KEYS: Final = ("restart", "shutdown")
BACKOFF_KEYS: Final = ("factor", "initial", "jitter", "max")


@dataclass(frozen=True)
class ActorChildTable:
    """An actor ``[[supervisor.child]]``: the actor table plus restart and shutdown."""

    actor: ActorSpec
    restart: str
    shutdown: float


@dataclass(frozen=True)
class SupervisorTable:
    """One parsed ``[[supervisor]]`` table; nested supervisors by name."""

    name: str
    strategy: str
    max_restarts: int
    within: float
    backoff: Backoff | None
    restart: str
    shutdown: float
    children: tuple[ActorChildTable | str, ...]


def parse_supervisors(file: Path, tables: Any) -> tuple[SupervisorTable, ...]:
    """Validate the ``[[supervisor]]`` array; returns the tables in file order."""
    if not isinstance(tables, list):
        raise DeploymentError(
            f"{file}: 'supervisor' must be an array of tables; write [[supervisor]]"
        )
    parsed = tuple(_parse_supervisor(file, i, t) for i, t in enumerate(tables, start=1))
    _check_references(file, parsed)
    return parsed


def _parse_supervisor(file: Path, index: int, table: Any) -> SupervisorTable:
    where = f"[[supervisor]] #{index}"
    if not isinstance(table, dict):
        raise DeploymentError(f"{file}: {where} must be a table")
    name = required(file, where, table, "name", str)
    where = f"[[supervisor]] {name!r}"
    check_keys(file, where, table, SUPERVISOR_KEYS)
    strategy = optional(file, where, table, "strategy", str) or "one_for_one"
    _choice(file, where, "strategy", strategy, STRATEGIES)
    restart = optional(file, where, table, "restart", str) or "permanent"
    _choice(file, where, "restart", restart, RESTART_TYPES)
    max_restarts = optional(file, where, table, "max_restarts", int)
    within = _number(file, where, table, "within")
    shutdown = _number(file, where, table, "shutdown")
    children = table.get("child", [])
    if not isinstance(children, list):
        raise DeploymentError(
            f"{file}: {where}: 'child' must be an array; write [[supervisor.child]]"
        )
    return SupervisorTable(
        name=name,
        strategy=strategy,
        max_restarts=3 if max_restarts is None else max_restarts,
        within=5.0 if within is None else within,
        backoff=_backoff(file, where, table),
        restart=restart,
        shutdown=30.0 if shutdown is None else shutdown,
        children=tuple(
            _parse_child(file, f"{where} child #{n}", c) for n, c in enumerate(children, start=1)
        ),
    )


def _parse_child(file: Path, where: str, table: Any) -> ActorChildTable | str:
    if not isinstance(table, dict):
        raise DeploymentError(f"{file}: {where} must be a table")
    if "supervisor" in table:
        check_keys(file, where, table, ("supervisor",))
        return required(file, where, table, "supervisor", str)
    subject = required(file, where, table, "subject", str)
    actor_table = {k: v for k, v in table.items() if k not in CHILD_EXTRA_KEYS}
    actor = parse_actor_table(file, f"{where} ({subject})", actor_table, subject)
    restart = optional(file, where, table, "restart", str) or "permanent"
    _choice(file, where, "restart", restart, RESTART_TYPES)
    shutdown = _number(file, where, table, "shutdown")
    return ActorChildTable(actor, restart, 5.0 if shutdown is None else shutdown)


def _backoff(file: Path, where: str, table: dict[str, Any]) -> Backoff | None:
    value = optional(file, where, table, "backoff", dict)
    if value is None:
        return None
    check_keys(file, f"{where} backoff", value, BACKOFF_KEYS)
    numbers = {key: _number(file, f"{where} backoff", value, key) for key in BACKOFF_KEYS}
    try:
        return Backoff(**{k: v for k, v in numbers.items() if v is not None})
    except ValueError as exc:
        raise DeploymentError(f"{file}: {where}: {exc}") from None


def _number(file: Path, where: str, table: dict[str, Any], key: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or value < 0:
        raise DeploymentError(f"{file}: {where} {key} must be a number >= 0, not {value!r}")
    return float(value)


def _choice(file: Path, where: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise DeploymentError(
            f"{file}: {where} {key} = {value!r}: choose one of {', '.join(allowed)}"
        )


def _check_references(file: Path, tables: tuple[SupervisorTable, ...]) -> None:
    names = [t.name for t in tables]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DeploymentError(f"{file}: [[supervisor]] names used twice: {', '.join(duplicates)}")
    nested_in: dict[str, str] = {}
    for table in tables:
        for item in table.children:
            if not isinstance(item, str):
                continue
            if item not in names:
                raise DeploymentError(
                    f"{file}: [[supervisor]] {table.name!r} nests unknown supervisor {item!r}"
                )
            if item in nested_in:
                raise DeploymentError(
                    f"{file}: [[supervisor]] {item!r} is nested twice "
                    f"(in {nested_in[item]!r} and {table.name!r})"
                )
            nested_in[item] = table.name
    if tables and len(nested_in) == len(tables):
        raise DeploymentError(f"{file}: [[supervisor]] tables nest each other in a cycle")
    for start in names:  # a cycle below some root would make that root's tree infinite
        seen, current = {start}, start
        while current in nested_in:
            current = nested_in[current]
            if current in seen:
                raise DeploymentError(
                    f"{file}: [[supervisor]] tables nest each other in a cycle through {current!r}"
                )
            seen.add(current)


def build_trees(
    tables: tuple[SupervisorTable, ...], load_class: Callable[[str], type]
) -> list[Supervisor]:
    """The root :class:`Supervisor` specs, classes loaded with ``load_class``."""
    by_name = {t.name: t for t in tables}
    nested = {item for t in tables for item in t.children if isinstance(item, str)}

    def build(table: SupervisorTable) -> Supervisor:
        children = []
        for item in table.children:
            if isinstance(item, str):
                children.append(build(by_name[item]))
                continue
            actor = item.actor
            children.append(
                child(
                    load_class(actor.class_path),
                    actor.subject,
                    restart=item.restart,  # type: ignore[arg-type]
                    shutdown=item.shutdown,
                    args=actor.args,
                    kwargs=actor.kwargs,
                    capacity=actor.capacity,
                    overflow=actor.overflow,
                    concurrency=actor.concurrency,
                )
            )
        return Supervisor(
            table.name,
            strategy=table.strategy,  # type: ignore[arg-type]
            max_restarts=table.max_restarts,
            within=table.within,
            backoff=table.backoff,
            children=children,
            restart=table.restart,  # type: ignore[arg-type]
            shutdown=table.shutdown,
        )

    try:
        return [build(t) for t in tables if t.name not in nested]
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"[[supervisor]]: {exc}") from None
