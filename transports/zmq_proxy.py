"""The XPUB-XSUB proxy of ``zmq+pubsub://``: the broker every node of that mesh joins.

Ports: the proxy binds **XSUB at PORT** (publishers connect there) and **XPUB
at PORT + 1** (subscribers connect there); a node's URL names PORT only.
Port 0 picks a free pair of adjacent ports (``Proxy.port`` tells which).

Run it with ``synaptic-mesh proxy zmq+pubsub://HOST:PORT`` (foreground, until
Ctrl-C), or inside a node whose URL says ``?proxy=1``.

Socket settings, and why:

* ``XPUB_VERBOSER`` on the XPUB: every subscribe *and* unsubscribe of every
  subscriber passes upstream, so the XSUB's per-topic counts stay exact and
  publishers learn when the last subscriber of a topic is gone.
* The XSUB subscribes to everything (``b"\\x01"``) itself: publishers then send
  every message to the proxy, which filters by the subscribers' prefixes, so
  a subscription the proxy has confirmed is served even before a publisher
  has heard of it (no "slow joiner" loss at the publisher).
* Subscriptions travel without a high-water mark (they are few and must not
  be lost); data has marks of :data:`PROXY_HWM` messages per subscriber: a subscriber
  further behind than that loses messages (ZeroMQ's PUB semantics: the proxy
  never blocks everyone for one slow reader). Nodes detect those losses by
  sequence gaps and count them (``transport.stats``).

The loop is libzmq's ``zmq_proxy_steerable`` on a thread of its own, stopped
by ``TERMINATE`` on an inproc control socket; ``close`` joins the thread and
terminates the proxy's own context.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading

import zmq

log = logging.getLogger("synaptic_mesh.zmq.proxy")

PROXY_HWM = 10_000
"""Messages the proxy queues per subscriber (and per publisher) before it drops."""
PORT_TRIES = 50
"""Attempts at finding two adjacent free ports for port 0."""


def parse_proxy_url(url: str) -> tuple[str, int]:
    """``zmq+pubsub://HOST:PORT`` -> ``(host, port)``; ``ValueError`` with the reason."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "zmq+pubsub":
        raise ValueError(f"a proxy URL is zmq+pubsub://HOST:PORT, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if not parts.hostname or port is None:
        raise ValueError(f"{url!r} needs HOST:PORT (XSUB at PORT, XPUB at PORT+1)")
    return parts.hostname, port


class Proxy:
    """An XSUB (``port``) to XPUB (``port + 1``) forwarder on ``host``; see module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._thread: threading.Thread | None = None
        self._control_name = f"inproc://synaptic-mesh-proxy-{os.getpid()}-{id(self)}"

    @property
    def address(self) -> str:
        """``host:port`` as nodes name the proxy (the XSUB port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> None:
        """Bind both ports and start forwarding; ``OSError`` if the ports are taken."""
        if self._thread is not None:
            return
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
        control = ctx.socket(zmq.PAIR)
        for sock in (xsub, xpub, control):
            sock.setsockopt(zmq.LINGER, 0)
        if ":" in self.host:
            xsub.setsockopt(zmq.IPV6, 1)
            xpub.setsockopt(zmq.IPV6, 1)
        xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
        xpub.setsockopt(zmq.SNDHWM, PROXY_HWM)
        xsub.setsockopt(zmq.RCVHWM, PROXY_HWM)
        xpub.setsockopt(zmq.RCVHWM, 0)  # subscriptions are never dropped (0: no limit)
        xsub.setsockopt(zmq.SNDHWM, 0)
        try:
            self.port = self._bind(xsub, xpub)
        except BaseException:
            for sock in (xsub, xpub, control):
                sock.close()
            ctx.term()
            raise
        control.bind(self._control_name)
        xsub.send(b"\x01")  # subscribe to everything: the proxy filters, not the publishers
        self._ctx = ctx
        self._thread = threading.Thread(
            target=self._run, args=(xsub, xpub, control), name=f"zmq-proxy-{self.port}"
        )
        self._thread.start()
        log.info("proxy on %s: XSUB port %d, XPUB port %d", self.host, self.port, self.port + 1)

    def _bind(self, xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes]) -> int:
        host = f"[{self.host}]" if ":" in self.host else self.host
        tries = PORT_TRIES if self.port == 0 else 1
        for _ in range(tries):
            try:
                if self.port == 0:
                    port = xsub.bind_to_random_port(f"tcp://{host}", 20000, 60000, 100)
                else:
                    port = self.port
                    xsub.bind(f"tcp://{host}:{port}")
            except zmq.ZMQError as exc:
                raise OSError(exc.errno, f"proxy cannot bind {host}:{self.port}: {exc}") from None
            try:
                xpub.bind(f"tcp://{host}:{port + 1}")
            except zmq.ZMQError as exc:
                with contextlib.suppress(zmq.ZMQError):
                    xsub.unbind(xsub.getsockopt_string(zmq.LAST_ENDPOINT))
                if self.port != 0 or exc.errno != errno.EADDRINUSE:
                    raise OSError(
                        exc.errno, f"proxy cannot bind XPUB port {host}:{port + 1}: {exc}"
                    ) from None
                continue
            return port
        raise OSError(errno.EADDRINUSE, "proxy found no two adjacent free ports")

    @staticmethod
    def _run(xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], control: zmq.Socket[bytes]) -> None:
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                log.error("proxy stopped: %s", exc)
        finally:
            for sock in (xsub, xpub, control):
                sock.close()

    def close(self) -> None:
        """Stop forwarding, close both sockets and the context; idempotent."""
        thread, ctx = self._thread, self._ctx
        self._thread = self._ctx = None
        if thread is None or ctx is None:
            return
        stop = ctx.socket(zmq.PAIR)
        stop.setsockopt(zmq.LINGER, 0)
        stop.connect(self._control_name)
        stop.send(b"TERMINATE")
        thread.join()
        stop.close()
        ctx.term()

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
