"""Smoke test of ``bench/opcodes.py``: the count is exact and repeatable, and the bench runs."""

from __future__ import annotations

import json
from pathlib import Path

from synaptic_mesh.bench import opcodes


def loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def counted(n: int) -> int:
    with opcodes.OpcodeCounter() as counter:
        loop(n)
    return sum(c for (_, name, _), c in counter.counts.items() if name == "loop")


def test_the_count_is_the_same_every_time_and_grows_with_the_work() -> None:
    assert counted(10) == counted(10)
    per_turn = (counted(20) - counted(10)) / 10
    assert per_turn == (counted(30) - counted(20)) / 10
    assert 3 <= per_turn <= 12  # a loop turn is a handful of bytecodes, not zero, not a call


def test_the_bench_counts_asks_and_tells_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "opcodes.json"
    assert (
        opcodes.main(
            ["--transport", "inproc", "-m", "20", "-n", "50", "--top", "3", "--json", str(out)]
        )
        == 0
    )
    figures = json.loads(out.read_text())
    assert figures["bench"] == "opcodes" and figures["transport"] == "inproc"
    # each ask does at least an actor's dispatch and a reply; a tell at least a mailbox put
    assert figures["bytecodes_per_ask"] > figures["bytecodes_per_tell"] > 10
