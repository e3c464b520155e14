"""Run a coroutine's first step at once, outside any task, and finish it in a task if it must wait.

A message that arrives on a link is handed to the router by a protocol
callback. Delivering it through a task costs a trip around the event loop
per message, and most deliveries never wait: the node decodes the envelope
and appends it to a mailbox that has room. So the router starts such a
delivery right there (:func:`step`) and only when the coroutine really waits
(a full mailbox under the ``block`` policy, credit for a reply) does it hand
the rest to a task (:class:`Resumed`), which keeps the link's order because
later messages queue behind it.

Only handlers marked with
:func:`~synaptic_mesh.transports.base.eager_handler` are started this way:
code that runs before its first ``await`` has no current task, so it must not
call what needs one (``asyncio.timeout``, AnyIO cancel scopes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Final

PENDING: Any = object()
"""What :func:`step` returns for a coroutine that has to wait (see :class:`Resumed`)."""


class _Done:
    """An awaitable that is already done: awaiting it costs no coroutine and no loop turn."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


DONE: Final[Awaitable[None]] = _Done()
"""What a handler that is a plain function returns when it finished at once.

Such a handler (marked ``eager_handler`` like the coroutine kind) returns
either ``DONE`` or a coroutine with the rest of its work; any caller may
``await`` what it returns, and the router, which starts deliveries from its
protocol callback, skips the coroutine machinery (creating, stepping and
finishing a coroutine) for the common case that needs none.
"""


def step(coro: Coroutine[Any, Any, Any]) -> tuple[Any, Any]:
    """Run ``coro`` up to its first suspension: ``(result, None)`` if it finished,
    ``(PENDING, yielded)`` if it waits on ``yielded`` (a future, or ``None``).

    Exceptions raised by the coroutine propagate.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return stop.value, None
    return PENDING, yielded


class Resumed:
    """``await Resumed(coro, yielded)`` in a task: the rest of a coroutine :func:`step` began.

    The task waits on what the coroutine yielded, exactly as if it had run the
    coroutine from the start, and passes results, exceptions and cancellation
    through to it. :meth:`throwing` makes one that first raises an exception
    in the coroutine (a cancellation that reached the task before it took the
    coroutine over).
    """

    __slots__ = ("_coro", "_error", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded
        self._error: BaseException | None = None

    def throwing(self, error: BaseException) -> Resumed:
        """This continuation, raising ``error`` in the coroutine where it waits."""
        self._error = error
        return self

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, signal, error = self._coro, self._yielded, self._error
        if error is not None:
            self._error = None
            try:
                signal = coro.throw(error)
            except StopIteration as stop:
                return stop.value
        while True:
            try:
                sent = yield signal
            except BaseException as exc:  # cancellation included: the coroutine decides
                try:
                    signal = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    signal = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
