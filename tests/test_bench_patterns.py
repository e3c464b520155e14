"""Smoke test of ``bench/patterns.py``: every trial runs on inproc, tcp and shm, no timings judged.

The machine is shared and noisy, so nothing here asserts on a figure's size:
only that each pattern and its twin ran on two linked nodes per transport and
produced figures, that a transport that cannot start is skipped with its
reason, and that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import glob
import json
from pathlib import Path
from typing import Any

import pytest

from synaptic_mesh.bench import patterns

SCHEMES = ("inproc", "tcp", "shm")
PATTERNS = {"pub-sub", "bus", "request-reply", "its hook", "pipeline", "survey", "hotline"}


def _shm_dirs() -> set[str]:
    return set(glob.glob("/tmp/smesh-bp-*"))


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_two_nodes_carry_a_message_from_a_to_b(scheme: str, no_leaks: Any) -> None:
    before = _shm_dirs()
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def heard(msg: Any, subject: str) -> None:
        if not got.done():
            got.set_result((msg, subject))

    async with patterns.two_nodes(scheme) as (a, b):
        assert a.name == "a" and b.name == "b" and a is not b
        if scheme != "inproc":  # a link transport: each node reaches the other over the wire
            assert a.transport.peer_ids() and b.transport.peer_ids()  # type: ignore[attr-defined]
        await b.subscribe("bench.check", heard)
        await a.publish("bench.check", patterns.Ping(7))
        msg, subject = await asyncio.wait_for(got, 5)
    assert (msg, subject) == (patterns.Ping(7), "bench.check")
    assert _shm_dirs() <= before, "two_nodes left its shm directory behind"
    await no_leaks()


def test_quick_run_covers_every_pattern_on_inproc_tcp_and_shm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "patterns.json"
    before = _shm_dirs()
    assert patterns.main(["--quick", "--transports", ",".join(SCHEMES), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipping" not in printed and "FAILED" not in printed
    for scheme in SCHEMES:
        assert f"\n{scheme}://\n| pattern " in printed
    data = json.loads(out.read_text())
    assert data["skipped"] == {}
    assert set(data["transports"]) == set(SCHEMES)
    for scheme, table in data["transports"].items():
        assert set(table) == PATTERNS, scheme
        for name, row in table.items():
            assert row["failures"] == [], (scheme, name)
            assert len(row["ops_per_s"]) == len(row["bare_ops_per_s"]) == 1, (scheme, name)
            assert row["ops_per_s"][0] > 0 and row["bare_ops_per_s"][0] > 0, (scheme, name)
            assert row["p50_us"][0] <= row["p99_us"][0], (scheme, name)
            assert row["verdict"] in ("PASS", "MISS"), (scheme, name)
    assert _shm_dirs() <= before


def test_a_transport_that_cannot_start_is_skipped_with_its_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert patterns.main(["--quick", "--transports", "nosuch", "--strict"]) == 0
    printed = capsys.readouterr().out
    assert "skipping nosuch: UnknownTransport: unknown transport scheme 'nosuch'" in printed
    assert "| pattern " not in printed


def test_an_empty_transport_list_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        patterns.main(["--transports", " , "])
    assert exc.value.code == 2
    assert "--transports needs at least one scheme" in capsys.readouterr().err
