"""Find the transport for a URL by its scheme.

Transports are entry points in group ``synaptic_mesh.transports`` (name = URL
scheme, value = the ``Transport`` subclass), so a third-party package adds one
by declaring an entry point; :func:`register_transport` does the same at run
time (tests, plugins loaded by hand).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from synaptic_mesh.runtime.errors import UnknownTransport
from synaptic_mesh.transports.base import Transport

ENTRY_POINT_GROUP = "synaptic_mesh.transports"

_registered: dict[str, type[Transport]] = {}


def scheme_of(url: str) -> str:
    """The scheme of ``url`` (``"nats"`` for ``"nats://127.0.0.1:4222"``)."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise UnknownTransport(
            f"transport URL {url!r} has no scheme; write it like 'inproc://' or 'tcp://host:port'"
        )
    return scheme.lower()


def register_transport(scheme: str, cls: type[Transport]) -> None:
    """Make ``cls`` the transport for ``scheme`` in this process."""
    _registered[scheme.lower()] = cls


def available_schemes() -> list[str]:
    """Every scheme a transport is registered for."""
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names | set(_registered))


def transport_class(url: str) -> type[Transport]:
    """The ``Transport`` subclass serving ``url``'s scheme.

    Raises :class:`UnknownTransport` naming the known schemes, or naming the
    entry point that failed to import (a missing optional extra, usually).
    """
    scheme = scheme_of(url)
    if scheme in _registered:
        return _registered[scheme]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        try:
            cls = ep.load()
        except ImportError as exc:
            raise UnknownTransport(
                f"transport {scheme!r} is installed but cannot be imported ({exc}); "
                f"is its optional dependency installed?"
            ) from exc
        _registered[scheme] = cls
        return cls
    raise UnknownTransport(
        f"unknown transport scheme {scheme!r} in {url!r}; known: "
        f"{', '.join(available_schemes()) or 'none'}"
    )


def open_transport(url: str, **options: Any) -> Transport:
    """Construct (not start) the transport for ``url``."""
    return transport_class(url)(url, **options)
