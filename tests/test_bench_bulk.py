"""Smoke test of ``bench/bulk.py``: 100 MB over each transport, or a reason why not.

Nothing here judges a figure's size (the machine is shared and noisy): each
path must move the array once cold and once warm with the receiver where the
docstring says, a transport whose ``max_message`` is too small must be
skipped with that limit in its reason, and the matrix's normaliser must turn
the JSON into rows with memcpy as the floor of every path.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from synaptic_mesh.bench import bulk
from synaptic_mesh.bench.matrix_rows import COLD, FLOOR, WARM, from_bulk
from tests.conftest import skip_or_fail


def test_quick_run_moves_the_array_on_every_selected_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], made_dirs: list[str]
) -> None:
    out = tmp_path / "bulk.json"
    assert bulk.main(["--quick", "--transports", "inproc,tcp,shm", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FAILED" not in printed and "skipping" not in printed
    data = json.loads(out.read_text())
    assert data["bulk_bytes"] == 100_000_000
    assert list(data["paths"]) == ["memcpy", "raw uds", "raw tcp", "inproc", "tcp", "shm"]
    for name, path in data["paths"].items():
        assert path["failures"] == [], name
        assert len(path["cold_s"]) == 1 and len(path["warm_s"]) == 1, name
        assert all(t > 0 for t in path["cold_s"] + path["warm_s"]), name
    receivers = {name: p["receiver"] for name, p in data["paths"].items()}
    assert receivers["tcp"] == receivers["shm"] == receivers["raw tcp"] == "another process"
    assert receivers["memcpy"] == "this process"
    assert receivers["inproc"] == "this process, by reference"
    assert data["skipped"] == {}
    assert made_dirs, "the bench made no directory for its sockets"
    assert [d for d in made_dirs if os.path.exists(d)] == [], "the bench left a directory behind"


def test_a_transport_too_small_for_the_message_is_skipped_with_its_limit() -> None:
    # tcp:// with max_message=1 MiB stands for any transport (or broker) whose limit is lower
    reason = asyncio.run(bulk.capacity_of("tcp://127.0.0.1:0?max_message=1048576"))
    assert reason is not None
    assert reason.startswith("capabilities.max_message is 1,048,576 bytes, below the 100,000,000")


def test_a_transport_that_cannot_start_is_skipped_with_why(tmp_path: Path) -> None:
    reason = asyncio.run(bulk.capacity("nosuch", str(tmp_path)))
    assert reason is not None and reason.startswith("cannot start: UnknownTransport")


def test_fewer_than_one_round_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bulk.parse_args(["--rounds", "0"])
    assert exc.value.code == 2
    assert "--rounds must be positive" in capsys.readouterr().err


def test_rows_put_every_path_next_to_memcpy_and_judge_shm_against_tcp() -> None:
    seconds = {  # 100 MB: memcpy 10 ms, shm 12.5 ms, tcp 200 ms, raw tcp 100 ms
        "memcpy": ([0.05], [0.010, 0.010]),
        "raw tcp": ([0.2], [0.100, 0.100]),
        "tcp": ([0.4], [0.200, 0.200]),
        "shm": ([0.02], [0.0125, 0.0125]),
    }
    data = {
        "bulk_bytes": 100_000_000,
        "paths": {
            name: {"cold_s": cold, "warm_s": warm, "failures": []}
            for name, (cold, warm) in seconds.items()
        },
        "skipped": {"nats": "capabilities.max_message is 1,044,480 bytes"},
    }
    rows = from_bulk(data)
    warm = {(r.peer, r.floor_name): r for r in rows if r.metric == WARM}
    assert warm[("memcpy", None)].transport == FLOOR
    assert warm[("memcpy", None)].value == pytest.approx(10.0)  # GB/s
    shm_tcp = warm[("shm://", "tcp://")]
    assert shm_tcp.ratio == pytest.approx(16.0) and shm_tcp.verdict == "PASS"
    assert shm_tcp.target == ">= 7x"
    shm_memcpy = warm[("shm://", "memcpy")]
    assert shm_memcpy.ratio == pytest.approx(0.8) and shm_memcpy.verdict == "PASS"
    assert warm[("tcp://", "memcpy")].target is None  # other paths: for information
    assert warm[("tcp://", "raw tcp")].ratio == pytest.approx(0.5)
    assert (warm[("shm://", "tcp://")].low, warm[("shm://", "tcp://")].high) == (8.0, 8.0)
    cold = {(r.peer, r.floor_name): r for r in rows if r.metric == COLD}
    assert cold[("shm://", "tcp://")].ratio == pytest.approx(20.0)
    assert cold[("shm://", "tcp://")].target is None  # the goal is on warm transfers


def test_failed_transfers_become_a_missed_row() -> None:
    data = {
        "paths": {
            "memcpy": {"cold_s": [0.05], "warm_s": [0.01], "failures": []},
            "zmq": {"cold_s": [], "warm_s": [], "failures": ["round 1: TimeoutError: "]},
        }
    }
    failed = [r for r in from_bulk(data) if r.metric == "failed transfers"]
    assert [(r.peer, r.value, r.verdict) for r in failed] == [("zmq://", 1.0, "MISS")]
    assert failed[0].note is not None and "TimeoutError" in failed[0].note


def test_nats_is_skipped_with_the_servers_limit(tmp_path: Path) -> None:
    reason = asyncio.run(bulk.capacity("nats", str(tmp_path)))
    if reason is not None and reason.startswith("cannot start"):
        skip_or_fail(f"NATS server unreachable: {reason}")
    assert reason is not None, "a NATS server carrying 100 MB in one message?"
    assert reason.startswith("capabilities.max_message is ")
    assert "max_payload" in reason and "[[route]]" in reason


async def _our_streams() -> set[str]:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2, max_reconnect_attempts=0)
    try:
        infos = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    return {i.config.name for i in infos if i.config.name.startswith(f"MESH_bench{os.getpid()}x")}


def test_the_jetstream_probe_leaves_no_stream_behind(tmp_path: Path) -> None:
    reason = asyncio.run(bulk.capacity("nats+js", str(tmp_path)))
    if reason is not None and reason.startswith("cannot start"):
        skip_or_fail(f"NATS server unreachable: {reason}")
    assert reason is not None and reason.startswith("capabilities.max_message is ")
    assert asyncio.run(_our_streams()) == set()
