"""``[[route]]`` and ``[[bridge]]`` tables: a hybrid node's routes table in a deployment file.

::

    [node]
    transport = "nats://127.0.0.1:4222"      # the default route

    [[route]]                                 # first match wins, in file order
    subjects = ["photogrammetry.>"]           # one pattern or a list
    transport = "shm:///tmp/mesh"
    min_size = 1048576                        # optional: only messages this big or bigger
    when_served = true                        # optional: only when a node there serves it

    [[bridge]]                                # republish source's traffic on target
    subjects = ["core.>"]
    source = "tcp://127.0.0.1:7001?peers=127.0.0.1:7002"
    target = "nats://127.0.0.1:4222"

Transports are named by URL; the same URL in several tables is one
transport. See :mod:`synaptic_mesh.runtime.hybrid` for what the rules do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from synaptic_mesh.runtime.errors import DeploymentError
from synaptic_mesh.runtime.hybrid import Bridge, Route
from synaptic_mesh.runtime.subjects import InvalidSubject
from synaptic_mesh.runtime.toml_tables import check_keys, kind_of, optional, required

ROUTE_KEYS: Final = ("min_size", "subjects", "transport", "when_served")
BRIDGE_KEYS: Final = ("source", "subjects", "target")


def parse_routes(
    file: Path, tables: Any, check_transport: Callable[[Path, str, str], None]
) -> tuple[Route, ...]:
    """The ``[[route]]`` tables, in file order."""
    routes = []
    for i, table in enumerate(_tables(file, "route", tables), 1):
        where = f"[[route]] #{i}"
        check_keys(file, where, table, ROUTE_KEYS)
        url = required(file, where, table, "transport", str)
        check_transport(file, f"{where} transport", url)
        min_size = optional(file, where, table, "min_size", int) or 0
        when_served = optional(file, where, table, "when_served", bool) or False
        subjects = _subjects(file, where, table)
        routes.append(_build(file, where, Route, subjects, url, min_size, when_served))
    return tuple(routes)


def parse_bridges(
    file: Path, tables: Any, check_transport: Callable[[Path, str, str], None]
) -> tuple[Bridge, ...]:
    """The ``[[bridge]]`` tables, in file order."""
    bridges = []
    for i, table in enumerate(_tables(file, "bridge", tables), 1):
        where = f"[[bridge]] #{i}"
        check_keys(file, where, table, BRIDGE_KEYS)
        source = required(file, where, table, "source", str)
        target = required(file, where, table, "target", str)
        check_transport(file, f"{where} source", source)
        check_transport(file, f"{where} target", target)
        bridges.append(_build(file, where, Bridge, _subjects(file, where, table), source, target))
    return tuple(bridges)


def _tables(file: Path, name: str, tables: Any) -> list[dict[str, Any]]:
    if tables is None:
        return []
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise DeploymentError(f"{file}: '{name}' must be an array of tables ([[{name}]])")
    return tables


def _subjects(file: Path, where: str, table: dict[str, Any]) -> tuple[str, ...]:
    if "subjects" not in table:
        raise DeploymentError(f"{file}: {where} has no 'subjects' key; it is required")
    value = table["subjects"]
    patterns = [value] if isinstance(value, str) else value
    if (
        not isinstance(patterns, list)
        or not patterns
        or not all(isinstance(p, str) for p in patterns)
    ):
        raise DeploymentError(
            f"{file}: {where} subjects must be a pattern or a non-empty array of patterns, "
            f"not {kind_of(value)} ({value!r})"
        )
    return tuple(patterns)


def _build(file: Path, where: str, cls: type, *args: Any) -> Any:
    try:
        return cls(*args)
    except (InvalidSubject, ValueError) as exc:
        raise DeploymentError(f"{file}: {where}: {exc}") from None
