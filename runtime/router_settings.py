"""Configuration of a routed (link) transport, shared by every link transport's URL.

A link transport parses its URL into :class:`RouterSettings`; keyword options
given to the transport (``Node(transport_options=...)``) override URL query
parameters of the same name, so tests and deployment files can tune timing
without rewriting URLs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from synaptic_mesh.runtime.subjects import validate_pattern

ROLES = ("mesh", "root", "branch", "leaf")


@dataclass(frozen=True)
class RouterSettings:
    """How a routed transport joins its mesh, and its timing and limits.

    ``role``: ``mesh`` (full mesh: listen, dial every ``peers`` entry), or a
    tree role: ``root`` (listens), ``branch`` (listens, dials ``parent``),
    ``leaf`` (dials ``parent``, listens only if it has an address).
    ``listen``: the address to bind, ``None`` for none. ``peers``: addresses to
    dial in a mesh. ``parent``: the tree node to dial. ``prefixes``: patterns a
    branch or leaf advertises to its parent (empty: everything).
    ``heartbeat``: seconds between PINGs; a link silent for ``heartbeat *
    misses`` seconds is dead. ``connect_timeout``: how long ``start`` waits for
    the peers it dials. ``flush_timeout``: how long ``subscribe`` waits for
    peers to confirm they know the new interest. ``backoff`` and
    ``backoff_max``: first and longest pause between reconnect attempts.
    ``window_msgs`` / ``window_bytes``: the receive window granted per link.
    ``max_message``: largest message (all frames). ``high_water`` /
    ``low_water``: write buffer marks per link. ``node_id``: this node's name
    on the wire (default: host, pid and a random suffix, so a restarted node
    is a new peer).
    """

    role: str = "mesh"
    listen: str | None = None
    peers: tuple[str, ...] = ()
    parent: str | None = None
    prefixes: tuple[str, ...] = ()
    heartbeat: float = 1.0
    misses: int = 3
    connect_timeout: float = 2.0
    flush_timeout: float = 3.0
    backoff: float = 0.05
    backoff_max: float = 2.0
    window_msgs: int = 4096
    window_bytes: int = 16 * 1024 * 1024
    max_message: int = 256 * 1024 * 1024
    high_water: int = 1024 * 1024
    low_water: int = 256 * 1024
    node_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
    )

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.role in ("branch", "leaf") and not self.parent:
            raise ValueError(f"a {self.role} needs a parent address (parent=host:port)")
        if self.role in ("mesh", "root") and self.parent:
            raise ValueError(f"a {self.role} node has no parent; drop parent={self.parent}")
        if self.role != "mesh" and self.peers:
            raise ValueError("peers= is for role=mesh; tree nodes dial their parent only")
        if self.role in ("mesh", "root") and self.prefixes:
            raise ValueError("prefixes= applies to a branch or leaf (what it tells its parent)")
        if self.role in ("mesh", "root", "branch") and not self.listen:
            raise ValueError(f"a {self.role} node must listen: give host:port in the URL")
        for prefix in self.prefixes:
            validate_pattern(prefix)
        if self.heartbeat <= 0 or self.misses < 1:
            raise ValueError("heartbeat must be > 0 seconds and misses >= 1")
        for name in ("connect_timeout", "flush_timeout", "backoff", "backoff_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.window_msgs < 1 or self.window_bytes < 1 or self.max_message < 1:
            raise ValueError("window_msgs, window_bytes and max_message must be positive")

    @property
    def topology(self) -> str:
        return "mesh" if self.role == "mesh" else "tree"

    @property
    def dead_after(self) -> float:
        """Seconds of silence after which a link is declared dead."""
        return self.heartbeat * self.misses

    @property
    def dials(self) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
        """Addresses this node dials, each with its export filter (``None``: all)."""
        if self.parent:
            return ((self.parent, self.prefixes or None),)
        return tuple((peer, None) for peer in self.peers)

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> RouterSettings:
        """Build from URL query values (strings) and typed keyword options alike."""
        kinds = {f.name: f.type for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in kinds:
                raise ValueError(f"unknown option {key!r}; known: {', '.join(sorted(kinds))}")
            kwargs[key] = _convert(key, str(kinds[key]), value)
        return cls(**kwargs)


def _convert(key: str, kind: str, value: Any) -> Any:
    try:
        if kind.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(value)
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {key}={value!r} is not a valid {kind}") from None
    return None if value in (None, "") else str(value)
