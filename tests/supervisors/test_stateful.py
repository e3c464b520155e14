"""Hypothesis state machine: random trees, random crash/exit/stop sequences.

After every step the machine compares the running tree with a model of the
OTP rules: which children were restarted (exactly the set the strategy and
the restart types prescribe), in which order they were stopped (the failed
child first, then the rest of the group in reverse start order) and started
again (start order), that intensity is enforced, and that no child ever runs
twice under one name.
"""

from __future__ import annotations

import asyncio
import logging

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from synaptic_mesh import Node, Supervisor, child
from synaptic_mesh.supervisors.spec import RESTART_TYPES, STRATEGIES
from tests.supervisors.kit import Child, Crash, Quit, names, settled

FLAT_STRATEGIES = [s for s in STRATEGIES if s != "simple_one_for_one"]


class SupervisionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.node: Node | None = None
        self.logger = logging.getLogger("synaptic_mesh")
        self.level = self.logger.level  # restored by teardown: later tests read these logs
        self.logger.setLevel(logging.CRITICAL)

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize(
        strategy=st.sampled_from(FLAT_STRATEGIES),
        types=st.lists(st.sampled_from(RESTART_TYPES), min_size=1, max_size=5),
        max_restarts=st.integers(min_value=0, max_value=4),
    )
    def build(self, strategy: str, types: list[str], max_restarts: int) -> None:
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.events: list[tuple[str, str]] = []
        self.types = {f"t.c{i}": kind for i, kind in enumerate(types)}
        self.alive = list(self.types)
        self.expected_incarnation = dict.fromkeys(self.alive, 1)
        self.restarts = 0
        self.failed = False
        tree = Supervisor(
            "t",
            strategy,  # type: ignore[arg-type]
            max_restarts=max_restarts,
            within=600,
            children=[
                child(Child, name, restart=kind, args=[self.events])  # type: ignore[arg-type]
                for name, kind in self.types.items()
            ],
        )
        self.node = Node(f"inproc://stateful-{id(self)}", supervise=tree)
        self.run(self.node.start())
        assert names(self.events, "start") == self.alive, "children start in spec order"
        self.events.clear()

    # -- steps -------------------------------------------------------------------

    @precondition(lambda self: self.node is not None and not self.failed and self.alive)
    @rule(pick=st.integers(min_value=0, max_value=99), how=st.sampled_from(["crash", "exit"]))
    def end_a_child(self, pick: int, how: str) -> None:
        name = self.alive[pick % len(self.alive)]
        kind = self.types[name]
        self.events.clear()
        assert self.node is not None
        self.node.ref(name).tell_nowait(Crash() if how == "crash" else Quit())
        self.run(settled(self.node, timeout=10))
        restart = kind == "permanent" or (kind == "transient" and how == "crash")
        if not restart:
            self.alive.remove(name)
            self._expect(stops=[name], restarted=[])
            return
        self.restarts += 1
        if self.restarts > self.max_restarts:
            others = [n for n in self.alive if n != name]
            self.failed = True
            self.alive = []
            self._expect(stops=[name, *reversed(others)], restarted=[])
            assert self.node.failure is not None
            assert self.node.failure.chain[0] == (
                f"t: more than {self.max_restarts} restarts within 600 s"
            )
            return
        group = self._group(name)
        stops = [name, *reversed([n for n in group if n != name])]
        restarted = []
        for member in group:
            if member != name and self.types[member] == "temporary":
                self.alive.remove(member)
            else:
                restarted.append(member)
                self.expected_incarnation[member] += 1
        self._expect(stops=stops, restarted=restarted)

    @precondition(lambda self: self.node is not None and not self.failed and self.alive)
    @rule(pick=st.integers(min_value=0, max_value=99))
    def stop_a_child(self, pick: int) -> None:
        name = self.alive[pick % len(self.alive)]
        self.events.clear()
        assert self.node is not None
        self.run(self.node.stop(name))
        self.run(settled(self.node, timeout=10))
        self.alive.remove(name)
        self._expect(stops=[name], restarted=[])

    @precondition(lambda self: self.node is not None)
    @rule()
    def nothing_happens_by_itself(self) -> None:
        self.events.clear()
        self.run(asyncio.sleep(0.01))
        assert self.events == []

    # -- the model ---------------------------------------------------------------

    def _group(self, name: str) -> list[str]:
        if self.strategy == "one_for_all":
            return list(self.alive)
        if self.strategy == "rest_for_one":
            return self.alive[self.alive.index(name) :]
        return [name]

    def _expect(self, stops: list[str], restarted: list[str]) -> None:
        assert names(self.events, "stop") == stops
        assert names(self.events, "restart") == restarted
        assert names(self.events, "start") == []

    @invariant()
    def tree_matches_the_model(self) -> None:
        if self.node is None:
            return
        live = {s: c.incarnation for s, c in self.node._local.items()}
        assert live == {n: self.expected_incarnation[n] for n in self.alive}
        if not self.failed:
            sup = self.node.supervisor("t")
            assert [r.name for r in sup.children] == self.alive, "spec order is kept"

    @invariant()
    def nobody_runs_twice_under_one_name(self) -> None:
        running: set[str] = set()
        for kind, name in self.events:
            if kind in ("start", "restart"):
                assert name not in running, f"{name} started twice"
                running.add(name)
            else:
                running.discard(name)

    def teardown(self) -> None:
        try:
            if self.node is not None:
                self.run(self.node.close())
            self.loop.close()
        finally:
            self.logger.setLevel(self.level)


SupervisionMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_supervision_state_machine = SupervisionMachine.TestCase
