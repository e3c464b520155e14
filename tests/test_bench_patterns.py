"""Smoke test of ``bench/patterns.py``: every trial runs on inproc, tcp and shm, no timings judged.

The machine is shared and noisy, so nothing here asserts on a figure's size:
only that each pattern and its twin ran on two linked nodes per transport and
produced figures, that a transport that cannot start is skipped with its
reason, and that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from synaptic_mesh.bench import patterns

SCHEMES = ("inproc", "tcp", "shm")
PATTERNS = {"pub-sub", "bus", "request-reply", "its hook", "pipeline", "survey", "hotline"}


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_two_nodes_carry_a_message_from_a_to_b(
    scheme: str, no_leaks: Any, made_dirs: list[str]
) -> None:
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
    assert [d for d in made_dirs if os.path.exists(d)] == [], "two_nodes left its directory"
    assert bool(made_dirs) == (scheme == "shm")
    await no_leaks()


def test_quick_run_covers_every_pattern_on_inproc_tcp_and_shm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], made_dirs: list[str]
) -> None:
    out = tmp_path / "patterns.json"
    assert patterns.main(["--quick", "--transports", ",".join(SCHEMES), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipping" not in printed and "FAILED" not in printed
    for scheme in SCHEMES:
        assert f"\n{scheme}://\n| pattern " in printed
    # 1/10 sizes: every p99.9 rests on few operations, and the table says so
    assert "* rests on few samples" in printed
    assert "survey: few samples: p99.9 of 50 rests on its 1 slowest" in printed
    data = json.loads(out.read_text())
    assert data["skipped"] == {}
    assert set(data["transports"]) == set(SCHEMES)
    for scheme, table in data["transports"].items():
        assert set(table) == PATTERNS, scheme
        for name, row in table.items():
            assert row["failures"] == [], (scheme, name)
            assert len(row["ops_per_s"]) == len(row["bare_ops_per_s"]) == 1, (scheme, name)
            assert row["ops_per_s"][0] > 0 and row["bare_ops_per_s"][0] > 0, (scheme, name)
            assert row["p50_us"][0] <= row["p99_us"][0] <= row["p999_us"][0], (scheme, name)
            # one round: the pooled p99.9 is that round's, over every operation it timed
            assert row["p999_pooled_us"] == row["p999_us"][0], (scheme, name)
            assert row["samples"] == row["samples_per_round"][0] == data["sizes"][name]
            assert row["bare_p999_pooled_us"] >= row["bare_p99_us"][0], (scheme, name)
            assert row["verdict"] in ("PASS", "MISS"), (scheme, name)
    assert made_dirs and [d for d in made_dirs if os.path.exists(d)] == []


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


def test_timed_out_trials_are_failures_and_two_stop_the_row(tmp_path: Path) -> None:
    out = tmp_path / "patterns.json"
    argv = ["--quick", "--transports", "inproc", "--trial-timeout", "0.001", "--json", str(out)]
    assert patterns.main(argv) == 0
    data = json.loads(out.read_text())
    assert (data["rounds_done"], data["complete"]) == (1, True)
    for name, row in data["transports"]["inproc"].items():
        assert row["ops_per_s"] == [] and row["p999_pooled_us"] is None, name
        # the warm-up's two time-outs, then the round is not run: no second wait per trial
        assert row["failures"] == [
            "pattern (warm-up): timed out after 0 s (a message lost?)",
            "bare (warm-up): timed out after 0 s (a message lost?)",
            "pattern: not run: 2 trials timed out already",
            "bare: not run: 2 trials timed out already",
        ], name


def test_a_trial_timeout_below_zero_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        patterns.main(["--trial-timeout", "-1"])
    assert exc.value.code == 2
    assert "--trial-timeout must be positive" in capsys.readouterr().err


def test_rows_whose_twin_is_durable_on_jetstream_are_shown_but_not_judged() -> None:
    for scheme, judged in (("nats+js", {"pub-sub", "its hook"}), ("nats", PATTERNS)):
        rows = {row.pattern.strip(): row for row in patterns.make_rows(scheme)}
        for row in rows.values():
            row.rate, row.bare_rate = [100.0], [200.0]  # +100%: a MISS wherever judged
        assert {n for n, r in rows.items() if r.verdict() == "MISS"} == judged, scheme
        assert rows["bus"].overhead() == 1.0  # the figure itself is kept
