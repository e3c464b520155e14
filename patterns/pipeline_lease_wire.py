"""The wire of first-stage credit leases: the messages, the lease token, the subjects.

:mod:`synaptic_mesh.patterns.pipeline_lease` states the protocol and keeps
the pipeline's side; :mod:`synaptic_mesh.patterns.pipeline_producer` the
producer's. Every message is a registered ``@message`` (``_mesh.pipe.*``), so
it travels on every transport and decodes only into these classes.
"""

from __future__ import annotations

from typing import Any, Final

from synaptic_mesh.runtime.messages import message

CONTROL: Final = "feed"
"""Last token of a pipeline's control subject ``_pipe.<name>.feed`` (no stage is named so)."""
DEFAULT_TTL: Final = 10.0
"""Seconds a lease lives without renewal; producers renew every quarter of it."""


# -- the messages --------------------------------------------------------------------


@message(name="_mesh.FeedRefused")
class FeedRefused:
    """The answer of a gate or a lease request when the pipeline cannot take items."""

    reason: str


@message(name="_mesh.pipe.LeaseAsk")
class LeaseAsk:
    """Producer to pipeline (an ask): lend me up to ``window`` credits; talk to ``inbox``."""

    inbox: str
    window: int


@message(name="_mesh.pipe.LeaseGrant")
class LeaseGrant:
    """The answer to :class:`LeaseAsk`: the lease, the run, the routing, the first credits."""

    lease: int
    epoch: int
    node: str
    stage: str
    workers: int
    keyed: bool
    key_name: str
    credits: list[int]
    ttl: float


@message(name="_mesh.pipe.LeaseMore")
class LeaseMore:
    """Producer to pipeline: queue for a credit of ``pool`` (then up to ``want`` free ones)."""

    lease: int
    epoch: int
    inbox: str
    pool: int
    want: int


@message(name="_mesh.pipe.LeaseRenew")
class LeaseRenew:
    """Producer to pipeline: I am alive; answered with a :class:`LeaseCredit`."""

    lease: int
    epoch: int
    inbox: str


@message(name="_mesh.pipe.LeaseRelease")
class LeaseRelease:
    """Producer to pipeline: take back ``idle`` credits per pool.

    ``received`` (credits received per pool since the grant, the grant's
    included) makes it final: the producer has closed the lease.
    """

    lease: int
    epoch: int
    inbox: str
    idle: list[int]
    received: list[int] | None


@message(name="_mesh.pipe.LeaseCredit")
class LeaseCredit:
    """Pipeline to producer, per pool: credits given ``back`` (items finished), ``grown``
    (the lease grew), ``revoked`` (items finished whose credit went to a waiter); with
    ``reclaim``, others wait: give idle credits back."""

    lease: int
    back: list[int]
    grown: list[int]
    revoked: list[int]
    reclaim: bool


@message(name="_mesh.pipe.LeaseRevoked")
class LeaseRevoked:
    """Pipeline to producer: the lease is gone (the run ended, or it expired)."""

    lease: int
    reason: str


# -- the lease token and the key's name ------------------------------------------------


TOKEN_PREFIX: Final = "lease:"


def token(epoch: int, lease: int, slot: int | None = None) -> str:
    """The ``corr`` of an item sent on lease ``lease`` of run ``epoch`` (with its key's slot)."""
    if slot is None:
        return f"{TOKEN_PREFIX}{epoch}:{lease}"
    return f"{TOKEN_PREFIX}{epoch}:{lease}:{slot}"


def read_token(value: str) -> tuple[int, int, int | None] | None:
    """``(epoch, lease, slot)`` of a lease token, or ``None`` when it is not one."""
    if not value.startswith(TOKEN_PREFIX):
        return None
    parts = value[len(TOKEN_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    slot = int(parts[2]) if len(parts) == 3 else None
    return int(parts[0]), int(parts[1]), slot


def key_name(key: Any) -> str:
    """How a key function is named in a grant: ``module.qualname``."""
    module = getattr(key, "__module__", None) or "?"
    name = getattr(key, "__qualname__", None) or type(key).__qualname__
    return f"{module}.{name}"
