"""Settings of the ``zmq+pubsub://`` transport, read from its URL and keyword options.

URL: ``zmq+pubsub://HOST:PORT[?proxy=1&connect_timeout=2&flush_timeout=3&max_message=N]``;
keyword options override query parameters; ``node_id`` names this node on the wire.
``PORT`` is the proxy's XSUB port (its XPUB is ``PORT + 1``); port 0 is only
allowed with ``proxy=1``, which then picks two free adjacent ports.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024
_OPTIONS = ("proxy", "connect_timeout", "flush_timeout", "max_message", "node_id")


@dataclasses.dataclass(frozen=True)
class PubSubSettings:
    host: str
    port: int
    proxy: bool = False
    connect_timeout: float = 2.0
    flush_timeout: float = 3.0
    max_message: int = DEFAULT_MAX_MESSAGE
    node_id: str = ""


def parse_url(url: str, options: dict[str, Any]) -> PubSubSettings:
    """Settings from a ``zmq+pubsub://HOST:PORT?...`` URL, keyword ``options`` winning."""
    parts = urlsplit(url)
    if parts.scheme != "zmq+pubsub":
        raise ValueError(f"not a zmq+pubsub URL: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if not parts.hostname or port is None:
        raise ValueError(f"{url!r} needs host:port (the proxy's XSUB port; XPUB is port + 1)")
    values: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    values.update(options)
    for key in values:
        if key not in _OPTIONS:
            raise ValueError(f"unknown option {key!r}; known: {', '.join(_OPTIONS)}")
    try:
        settings = PubSubSettings(
            host=parts.hostname,
            port=port,
            proxy=str(values.get("proxy", "0")).lower() in ("1", "true", "yes"),
            connect_timeout=float(values.get("connect_timeout", 2.0)),
            flush_timeout=float(values.get("flush_timeout", 3.0)),
            max_message=int(values.get("max_message", DEFAULT_MAX_MESSAGE)),
            node_id=str(values.get("node_id") or ""),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad option in {url!r}: {exc}") from None
    if port == 0 and not settings.proxy:
        raise ValueError(f"{url!r}: port 0 only with proxy=1 (a node must find its proxy)")
    if settings.max_message < 1 or settings.connect_timeout < 0 or settings.flush_timeout < 0:
        raise ValueError(f"{url!r}: max_message must be positive and timeouts >= 0")
    return settings
