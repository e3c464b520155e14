"""Where two bench nodes of one transport start: the first node's URL and the joining node's.

``bench/patterns.py`` (both nodes in one process) and ``bench/bulk.py`` (the
receiver in another process) form the same two-node mesh on every
registered scheme, so the rule for each lives here once: a fresh in-process
hub, a fresh directory, a fresh broker prefix, or a listener on port 0 that
the second node dials with ``?peers=``.
"""

from __future__ import annotations

import itertools
import os

_names = itertools.count(1)

NATS_ENV = "SYNAPTIC_MESH_NATS_URL"
NATS_DEFAULT = "nats://127.0.0.1:4222"


def needs_dir(scheme: str) -> bool:
    """Whether the scheme's nodes meet in a directory (``shm``, the ``...ipc`` schemes)."""
    return scheme == "shm" or scheme.endswith("ipc")


def first_url(scheme: str, tmp: str | None, *, durable: str = "bench.>") -> str:
    """Where the first node starts: a fresh hub, a fresh directory, a broker prefix, a listener.

    ``tmp`` is a short directory of this run (Unix socket paths are limited to
    107 bytes), required when :func:`needs_dir` says so. On ``nats+js`` the
    ``durable`` subjects are kept in a stream. Raises ``ValueError`` when a
    directory is needed and ``tmp`` is ``None``.
    """
    if needs_dir(scheme) and not tmp:
        raise ValueError(f"{scheme}:// needs a directory for its sockets")
    if scheme == "inproc":
        return f"inproc://bench-{os.getpid()}-{next(_names)}"
    if scheme == "shm":
        return f"shm://{tmp}"
    if scheme.endswith("ipc"):
        return f"{scheme}://{tmp}/a.sock"
    if scheme.startswith("nats"):
        base = os.environ.get(NATS_ENV, NATS_DEFAULT)
        host = base.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        prefix = f"bench{os.getpid()}x{next(_names)}x{os.urandom(3).hex()}"
        extra = f"&durable={durable}" if scheme == "nats+js" else ""
        return f"{scheme}://{host}?prefix={prefix}{extra}"
    if scheme == "zmq+pubsub":
        return f"{scheme}://127.0.0.1:0?proxy=1"
    return f"{scheme}://127.0.0.1:0"


def joining_url(scheme: str, first: str, address: str | None) -> str:
    """Where the second node starts: the same hub, directory or broker, or dialing ``address``.

    ``address`` is what the first node's transport reports after start
    (``transport.address``); a scheme that dials needs it, and gets a
    ``RuntimeError`` naming the scheme when it is missing.
    """
    if scheme in ("inproc", "shm") or scheme.startswith("nats"):
        return first
    if not address:
        raise RuntimeError(f"{scheme}:// reports no address after start, so no node can dial it")
    if scheme == "zmq+pubsub":
        return f"{scheme}://{address}"
    if scheme.endswith("ipc"):
        return f"{first.rsplit('/', 1)[0]}/b.sock?peers={address}"
    return f"{scheme}://127.0.0.1:0?peers={address}"
