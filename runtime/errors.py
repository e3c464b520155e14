"""The exceptions a user of Synaptic Mesh can see.

Every error the runtime raises on purpose is a :class:`MeshError`, so one
``except MeshError`` catches them all; each subclass names one situation, as
AnyIO's ``BrokenResourceError`` or ``ClosedResourceError`` do. Transports may
import this module: it depends on nothing else in the project.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base class of every error Synaptic Mesh raises on purpose."""


class AskTimeout(MeshError, TimeoutError):
    """An ask got no reply before its timeout.

    Also a :class:`TimeoutError`, so code written for ``asyncio.wait_for``
    keeps working. A reply that arrives later is dropped and counted
    (``Node.stats.late_replies``), never handed to another ask.
    """

    def __init__(self, subject: str, timeout: float) -> None:
        super().__init__(f"no reply from {subject!r} within {timeout:g} s")
        self.subject = subject
        self.timeout = timeout


class NoResponders(MeshError):
    """Nobody serves the subject an ask was sent to.

    Raised as soon as the node or its transport knows that no actor or
    subscriber matches (NATS' "no responders" status), not after the timeout.
    """

    def __init__(self, subject: str) -> None:
        super().__init__(f"no actor or subscriber serves {subject!r}")
        self.subject = subject


class MailboxFull(MeshError):
    """A mailbox at capacity refused a message.

    Raised by ``tell_nowait`` under the ``block`` policy (the coroutine form
    ``await tell`` waits instead), and by both forms under the ``fail`` policy.
    """

    def __init__(self, subject: str, capacity: int) -> None:
        super().__init__(f"mailbox of {subject!r} is full ({capacity} messages)")
        self.subject = subject
        self.capacity = capacity


class DecodeError(MeshError, ValueError):
    """A frame is not a valid envelope; ``reason`` says why.

    The node never raises this to an actor: the frame becomes a dead letter on
    ``_mesh.dead`` with the reason, and the node keeps running.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RemoteError(MeshError):
    """The actor that served an ask raised an exception.

    ``remote_type`` is the name of the exception's class on the remote side and
    ``remote_message`` its text; the traceback stays with the remote node's log.
    """

    def __init__(self, subject: str, remote_type: str, remote_message: str) -> None:
        super().__init__(f"{subject!r} raised {remote_type}: {remote_message}")
        self.subject = subject
        self.remote_type = remote_type
        self.remote_message = remote_message


class TransportClosed(MeshError):
    """The node or transport was closed, so the operation cannot go on."""


class PublishRefused(MeshError):
    """A transport refused a publish it could not deliver or buffer (the broker is away).

    Raised, for example, by ``nats://`` while disconnected once its reconnect
    buffer is full, or when a JetStream publish got no acknowledgement in time.
    ``subject`` is where the message was going and ``reason`` why it was
    refused; the transport counts it (``transport.stats.refused``).
    """

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"publish on {subject!r} refused: {reason}")
        self.subject = subject
        self.reason = reason


class UnknownTransport(MeshError):
    """No transport is registered for a URL's scheme."""


class ActorStartError(MeshError):
    """An actor's ``on_start`` raised, so the actor never started."""


class DeploymentError(MeshError):
    """A deployment file is malformed or names something that cannot be loaded."""


class HotlineBusy(MeshError):
    """The peer of a PAIR hotline is already on a line with another actor."""


class HotlineRefused(MeshError):
    """The actor asked for a hotline does not take them.

    Raised by ``AgentActor.hotline`` when nothing answers on the peer's
    hotline subject: no actor runs at that subject, or its class defines no
    ``on_hotline``. ``peer`` is the subject that was asked.
    """

    def __init__(self, peer: str) -> None:
        super().__init__(
            f"{peer!r} takes no hotlines (no actor there, or its class has no on_hotline)"
        )
        self.peer = peer


class HotlineClosed(MeshError):
    """A hotline ended; ``reason`` says why and ``normal`` whether it was hung up on purpose.

    Raised by ``line.send`` and ``line.receive`` once the line is closed, and
    from ``async for msg in line`` when the line ended abnormally (the other
    side raised, stopped, was killed, or fell silent past the heartbeat).
    """

    def __init__(self, reason: str, *, normal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.normal = normal


class PipelineClosed(MeshError):
    """A pipeline is not running (not started yet, stopped, or its supervisor gave up).

    Raised by ``feed`` instead of waiting for credit that will never come.
    """


class SupervisorFailed(MeshError):
    """A supervisor exceeded its restart intensity and gave up.

    ``chain`` lists the failures from the root supervisor down to the child
    whose crash was one too many; the message shows it in that order.
    """

    def __init__(self, chain: list[str]) -> None:
        super().__init__(" <- ".join(chain))
        self.chain = chain


class SupervisorStartError(MeshError):
    """A child failed to start, so its supervision tree did not start."""
