"""Settings of the ``nats://`` and ``nats+js://`` transports, read from the URL and options.

URL format (keyword options given to the transport, e.g.
``Node(transport_options={"prefix": "t1"})``, override the query string)::

    nats://[USER:PASS@|TOKEN@]HOST:PORT[,HOST:PORT...][?OPTION=VALUE&...]
    nats+js://HOST:PORT?durable=orders.>,audit.*&stream=ORDERS

Connection and security:

* ``user:pass@`` or ``token@`` before the first host (``?token=`` works too);
  ``creds=/path/user.creds`` (a JWT and NKey seed file), ``nkey=/path/seed.nk``.
* ``tls=1`` turns TLS on (``tls://`` hosts are also accepted); ``tls_ca`` (a CA
  bundle), ``tls_cert`` + ``tls_key`` (a client certificate), ``tls_hostname``
  (the name to verify, when the host is an IP address). Any ``tls_*`` option
  implies ``tls=1``.
* ``name``: the client name the server shows (default: the node's id).

Behaviour:

* ``prefix=abc``: every subject is ``abc.<subject>`` on the wire and is
  stripped again on delivery, so several meshes (or test runs) share one
  server without seeing each other. A NATS reply subject outside the prefix
  (a plain client's inbox) reaches handlers as ``_WIRE.<subject>`` and is
  published to unchanged; with no prefix subjects are used as they are.
  ``prefix=@random`` picks a fresh prefix per transport: a private mesh on
  a shared server, for a single-node deployment (nothing else can join it).
* ``buffer`` (bytes, default 8 MiB): what publishes may queue while the
  server is away; past it ``publish`` raises ``PublishRefused``.
* ``reconnect_wait`` (seconds, 0.25), ``connect_timeout`` (2.0),
  ``max_reconnects`` (-1: forever, so a node outlives a broker restart),
  ``drain_timeout`` (2.0, used by ``close``), ``ping_interval`` (seconds, 10).
* ``pending_msgs`` (65536) and ``pending_bytes`` (64 MiB): per subscription,
  how much the client holds for a slow handler before the server's messages
  are dropped as a slow consumer (counted in ``transport.stats``).

JetStream (``nats+js://`` only):

* ``durable`` (required): comma-separated subject patterns whose messages
  are stored, each starting with a literal token. Subscriptions whose
  pattern lies inside one of them read from the stream; the rest are plain
  NATS subscriptions.
* ``stream`` (default ``MESH`` or ``MESH_<prefix>``): the stream created, or
  checked and extended, at start. ``storage`` (``file`` | ``memory``),
  ``replicas`` (1), ``dup_window`` (seconds, 120): how long the server
  remembers ``Nats-Msg-Id`` values to drop duplicates.
* ``ack_wait`` (seconds, 10): redelivery delay of an unacknowledged message.
  ``max_ack_pending`` (1024). ``publish_timeout`` (seconds, 2.0) per attempt,
  ``publish_retry`` (seconds, 15.0): how long a publish keeps retrying (same
  message id, so no duplicate is stored) before ``PublishRefused``.
* ``delete_stream=1``: delete the stream when the transport closes (a
  single-node or test mesh whose stored messages must not outlive it).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, unquote

from synaptic_mesh.runtime.subjects import validate_pattern

WIRE_ESCAPE = "_WIRE."
"""Marks a NATS reply subject outside the prefix (see the module docstring)."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass
class NatsSettings:
    """Everything a NATS transport reads from its URL and options (see module docstring)."""

    servers: list[str]
    tls: bool = False
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    name: str | None = None
    prefix: str = ""
    buffer: int = 8 * 1024 * 1024
    reconnect_wait: float = 0.25
    connect_timeout: float = 2.0
    max_reconnects: int = -1
    drain_timeout: float = 2.0
    ping_interval: float = 10.0
    pending_msgs: int = 65536
    pending_bytes: int = 64 * 1024 * 1024
    jetstream: bool = False
    durable: list[str] = field(default_factory=list)
    stream: str | None = None
    storage: str = "file"
    replicas: int = 1
    dup_window: float = 120.0
    ack_wait: float = 10.0
    max_ack_pending: int = 1024
    publish_timeout: float = 2.0
    publish_retry: float = 15.0
    delete_stream: bool = False

    @property
    def stream_name(self) -> str:
        if self.stream:
            return self.stream
        if not self.prefix:
            return "MESH"
        return "MESH_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in self.prefix)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the options ask for, or ``None`` for plain TCP."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (callbacks are added by the transport)."""
        options: dict[str, Any] = {
            "servers": self.servers,
            "allow_reconnect": True,
            "max_reconnect_attempts": self.max_reconnects,
            "reconnect_time_wait": self.reconnect_wait,
            "connect_timeout": self.connect_timeout,
            "pending_size": self.buffer,
            "drain_timeout": self.drain_timeout,
            "ping_interval": self.ping_interval,
            "dont_randomize": True,
        }
        for key in ("user", "password", "token", "name"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        if self.creds:
            options["user_credentials"] = self.creds
        if self.nkey:
            options["nkeys_seed"] = self.nkey
        context = self.ssl_context()
        if context is not None:
            options["tls"] = context
            if self.tls_hostname:
                options["tls_hostname"] = self.tls_hostname
        return options


def parse_url(url: str, options: dict[str, Any]) -> NatsSettings:
    """Settings from a ``nats://`` or ``nats+js://`` URL, ``options`` winning.

    Raises ``ValueError`` naming what is malformed (scheme, host list, option).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("nats", "nats+js", "tls", "nats+tls"):
        raise ValueError(f"not a NATS URL: {url!r} (nats://host:port or nats+js://host:port)")
    location, _, query = rest.partition("?")
    location = location.rstrip("/")
    values: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    user = password = token = None
    if "@" in location:
        auth, _, location = location.rpartition("@")
        name, colon, secret = auth.partition(":")
        if colon:
            user, password = unquote(name), unquote(secret)
        else:
            token = unquote(name)
    hosts = [h.strip() for h in location.split(",") if h.strip()] or ["127.0.0.1:4222"]
    tls = scheme in ("tls", "nats+tls")
    servers = []
    for host in hosts:
        inner, _, port = host.rpartition(":")
        if not inner:
            inner, port = host, "4222"
        if not port.isdigit() or int(port) > 65535:
            raise ValueError(f"bad host {host!r} in {url!r}: expected host:port")
        servers.append(f"nats://{inner}:{port}")
    settings = NatsSettings(servers=servers, tls=tls, user=user, password=password, token=token)
    settings.jetstream = scheme == "nats+js"
    values.update(options)
    known = {f.name: f for f in fields(NatsSettings)}
    for key, value in values.items():
        if key not in known or key in ("servers", "jetstream"):
            raise ValueError(f"unknown NATS transport option {key!r} in {url!r}")
        setattr(settings, key, _convert(key, value, getattr(NatsSettings(servers=[]), key)))
    if any(getattr(settings, k) for k in ("tls_ca", "tls_cert", "tls_key", "tls_hostname")):
        settings.tls = True
    if settings.prefix == "@random":
        settings.prefix = f"r{os.urandom(6).hex()}"
    if settings.prefix:
        settings.prefix = settings.prefix.strip(".")
        validate_pattern(settings.prefix)
        if "*" in settings.prefix or ">" in settings.prefix:
            raise ValueError(f"prefix {settings.prefix!r} must not contain wildcards")
    for pattern in settings.durable:
        validate_pattern(pattern)
    if settings.storage not in ("file", "memory"):
        raise ValueError(f"storage must be 'file' or 'memory', got {settings.storage!r}")
    return settings


