"""Monitors: one actor watching another, Erlang style.

``monitor`` returns a reference; when the watched actor's incarnation ends
(it stops, crashes or is killed, even if its supervisor then restarts it) the
watcher gets one ``Down(subject, reason)`` on its system lane, so a full
mailbox cannot lose it, and the monitor is gone. Monitoring a subject that
nobody serves gives ``Down(subject, "noproc")`` at once.

An actor on another node is watched through its node: on a link transport
(``tcp://``, ...) the watcher gets ``Down(subject, "noconnection: ...")``
when the last node serving that subject stops answering heartbeats or
leaves, and ``Down(subject, "gone: ...")`` when the actor stops while its
node lives (its node withdraws the subscription; the reason stays there).
``noproc`` for a remote subject needs a transport that can tell who serves it
(link transports, ``inproc://``); on a broker transport (``nats://``,
``zmq+pubsub://``), which cannot, the monitor stays armed instead.
"""

from __future__ import annotations

import itertools

from synaptic_mesh.runtime.messages import message

NOPROC = "noproc"


@message(name="_mesh.Down")
class Down:
    """The watched actor at ``subject`` ended; ``reason`` says how."""

    subject: str
    reason: str


class Monitors:
    """Who watches whom, by subject; one-shot like Erlang's monitors."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._by_target: dict[str, dict[int, str]] = {}
        self._targets: dict[int, str] = {}

    def add(self, target: str, watcher: str) -> int:
        """Register ``watcher`` on ``target``; returns the monitor's reference."""
        reference = next(self._ids)
        self._by_target.setdefault(target, {})[reference] = watcher
        self._targets[reference] = target
        return reference

    def remove(self, reference: int) -> None:
        """Forget one monitor (unknown references are ignored)."""
        target = self._targets.pop(reference, None)
        if target is not None:
            watchers = self._by_target.get(target, {})
            watchers.pop(reference, None)
            if not watchers:
                self._by_target.pop(target, None)

    def fire(self, target: str) -> list[str]:
        """The watchers of ``target``, whose monitors are consumed."""
        watchers = self._by_target.pop(target, {})
        for reference in watchers:
            self._targets.pop(reference, None)
        return list(watchers.values())

    def drop_watcher(self, watcher: str) -> None:
        """Forget every monitor held by ``watcher`` (it has stopped)."""
        for reference, target in list(self._targets.items()):
            if self._by_target.get(target, {}).get(reference) == watcher:
                self.remove(reference)

    def targets(self) -> list[str]:
        """Every watched subject."""
        return list(self._by_target)

    def __len__(self) -> int:
        return len(self._targets)
