"""``ThreadedAgentActor``: an actor for blocking code, on a pykka thread.

A synchronous LLM SDK or CPU-bound mesh processing must not block the event
loop. A threaded actor's handlers and hooks are plain ``def``s that run on a
pykka ``ThreadingActor`` of their own; its mailbox, address and supervision
are the same as any actor's. Messages still reach it one at a time, in order:
the cell awaits each handler's completion before taking the next message.

From inside a handler, ``ask``, ``tell``, ``publish``, ``survey`` and ``feed``
are blocking calls that run on the node's event loop and wait for it. A
threaded actor that asks itself deadlocks until the ask times out, as a
blocked thread would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.actors.ref import DEFAULT_ASK_TIMEOUT

if TYPE_CHECKING:
    from synaptic_mesh.patterns.survey import SurveyResult


class _PykkaHost(pykka.ThreadingActor):
    """The pykka actor whose thread runs a ThreadedAgentActor's code."""

    def __init__(self) -> None:
        super().__init__()
        self.thread: threading.Thread | None = None

    def on_start(self) -> None:
        self.thread = threading.current_thread()

    def on_receive(self, message: Any) -> Any:
        fn, args, loop, future = message
        try:
            result = fn(*args)
        except BaseException as exc:  # forwarded to the awaiting cell
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)
        return None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class ThreadedAgentActor(AgentActor):
    """Base class of actors whose handlers block; see the module docstring.

    Handlers (``@on``) and the hooks ``on_start`` / ``on_stop`` are plain
    ``def``s. ``ask``, ``tell`` and ``publish`` block the actor's thread.
    """

    _mesh_async_handlers = False
    _mesh_host: pykka.ActorRef[Any] | None = None
    _mesh_loop: asyncio.AbstractEventLoop

    @classmethod
    def _mesh_wrap_handler(cls, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Run the plain ``def`` handler in the actor's thread; the cell awaits it."""

        async def call(actor: ThreadedAgentActor, message: Any) -> Any:
            return await actor._mesh_in_thread(fn, actor, message)

        return call

    async def _mesh_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        host = self._mesh_host
        if host is None:
            raise RuntimeError(f"threaded actor {self.subject!r} is not running")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        host.tell((fn, args, loop, future))
        return await future

    async def _mesh_start(self) -> None:
        await self._mesh_boot(type(self).on_start)

    async def _mesh_restart(self, reason: str) -> None:
        await self._mesh_boot(type(self).on_restart, reason)

    async def _mesh_boot(self, hook: Callable[..., Any], *args: Any) -> None:
        """Start this instance's thread and run ``hook`` in it."""
        self._mesh_loop = asyncio.get_running_loop()
        self._mesh_host = _PykkaHost.start()
        try:
            await self._mesh_in_thread(hook, self, *args)
        except BaseException:
            self._mesh_shutdown_thread()
            raise

    async def _mesh_stop(self) -> None:
        try:
            await self._mesh_in_thread(type(self).on_stop, self)
        finally:
            self._mesh_shutdown_thread()

    def _mesh_shutdown_thread(self) -> None:
        host, self._mesh_host = self._mesh_host, None
        if host is None:
            return
        proxy_thread = host.proxy().thread.get(timeout=5)
        host.stop(block=True, timeout=5)
        if proxy_thread is not None:
            proxy_thread.join(timeout=5)

    # -- hooks, synchronous here ------------------------------------------------

    def on_start(self) -> None:  # type: ignore[override]
        """Called in the actor's thread before the first message."""

    def on_stop(self) -> None:  # type: ignore[override]
        """Called in the actor's thread after the last message."""

    def on_restart(self, reason: str) -> None:  # type: ignore[override]
        """Called in the new instance's thread after a restart; runs ``on_start``."""
        self.on_start()

    # -- talking, blocking here -------------------------------------------------

    def _mesh_run(self, coro: Any, timeout: float | None = None) -> Any:
        if asyncio._get_running_loop() is self._mesh_loop:
            coro.close()
            raise RuntimeError(
                "blocking calls of a ThreadedAgentActor are for its handlers, not the event loop"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._mesh_loop).result(timeout)

    def ask(  # type: ignore[override]
        self, subject: str, message: Any, *, timeout: float | None = DEFAULT_ASK_TIMEOUT
    ) -> Any:
        """Blocking ask; raises as ``AgentActor.ask`` does."""
        return self._mesh_run(self.node.ask(subject, message, timeout=timeout, sender=self.subject))

    def tell(self, subject: str, message: Any) -> None:  # type: ignore[override]
        """Blocking tell: returns once the message is queued."""
        self._mesh_run(self.node.tell(subject, message, sender=self.subject))

    def publish(self, topic: str, message: Any) -> None:  # type: ignore[override]
        """Blocking publish."""
        self._mesh_run(self.node.publish(topic, message, sender=self.subject))

    def survey(  # type: ignore[override]
        self, group: str, question: Any, *, timeout: float = 10.0, quorum: int | None = None
    ) -> SurveyResult:
        """Blocking survey; returns as ``AgentActor.survey`` does."""
        return self._mesh_run(
            AgentActor.survey(self, group, question, timeout=timeout, quorum=quorum)
        )

    def feed(  # type: ignore[override]
        self, pipeline: str, item: Any, *, timeout: float | None = None
    ) -> None:
        """Blocking feed: returns once the pipeline's first stage took ``item``."""
        self._mesh_run(AgentActor.feed(self, pipeline, item, timeout=timeout))

    # Not yet offered from a thread: subscribe, join_bus, hotline and feeder (they hand
    # out objects used from the event loop); use @subscribe, or an AgentActor.
