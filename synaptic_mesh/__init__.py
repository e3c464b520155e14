"""Synaptic Mesh: an asyncio actor runtime for LLM agents.

Agents subclass :class:`AgentActor`, declare handlers with :func:`on` and
:func:`subscribe`, exchange :func:`message` dataclasses, and run on a
:class:`Node` whose transport is chosen by URL.
"""

from __future__ import annotations

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on, subscribe
from synaptic_mesh.actors.ref import ActorRef
from synaptic_mesh.actors.threaded import ThreadedAgentActor
from synaptic_mesh.runtime.dead_letters import DEAD_LETTER_SUBJECT, DeadLetter
from synaptic_mesh.runtime.errors import (
    ActorStartError,
    AskTimeout,
    DecodeError,
    DeploymentError,
    HotlineBusy,
    MailboxFull,
    MeshError,
    NoResponders,
    RemoteError,
    SupervisorFailed,
    SupervisorStartError,
    TransportClosed,
    UnknownTransport,
)
from synaptic_mesh.runtime.messages import message
from synaptic_mesh.runtime.node import Node
from synaptic_mesh.supervisors.monitors import Down
from synaptic_mesh.supervisors.spec import Backoff, ChildSpec, Supervisor, child

__version__ = "0.1.0"

__all__ = [
    "DEAD_LETTER_SUBJECT",
    "ActorRef",
    "ActorStartError",
    "AgentActor",
    "AskTimeout",
    "Backoff",
    "ChildSpec",
    "DeadLetter",
    "DecodeError",
    "DeploymentError",
    "Down",
    "HotlineBusy",
    "MailboxFull",
    "MeshError",
    "NoResponders",
    "Node",
    "RemoteError",
    "Supervisor",
    "SupervisorFailed",
    "SupervisorStartError",
    "ThreadedAgentActor",
    "TransportClosed",
    "UnknownTransport",
    "__version__",
    "child",
    "message",
    "on",
    "subscribe",
]
