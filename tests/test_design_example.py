"""The example of DESIGN section 1 runs as written."""

from __future__ import annotations

import asyncio

from synaptic_mesh import AgentActor, Node, Supervisor, child, message, on


@message(name="design.Verify")
class Verify:  # any @message dataclass travels on every transport
    claim: str


@message(name="design.Verdict")
class Verdict:
    ok: bool
    reason: str


class Gemini(AgentActor):
    @on(Verify)
    async def verify(self, msg: Verify) -> Verdict:  # return value = reply to ask
        return Verdict(ok=True, reason="checked")


class Claude(AgentActor):
    async def on_start(self) -> None:
        verdict = await self.ask("core.gemini", Verify("mesh is watertight"), timeout=5)
        await self.publish("tot.branch3.exploration", verdict)


tree = Supervisor(
    "core",
    strategy="one_for_one",
    max_restarts=3,
    within=5.0,
    children=[
        child(Gemini, "core.gemini"),
        child(Claude, "core.claude", restart="transient"),
    ],
)


async def main() -> None:
    async with Node(transport="inproc://", supervise=tree) as node:
        await node.wait_idle()


def test_design_section_one_example_runs_as_written() -> None:
    asyncio.run(main())  # raises if a child fails to start or the tree fails


async def test_design_example_publishes_the_verdict() -> None:
    seen: list[tuple[str, object]] = []
    async with Node(transport="inproc://") as node:

        async def watch(msg: object, subject: str) -> None:
            seen.append((subject, msg))

        await node.subscribe("tot.>", watch)
        await node.start_supervisor(tree)
        await node.wait_idle()
        assert node.supervision_tree().splitlines()[0].startswith("core (one_for_one")
    assert seen == [("tot.branch3.exploration", Verdict(ok=True, reason="checked"))]
