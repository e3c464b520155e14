"""Synaptic Mesh: an asyncio actor runtime for LLM agents.

Agents subclass :class:`AgentActor`, declare handlers with :func:`on` and
:func:`subscribe`, exchange :func:`message` dataclasses, and run on a
:class:`Node` whose transport is chosen by URL. The six interaction patterns
(``synaptic_mesh.patterns``) are methods of the actor (``ask``, ``publish``,
``subscribe``, ``join_bus``, ``survey``, ``hotline``, ``feed``) plus the
:func:`respond` mark, the :class:`Pipeline` spec and the consensus rules.
"""

from __future__ import annotations

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.handlers import on, subscribe
from synaptic_mesh.actors.ref import ActorRef
from synaptic_mesh.actors.threaded import ThreadedAgentActor
from synaptic_mesh.patterns.bus import BusMember
from synaptic_mesh.patterns.consensus import (
    Ballot,
    Decision,
    majority,
    unanimous,
    weighted_by_confidence,
)
from synaptic_mesh.patterns.feeder import Feeder
from synaptic_mesh.patterns.hotline import Hotline
from synaptic_mesh.patterns.pipeline import Pipeline, Stage, StageWorker
from synaptic_mesh.patterns.pubsub import ActorSubscription
from synaptic_mesh.patterns.survey import SurveyResult, Vote, VoteFailure, respond
from synaptic_mesh.runtime.dead_letters import DEAD_LETTER_SUBJECT, DeadLetter
from synaptic_mesh.runtime.errors import (
    ActorStartError,
    AskTimeout,
    DecodeError,
    DeploymentError,
    HotlineBusy,
    HotlineClosed,
    HotlineRefused,
    MailboxFull,
    MeshError,
    NoResponders,
    PipelineClosed,
    PublishRefused,
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
    "ActorSubscription",
    "AgentActor",
    "AskTimeout",
    "Backoff",
    "Ballot",
    "BusMember",
    "ChildSpec",
    "DeadLetter",
    "Decision",
    "DecodeError",
    "DeploymentError",
    "Down",
    "Feeder",
    "Hotline",
    "HotlineBusy",
    "HotlineClosed",
    "HotlineRefused",
    "MailboxFull",
    "MeshError",
    "NoResponders",
    "Node",
    "Pipeline",
    "PipelineClosed",
    "PublishRefused",
    "RemoteError",
    "Stage",
    "StageWorker",
    "Supervisor",
    "SupervisorFailed",
    "SupervisorStartError",
    "SurveyResult",
    "ThreadedAgentActor",
    "TransportClosed",
    "UnknownTransport",
    "Vote",
    "VoteFailure",
    "__version__",
    "child",
    "majority",
    "message",
    "on",
    "respond",
    "subscribe",
    "unanimous",
    "weighted_by_confidence",
]
