"""A crash storm: 1000 crashes leak no task and no memory, and intensity holds."""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc

import pytest

from synaptic_mesh import Node, Supervisor, SupervisorFailed, child
from tests.supervisors.kit import Child, Crash, settled


async def test_thousand_crashes_then_the_intensity_rule(caplog: pytest.LogCaptureFixture) -> None:
    # 1000 logged tracebacks would be kept by pytest's log capture, not by the mesh
    caplog.set_level(logging.CRITICAL, logger="synaptic_mesh")
    tree = Supervisor("storm", max_restarts=999, within=600, children=[child(Child, "storm.a")])
    node = Node(supervise=tree)
    await node.start()
    ref = node.ref("storm.a")
    for _ in range(50):  # warm up caches and free lists before measuring
        ref.tell_nowait(Crash())
        await settled(node)
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(949):
        ref.tell_nowait(Crash())
        await settled(node)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert node._local["storm.a"].incarnation == 1000
    assert len(asyncio.all_tasks()) == tasks_before, "a restart must not leave a task behind"
    top = [str(s) for s in after.compare_to(before, "filename")[:6]]
    assert grown < 512 * 1024, f"memory grew by {grown} bytes over 949 restarts: {top}"
    assert node.failure is None and node.supervisor("storm").state == "running"
    ref.tell_nowait(Crash("the thousandth"))  # restart number 1000 > max_restarts
    with pytest.raises(SupervisorFailed, match="more than 999 restarts"):
        await node.wait_idle(timeout=10)
    await node.close()
    assert node.actors() == []