def _convert(key: str, value: Any, default: Any) -> Any:
    """``value`` (a query string or an option) in the type of ``default``."""
    if not isinstance(value, str):
        if isinstance(default, list) and isinstance(value, list | tuple):
            return [str(v) for v in value]
        return value
    if isinstance(default, bool):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"option {key}={value!r} must be 1 or 0")
    if isinstance(default, list):
        return [p.strip() for p in value.split(",") if p.strip()]
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ValueError(f"option {key}={value!r} must be a number") from None
    return (value or None) if default is None else value


class SubjectMap:
    """Maps mesh subjects to wire subjects and back under an optional prefix."""

    __slots__ = ("_plen", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}." if prefix else ""
        self._plen = len(self.prefix)

    def wire(self, subject: str) -> str:
        """The wire subject of ``subject`` (a ``_WIRE.`` subject loses its marker instead)."""
        if not self._plen:
            return subject
        if subject.startswith(WIRE_ESCAPE):
            return subject[len(WIRE_ESCAPE) :]
        return self.prefix + subject

    def mesh(self, wire: str) -> str:
        """The mesh subject of wire subject ``wire`` (see :meth:`wire`)."""
        if not self._plen:
            return wire
        if wire.startswith(self.prefix):
            return wire[self._plen :]
        return WIRE_ESCAPE + wire
