"""A feeder: a producer that keeps up to ``window`` feeds of one pipeline in flight.

``feed`` waits for the pipeline's gate to take each item, so a producer on
another node pays a round trip per item and its rate is bounded by the
latency of the link. A :class:`Feeder` sends the next items while earlier
ones are still on their way, as Kafka producers and JetStream's async publish
do::

    async with Feeder(node, "ingest", window=64) as feeder:   # or self.feeder("ingest")
        for job in jobs:
            await feeder.put(job)
    # here every item was taken by the first stage, or the block raised

Each put is the same ask to the gate as ``feed`` (so admission, credit and
order per key are the pipeline's, unchanged: the gate admits one item at a
time in arrival order, and one producer's items arrive in the order it put
them); only the waiting moves. ``put`` returns once the item is sent and
fewer than ``window`` are unanswered, so the gate's credit still pushes back:
a slow stage holds the gate, whose answers stop, and ``put`` waits.

Failures are reported, never lost: the first refusal (``PipelineClosed``
when the pipeline does not run or stops; ``RemoteError`` when the gate
failed) is raised by the next ``put`` or by ``flush``; later items of the
same feeder are then refused too. With ``timeout``, waiting for a free slot
or for the last answers raises ``AskTimeout``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from synaptic_mesh.patterns.pipeline_run import GATE, FeedRefused
from synaptic_mesh.runtime.envelope import ASK, ERROR, Envelope
from synaptic_mesh.runtime.errors import AskTimeout, MeshError, PipelineClosed, RemoteError
from synaptic_mesh.runtime.subjects import validate_subject

if TYPE_CHECKING:
    from types import TracebackType

    from synaptic_mesh.runtime.node import Node

DEFAULT_WINDOW = 64


class Feeder:
    """Feeds ``pipeline`` from ``node``, up to ``window`` items unanswered (module docstring)."""

    def __init__(
        self,
        node: Node,
        pipeline: str,
        *,
        window: int = DEFAULT_WINDOW,
        sender: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window!r}")
        self.gate = validate_subject(f"{pipeline}.{GATE}")
        self.pipeline = pipeline
        self.node = node
        self.window = window
        self.sender = sender
        self.timeout = timeout
        self.sent = 0
        self.taken = 0
        self._unanswered: set[str] = set()
        self._error: MeshError | None = None
        self._room: asyncio.Future[None] | None = None
        self._slot: tuple[str, str] | None = None  # (corr, reply_to) of the inbox slot
        self._items = 0

    @property
    def in_flight(self) -> int:
        """Items sent and not answered yet (at most ``window``)."""
        return len(self._unanswered)

    async def __aenter__(self) -> Feeder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            self.close()

    async def put(self, item: Any) -> None:
        """Send ``item`` to the pipeline's gate; waits while ``window`` items are unanswered."""
        self._raise_error()
        while len(self._unanswered) >= self.window:
            await self._wait_for_room()
            self._raise_error()
        if self._slot is None:
            self._slot = self.node.collect_replies(self._on_answer)
        self._items += 1
        corr = f"{self._slot[0]}.{self._items}"
        env = self.node.make_envelope(
            ASK, self.gate, item, self.sender, reply_to=self._slot[1], corr=corr
        )
        frames = self.node.encode(env)
        self._unanswered.add(corr)
        try:
            await self.node.send_frames(self.gate, frames, self._slot[1])
        except BaseException:
            self._unanswered.discard(corr)
            raise
        self.sent += 1

    async def flush(self) -> None:
        """Wait until every item sent was answered; raises the first failure."""
        while self._unanswered and self._error is None:
            await self._wait_for_room()
        self._raise_error()

    def close(self) -> None:
        """Stop listening for answers (idempotent); answers after this are counted as late."""
        if self._slot is not None:
            self.node.stop_collecting(self._slot[0])
            self._slot = None
        self._wake()

    # -- answers -----------------------------------------------------------------

    def _on_answer(self, env: Envelope | None) -> None:
        if env is None:  # the transport's "no responders": nobody serves the gate
            self._fail(PipelineClosed(f"no pipeline {self.pipeline!r} is running"))
            self._unanswered.clear()
            return
        if env.corr not in self._unanswered:
            return
        self._unanswered.discard(env.corr)
        body = env.body
        if env.kind == ERROR:
            info = body if isinstance(body, dict) else {}
            self._fail(
                RemoteError(self.gate, str(info.get("type", "Error")), str(info.get("message", "")))
            )
        elif isinstance(body, FeedRefused):
            self._fail(PipelineClosed(body.reason))
        else:
            self.taken += 1
        self._wake()

    def _fail(self, error: MeshError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    async def _wait_for_room(self) -> None:
        room = self._room
        if room is None or room.done():
            room = self._room = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(room), self.timeout)
        except TimeoutError:
            assert self.timeout is not None
            raise AskTimeout(self.gate, self.timeout) from None

