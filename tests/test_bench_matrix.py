"""Smoke test of ``synaptic-mesh bench`` (``bench/matrix.py``): outputs, rows, skip reasons.

The machine is shared and noisy, so nothing here judges a figure's size: the
quick run must produce every output with rows for ``inproc``, ``tcp`` and
``shm``, and each way a section can go wrong (missing module, no ``--json``,
non-zero exit, hang, unreadable JSON, broker down) must end as a skipped or
failed section with its reason, never as a silently missing one.

The quick run is narrowed to ``--transports inproc,tcp,shm --patterns
survey,request-reply`` so the test stays well under a minute whatever the
ZeroMQ, NNG and NATS scripts cost; those sections are then reported as
skipped because none of their transports is selected.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from synaptic_mesh.bench import matrix

PNG = b"\x89PNG\r\n\x1a\n"


def _run_cli(*argv: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "synaptic-mesh"
    command = (
        [str(script)]
        if script.exists()
        else [
            sys.executable,
            "-c",
            "from synaptic_mesh.runtime.cli import main; raise SystemExit(main())",
        ]
    )
    return subprocess.run(
        [*command, *argv], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_quick_run_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = _run_cli(
        "bench",
        "--quick",
        "--transports",
        "inproc,tcp,shm",
        "--patterns",
        "survey,request-reply",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("results.json", "report.md", "latency.png", "throughput.png"):
        assert (out / name).is_file(), name
    for name in ("latency.png", "throughput.png"):
        assert (out / name).read_bytes()[:8] == PNG, name

    results = json.loads((out / "results.json").read_text())
    sections = {s["name"]: s for s in results["sections"]}
    for name in ("inproc", "links", "bulk", "patterns"):
        assert sections[name]["status"] == "ran", sections[name]
    assert results["quick"] is True
    assert results["machine"]["cpus"] >= 1
    rows = results["rows"]
    assert {"inproc", "tcp", "shm"} <= {r["transport"] for r in rows}
    assert {r["transport"] for r in rows} <= {"inproc", "tcp", "shm", "floor"}
    keys = {
        "section",
        "transport",
        "pattern",
        "metric",
        "value",
        "unit",
        "floor_name",
        "floor_value",
        "ratio",
        "target",
        "verdict",
        "spread",
    }
    assert all(keys <= set(r) for r in rows)
    # each figure of the runtime stands next to a floor from the same run
    assert any(r["section"] == "inproc" and r["floor_name"] == "handactor_waiter" for r in rows)
    assert any(r["section"] == "links" and r["floor_name"] == "raw tcp" for r in rows)
    # the 100 MB transfer: one source (bulk), every selected transport, warm and cold vs memcpy
    assert not any(r["section"] == "links" and "100 MB" in r["metric"] for r in rows)
    for transport in ("inproc", "tcp", "shm"):
        for metric in ("100 MB transfer, warm", "100 MB transfer, cold"):
            assert any(
                r["section"] == "bulk"
                and r["transport"] == transport
                and r["metric"] == metric
                and r["floor_name"] == "memcpy"
                and r["value"] > 0
                for r in rows
            ), (transport, metric)
    assert any(r["section"] == "bulk" and r["floor_name"] == "tcp://" for r in rows)
    patterns = {r["pattern"] for r in rows if r["section"] == "patterns"}
    assert patterns == {"survey", "request-reply", "its hook"}
    tails = [r for r in rows if r["section"] == "patterns" and r["metric"] == "p99.9"]
    assert {(r["transport"], r["pattern"]) for r in tails} == {
        (t, p) for t in ("inproc", "tcp", "shm") for p in patterns
    }
    # a quick run has few samples per tail percentile, and says so next to the figure
    assert all(r["samples"] and "few samples" in r["note"] for r in tails)
    assert all(r["verdict"] in ("PASS", "MISS") for r in rows if r["target"])

    assert set(sections) == {s.name for s in matrix.SECTIONS}
    for name in ("patterns-mq", "zmq", "nng", "nats"):
        assert sections[name]["status"] == "skipped"
        assert sections[name]["reason"] == "none of its transports selected"

    report = (out / "report.md").read_text()
    assert "shared memory is 7x faster than TCP" in report
    assert "tcp:// of this runtime" in report  # the baseline of each ratio is named
    assert "bulk: 100 MB ndarray ask, shm:// vs tcp:// (warm)" in report
    assert "small (64 B): shm:// vs tcp://, round trip p50" in report
    assert "## 100 MB attachment on every transport" in report
    assert "min..max" in report and "few samples" in report
    assert "## Goals of the earlier issues" in report
    assert "none of its transports selected" in report
    assert "Goals" in done.stdout


def _args(tmp_path: Path, *argv: str) -> Any:
    return matrix.parse_args([*argv, "--out", str(tmp_path / "out")])


def test_unknown_transport_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        matrix.parse_args(["--transports", "inproc,carrier-pigeon"])
    assert exc.value.code == 2
    assert "unknown carrier-pigeon" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_made_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        matrix.parse_args(["--out", str(blocker / "results")])
    assert exc.value.code == 2
    assert f"--out {blocker / 'results'}: cannot create the folder" in capsys.readouterr().err


def test_a_missing_module_is_skipped_with_its_reason(tmp_path: Path) -> None:
    section = matrix.Section("nosuch", "nosuch", ("inproc",))
    outcome = matrix.plan(section, _args(tmp_path, "--transports", "inproc"), tmp_path)
    assert outcome.status == "skipped"
    assert outcome.reason == "module synaptic_mesh.bench.nosuch is missing"


def test_a_module_without_json_is_named() -> None:
    # _stats runs as a module but has no command line at all: the reason names it
    reason = matrix.lacks_json("synaptic_mesh.bench._stats")
    assert reason is not None and "synaptic_mesh.bench._stats" in reason


def _outcome(code: str) -> matrix.Outcome:
    outcome = matrix.Outcome("fake")
    outcome.command = [sys.executable, "-c", code]
    return outcome


def test_a_failing_section_keeps_its_last_words(tmp_path: Path) -> None:
    outcome = _outcome("print('measuring'); print('broker gone'); raise SystemExit(3)")
    matrix.run_section(matrix.Section("fake", "fake", ()), outcome, tmp_path / "fake.log", 30)
    assert outcome.status == "failed"
    assert outcome.returncode == 3
    assert outcome.reason == "exited with status 3: broker gone"
    assert outcome.tail == ["measuring", "broker gone"]
    assert "broker gone" in (tmp_path / "fake.log").read_text()


def test_a_hung_section_is_ended_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    outcome = _outcome(code)
    started = time.monotonic()
    matrix.run_section(matrix.Section("fake", "fake", ()), outcome, tmp_path / "fake.log", 3)
    assert time.monotonic() - started < 20
    assert outcome.status == "failed"
    assert outcome.reason == "timed out after 3 s"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped by init once killed; its /proc entry then goes
    status = Path(f"/proc/{child}/status")
    assert not status.exists() or "zombie" in status.read_text(), "the far child survived"


def test_json_the_normaliser_does_not_understand_fails_the_section(tmp_path: Path) -> None:
    (tmp_path / "links.json").write_text(json.dumps({"bench": "links", "something": "else"}))
    outcome = matrix.Outcome("links", status="ran")
    section = next(s for s in matrix.SECTIONS if s.name == "links")
    matrix.read_rows(section, outcome, tmp_path / "links.json", _args(tmp_path))
    assert outcome.status == "failed"
    assert outcome.reason.startswith("JSON not understood (KeyError")
    assert outcome.data == {"bench": "links", "something": "else"}  # kept for results.json


def test_an_unreachable_broker_is_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("SYNAPTIC_MESH_NATS_URL", f"nats://127.0.0.1:{port}")
    reason = matrix.broker_reachable("nats")
    assert reason is not None
    assert reason.startswith(f"nats server unreachable at nats://127.0.0.1:{port}")


def test_raw_client_sections_are_judged_against_their_raw_floor() -> None:
    from synaptic_mesh.bench.matrix_rows import NORMALISERS

    small = {
        "raw nng tcp": {"p50": [100.0, 120.0], "p99": [200.0, 220.0], "oneway": [1000.0, 900.0]},
        "nng+tcp": {"p50": [150.0, 150.0], "p99": [300.0, 300.0], "oneway": [800.0, 810.0]},
    }
    rows = NORMALISERS["nng"]({"small": small})
    judged = {r.metric: r for r in rows if r.target}
    assert set(judged) == {"round trip p50", "one-way throughput"}
    rtt = judged["round trip p50"]
    assert (rtt.floor_name, rtt.floor_value, rtt.target) == ("raw nng tcp", 110.0, "<= 1.3x")
    assert rtt.ratio == pytest.approx(150 / 110) and rtt.verdict == "MISS"
    assert rtt.ratio_range == pytest.approx((1.25, 1.5))
    share = judged["one-way throughput"]
    assert share.ratio == pytest.approx(805 / 950) and share.verdict == "PASS"
    assert share.target == ">= 70%"

    series = {
        "rtt p50 raw": [200.0],
        "rtt p50 transport": [300.0],
        "flow raw": [100.0],
        "flow transport": [80.0],
        "js raw": [10.0],
        "js transport": [5.0],
    }
    rows = NORMALISERS["nats"]({"series": series})
    verdicts = {(r.transport, r.metric): r.verdict for r in rows if r.target}
    assert verdicts == {
        ("nats", "round trip p50"): "MISS",  # 1.5x > 1.3x
        ("nats", "one-way throughput"): "PASS",  # 80% >= 70%
    }  # JetStream is reported next to raw nats-py, with no target (issue 8)
    js = next(r for r in rows if r.peer == "nats+js://")
    assert (js.ratio, js.floor_name, js.target) == (0.5, "raw nats-py", None)


def test_pooled_tail_is_the_figure_and_few_samples_are_said() -> None:
    from synaptic_mesh.bench.matrix_rows import NORMALISERS

    small = {
        "raw router": {
            "p50": [100.0],
            "p999": [400.0, 500.0],
            "p999_pooled": 450.0,
            "samples": 2_000,
            "oneway": [1000.0],
        },
        "zmq": {
            "p50": [120.0],
            "p999": [600.0, 800.0],
            "p999_pooled": 900.0,
            "samples": 2_000,
            "oneway": [900.0],
        },
    }
    rows = NORMALISERS["zmq"]({"small": small})
    tail = next(r for r in rows if r.peer == "zmq://" and r.metric == "round trip p99.9")
    assert (tail.value, tail.floor_value, tail.ratio) == (900.0, 450.0, 2.0)
    assert (tail.low, tail.high, tail.runs) == (600.0, 800.0, 2)  # spread from the rounds
    assert tail.samples == 2_000
    assert tail.note == "few samples: p99.9 of 2,000 rests on its 2 slowest"
    p50 = next(r for r in rows if r.peer == "zmq://" and r.metric == "round trip p50")
    assert p50.note is None and p50.samples is None


def test_a_transport_a_section_skipped_is_named_with_its_reason(tmp_path: Path) -> None:
    data = {
        "paths": {"memcpy": {"cold_s": [0.05], "warm_s": [0.01], "failures": []}},
        "skipped": {"nats": "capabilities.max_message is 1,044,480 bytes", "zmq": "unselected"},
    }
    (tmp_path / "bulk.json").write_text(json.dumps(data))
    outcome = matrix.Outcome("bulk", status="ran")
    section = next(s for s in matrix.SECTIONS if s.name == "bulk")
    args = _args(tmp_path, "--transports", "inproc,nats")
    matrix.read_rows(section, outcome, tmp_path / "bulk.json", args)
    assert outcome.notes == ["bulk skipped nats: capabilities.max_message is 1,044,480 bytes"]
    assert outcome.status == "failed"  # only the floor: no figure of a selected transport
    assert outcome.reason == "ran, but produced no figure for the selected transports"


def test_a_section_that_timed_out_keeps_the_rounds_it_wrote(tmp_path: Path) -> None:
    row = {
        "operation": "ask",
        "p50_us": [70.0],
        "p99_us": [120.0],
        "ops_per_s": [13_000.0],
        "bare_p50_us": [68.0],
        "bare_ops_per_s": [13_500.0],
        "verdict": "PASS",
        "failures": [],
    }
    data = {"rounds_done": 1, "complete": False, "transports": {"zmq": {"request-reply": row}}}
    (tmp_path / "patterns-mq.json").write_text(json.dumps(data))
    outcome = matrix.Outcome("patterns-mq", status="failed", reason="timed out after 400 s")
    section = next(s for s in matrix.SECTIONS if s.name == "patterns-mq")
    matrix.read_rows(section, outcome, tmp_path / "patterns-mq.json", _args(tmp_path))
    assert outcome.status == "failed"
    assert outcome.reason == (
        f"timed out after 400 s; kept the {len(outcome.rows)} figures of the rounds it finished"
    )
    assert {(r.transport, r.pattern) for r in outcome.rows} == {("zmq", "request-reply")}


def test_a_section_that_timed_out_before_writing_keeps_its_reason(tmp_path: Path) -> None:
    outcome = matrix.Outcome("patterns-mq", status="failed", reason="timed out after 400 s")
    section = next(s for s in matrix.SECTIONS if s.name == "patterns-mq")
    matrix.read_rows(section, outcome, tmp_path / "nothing.json", _args(tmp_path))
    assert (outcome.status, outcome.reason, outcome.rows) == ("failed", "timed out after 400 s", [])
