"""Every bad frame the codec refuses becomes a dead letter; the node goes on."""

from __future__ import annotations

from typing import Any

import pytest

from synaptic_mesh import DEAD_LETTER_SUBJECT, DeadLetter, Node
from tests.conformance.actors import Echo, Ping, Pong
from tests.runtime.test_codec import BAD


@pytest.mark.parametrize(("frames", "reason"), BAD)
async def test_bad_frame_is_dead_lettered_and_node_keeps_serving(
    frames: list[Any], reason: str
) -> None:
    async with Node() as node:
        letters: list[DeadLetter] = []

        async def watch(letter: DeadLetter, subject: str) -> None:
            letters.append(letter)

        await node.subscribe(DEAD_LETTER_SUBJECT, watch)
        ref = await node.spawn(Echo, "core.echo")
        await node.transport.publish("core.echo", frames)  # a foreign peer's garbage
        await node.wait_idle(timeout=5)
        assert len(letters) == 1
        assert letters[0].subject == "core.echo"
        if frames:
            assert letters[0].reason == f"decode error: {reason}" or reason in letters[0].reason
            assert node.stats.decode_errors == 1
        else:
            assert letters[0].reason == "empty message (no frames)"
        assert await ref.ask(Ping(1), timeout=5) == Pong(1, "core.echo")
