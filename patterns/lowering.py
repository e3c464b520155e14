"""The lowering hook: how a pattern chooses between its generic and a native lowering.

Every pattern module (``request_reply``, ``pubsub``, ``pipeline``, ``bus``,
``survey``, ``hotline``) states a small protocol, ``<Pattern>Lowering``: the
few operations the pattern needs from the mesh. Each module ships one
*generic* implementation built on the transport SPI alone (publish,
subscribe, queue groups, the node's reply inbox), so every pattern works on
every transport. A transport that has a better mechanism for a pattern (NNG
Surveyor0/Respondent0 for surveys, NATS queue groups for pipelines, ZeroMQ
PAIR sockets for hotlines) names the pattern in ``capabilities.native`` and
returns its own implementation from ``transport.native_lowering(name)``.

Resolution, done once per node and pattern by :func:`lowering_for` and kept in
``node.lowerings``:

1. If ``name`` is in ``node.transport.capabilities.native``, call
   ``node.transport.native_lowering(name)``. An object: use it.
2. Otherwise, or if the transport declared the name but returned ``None`` (a
   broken promise, logged as a warning once per node), use the pattern's
   generic lowering.

Lowering objects are stateless with respect to actors: every operation
receives the :class:`~synaptic_mesh.runtime.node.Node` it works for, so one
object may serve many nodes. Transport modules implement the protocols
structurally (no import of this package), which keeps the dependency rule of
DESIGN.md section 2: transports know nothing of patterns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node

log = logging.getLogger("synaptic_mesh.patterns")

REQUEST_REPLY: Final = "request-reply"
PUB_SUB: Final = "pub-sub"
PIPELINE: Final = "pipeline"
BUS: Final = "bus"
SURVEY: Final = "survey"
PAIR: Final = "pair"

PATTERNS: Final = (REQUEST_REPLY, PUB_SUB, PIPELINE, BUS, SURVEY, PAIR)
"""The names ``Capabilities.native`` and ``native_lowering`` use."""

L = TypeVar("L")


def lowering_for(node: Node, name: str, generic: Callable[[], L]) -> L:
    """The lowering of pattern ``name`` on ``node``: the transport's native one, else ``generic()``.

    Cached in ``node.lowerings``, so the choice is made once per node.
    Raises ``ValueError`` for a name not in :data:`PATTERNS`.
    """
    found = node.lowerings.get(name)
    if found is None:
        if name not in PATTERNS:
            raise ValueError(f"unknown pattern {name!r}; one of {', '.join(PATTERNS)}")
        found = node.lowerings[name] = native_lowering(node, name) or generic()
    return found  # type: ignore[no-any-return]


def native_lowering(node: Node, name: str) -> Any | None:
    """The native lowering of ``name`` if the transport declares and supplies one."""
    transport = node.transport
    if name not in transport.capabilities.native:
        return None
    native = transport.native_lowering(name)
    if native is None:
        log.warning(
            "transport %s declares a native %s lowering but supplies none; using the generic one",
            type(transport).__qualname__,
            name,
        )
    return native


def is_generic(node: Node, name: str) -> bool:
    """Whether ``node`` runs pattern ``name`` on its generic lowering (for tests and benches)."""
    return native_lowering(node, name) is None
