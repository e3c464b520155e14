"""Drive a plain (blocking-API) ZeroMQ socket from the asyncio loop, with little overhead.

``zmq.asyncio`` wraps every receive and send in futures and poll events; on
a link that costs several times libzmq's own latency per message. The links
here only need two things: "call me with each message as it arrives" and
"send this, waiting while the socket is at its high-water mark". So:

* the socket's ``ZMQ_FD`` is watched with ``loop.add_reader``; it is
  *edge*-triggered (it signals that ``ZMQ_EVENTS`` may have changed, not that
  a message is there), so every wake-up reads ``ZMQ_EVENTS`` and drains
  messages with ``NOBLOCK`` until none is left (in batches of :data:`BATCH`,
  yielding to the loop between batches);
* any send may consume an edge too, so after one the events are checked again
  on the next loop iteration;
* a send that meets ``EAGAIN`` (high-water mark) waits for ``POLLOUT``; a
  socket whose ``POLLOUT`` is true for another peer (a ROUTER) is retried
  after a short pause instead of spinning.

Messages are handed to ``on_message`` synchronously, in order, as lists of
``zmq.Frame`` (received with ``copy=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger("synaptic_mesh.zmq")

BATCH = 256
"""Messages taken per wake-up before other tasks get a turn."""
BUSY_PAUSE = 0.001
"""Pause before retrying a send that failed right after ``POLLOUT`` said it could go."""

_OPEN: weakref.WeakSet[SocketIO] = weakref.WeakSet()


def close_all(ctx: zmq.Context[Any]) -> None:
    """Close every socket of ``ctx`` still watched here (before the context is destroyed)."""
    for io in list(_OPEN):
        if io.sock.context is ctx:
            io.close(0)


class SocketIO:
    """Reads and writes one ``zmq.Socket`` on the running loop (see module docstring)."""

    def __init__(
        self, sock: zmq.Socket[Any], on_message: Callable[[list[zmq.Frame]], None] | None
    ) -> None:
        self.sock = sock
        self.on_message = on_message
        self.loop = asyncio.get_running_loop()
        self.paused = False
        self._fd = sock.getsockopt(zmq.FD)
        self._writers: deque[asyncio.Future[None]] = deque()
        self._scheduled = False
        self._closed = False
        self.loop.add_reader(self._fd, self._ready)
        _OPEN.add(self)
        self.kick()

    def kick(self) -> None:
        """Check the socket's events on the next loop iteration (coalesced)."""
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self.loop.call_soon(self._ready)

    def pause(self) -> None:
        """Stop taking messages (the socket's receive high-water mark then pushes back)."""
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.kick()

    def _ready(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        sock = self.sock
        try:
            events = sock.getsockopt(zmq.EVENTS)
        except zmq.ZMQError:
            return
        if events & zmq.POLLOUT and self._writers:
            writers, self._writers = self._writers, deque()
            for waiter in writers:
                if not waiter.done():
                    waiter.set_result(None)
        if not events & zmq.POLLIN or self.paused or self.on_message is None:
            return
        deliver = self.on_message
        for _ in range(BATCH):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            try:
                deliver(parts)
            except Exception:  # a bug in a handler must not stall the socket
                log.exception("handling a message from a %s socket failed", sock.socket_type)
            if self.paused or self._closed:
                return
        self.kick()  # more may be waiting: continue after others had a turn

    def send_nowait(self, parts: list[Any]) -> None:
        """Send now; raises ``zmq.Again`` at the high-water mark, ``zmq.ZMQError`` otherwise."""
        self.sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
        self.kick()

    async def send(self, parts: list[Any]) -> None:
        """Send, waiting while the socket is at its high-water mark."""
        woken = False
        while True:
            if self._closed:
                raise zmq.ZMQError(zmq.ENOTSOCK, "socket closed")
            try:
                self.sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if woken:
                    await asyncio.sleep(BUSY_PAUSE)
                waiter = self.loop.create_future()
                self._writers.append(waiter)
                self.kick()
                await waiter
                woken = True
                continue
            self.kick()
            return

    def close(self, linger: int | None = None) -> None:
        """Stop watching and close the socket (with ``linger`` ms, default the socket's)."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self._fd)
        for waiter in self._writers:
            if not waiter.done():
                waiter.set_exception(zmq.ZMQError(zmq.ENOTSOCK, "socket closed"))
        self._writers.clear()
        if not self.sock.closed:
            self.sock.close(linger)
