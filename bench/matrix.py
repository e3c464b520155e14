"""``synaptic-mesh bench``: every bench script, every transport, one comparison matrix.

Each section is a bench script of its own (``bench/inproc.py``,
``bench/links.py``, ``bench/bulk.py``, ``bench/patterns.py``, ``bench/zmq.py``,
``bench/nng.py``, ``bench/nats.py``), run as a **subprocess** with
``--json FILE``: a section
that crashes, hangs or is missing cannot take the others down, and each script
keeps measuring its floor in the same run as its transport, as it does when
run by hand. The matrix only orchestrates: it shows a progress bar per
section, reads each JSON file, turns it into common rows
(``bench/matrix_rows.py``), and writes ``results.json``, ``report.md``
(``bench/matrix_report.py``) and the PNG plots (``bench/matrix_plots.py``) into
``--out``.

Each figure has one source: the 100 MB transfer of every transport
(``shm://`` and ``tcp://`` included) comes from ``bulk``, so ``links`` runs
with ``--transfers 0`` and gives the 64-byte figures only.

Nothing is dropped silently: a section whose module is missing, lacks
``--json``, exits non-zero, times out, writes JSON no normaliser understands,
or covers none of the selected transports is listed as skipped or failed with
the reason (and the tail of what it printed); a transport a script skipped
(``skipped`` in its JSON, e.g. NATS for 100 MB) is named in the section's
notes with the script's reason. Sections run one after the
other: the machine has two cores, and two benches at once would measure each
other.

``bench/README.md`` documents the command; the figures are judged by ratios
within the run, never by absolute numbers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from synaptic_mesh.bench.matrix_rows import FLOOR, NORMALISERS, Row, skipped_transports

KNOWN_ORDER = (
    "inproc",
    "tcp",
    "shm",
    "zmq",
    "zmq+pair",
    "zmq+pubsub",
    "nng+tcp",
    "nng+ipc",
    "nats",
    "nats+js",
)


def available_transports() -> tuple[str, ...]:
    """Every registered transport scheme: the known ones in a readable order, then the rest.

    A transport added later (a new entry point) is benchmarked by the pattern
    section without a change here.
    """
    from synaptic_mesh.runtime.transport_lookup import available_schemes

    registered = available_schemes()
    return (
        *(t for t in KNOWN_ORDER if t in registered),
        *(t for t in registered if t not in KNOWN_ORDER),
    )


ALL_TRANSPORTS = available_transports()
CORE = ("inproc", "tcp", "shm")
PATTERNS = ("pub-sub", "bus", "request-reply", "pipeline", "survey", "hotline")
PATTERN_ROWS = {"request-reply": ("request-reply", "its hook")}
BROKERS = {"nats": ("SYNAPTIC_MESH_NATS_URL", "nats://127.0.0.1:4222")}


@dataclasses.dataclass(frozen=True)
class Section:
    """One run of a bench script and the transports its figures belong to.

    ``full`` and ``quick`` are the script's extra arguments in each mode
    (``None``: the section does not run in that mode, and says so).
    """

    name: str
    script: str
    transports: tuple[str, ...]
    takes_transports: bool = False  # passes --transports through
    broker: str | None = None  # key of BROKERS whose server it needs
    full: tuple[str, ...] | None = ()
    quick: tuple[str, ...] | None = ("--quick",)
    timeout_quick: float = 90
    timeout_full: float = 420
    note: str = ""  # said in the report whenever the section runs

    @property
    def module(self) -> str:
        return f"synaptic_mesh.bench.{self.script}"


NETWORKED = tuple(t for t in ALL_TRANSPORTS if t not in CORE)
SECTIONS = (
    Section("inproc", "inproc", ("inproc",)),
    Section(
        "links",
        "links",
        ("shm", "tcp"),
        full=("--transfers", "0"),
        quick=("--quick", "--transfers", "0"),
        note="64-byte messages only: the 100 MB transfer of shm:// and tcp:// is the bulk "
        "section's, measured with every other transport",
    ),
    Section(
        "bulk",
        "bulk",
        ALL_TRANSPORTS,
        takes_transports=True,
        timeout_quick=60,
        timeout_full=300,
    ),
    Section(
        "patterns",
        "patterns",
        CORE,
        takes_transports=True,
        full=("--repeats", "3", "--trial-timeout", "60"),
        quick=("--quick", "--trial-timeout", "30"),
        note="3 rounds (the script's default is 5), to fit the matrix in 15 minutes",
    ),
    Section(
        "patterns-mq",
        "patterns",
        NETWORKED,
        takes_transports=True,
        full=("--quick", "--repeats", "3", "--trial-timeout", "20"),
        quick=None,
        timeout_full=400,
        note="1/10 sizes, 3 rounds: the whole pattern set at full size on every networked "
        "transport would not fit in 15 minutes; a trial past 20 s (a lost message) fails",
    ),
    Section("zmq", "zmq", ("zmq", "zmq+pair", "zmq+pubsub")),
    Section("nng", "nng", ("nng+tcp", "nng+ipc")),
    Section("nats", "nats", ("nats", "nats+js"), broker="nats"),
)


@dataclasses.dataclass
class Outcome:
    """What became of one section: ran, skipped or failed, and why."""

    name: str
    status: str = "pending"  # ran | skipped | failed
    reason: str = ""
    command: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    returncode: int | None = None
    log: str | None = None
    tail: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    rows: list[Row] = dataclasses.field(default_factory=list)
    data: Any = None


# -- command line ----------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="synaptic-mesh bench",
        description="Run every bench script (in-process peers, link transports, patterns, "
        "ZeroMQ, NNG, NATS) and write the comparison matrix: a table here, and results.json, "
        "report.md, latency.png and throughput.png in --out.",
    )
    parser.add_argument(
        "--transports",
        metavar="LIST",
        default=",".join(ALL_TRANSPORTS),
        help=f"comma-separated schemes (default: all, {','.join(ALL_TRANSPORTS)})",
    )
    parser.add_argument(
        "--patterns",
        metavar="LIST",
        default=",".join(PATTERNS),
        help=f"comma-separated patterns for the pattern section (default: {','.join(PATTERNS)}); "
        "'none' skips the section",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (each script's --quick; patterns on inproc,tcp,shm only): under a "
        "minute, one round per figure, so no spread and few samples behind each tail",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="bench-results",
        help="output folder (default ./bench-results)",
    )
    args = parser.parse_args(argv)
    args.transports = _csv(args.transports)
    unknown = [t for t in args.transports if t not in ALL_TRANSPORTS]
    if unknown or not args.transports:
        parser.error(
            f"--transports: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(ALL_TRANSPORTS)}"
        )
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {args.out}: cannot create the folder ({exc.strerror or exc})")
    args.patterns = [] if args.patterns.strip() == "none" else _csv(args.patterns)
    bad = [p for p in args.patterns if p not in PATTERNS]
    if bad:
        parser.error(f"--patterns: unknown {', '.join(bad)}; choose from {', '.join(PATTERNS)}")
    return args


# -- planning --------------------------------------------------------------------------------


def broker_reachable(key: str) -> str | None:
    """``None`` when the broker's server accepts a TCP connection, else the reason."""
    env, default = BROKERS[key]
    url = os.environ.get(env, default)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{key} server unreachable at {url} (${env}): {exc}"


@functools.cache
def lacks_json(module: str) -> str | None:
    """``None`` when ``python -m module --help`` lists ``--json``, else what is wrong."""
    if importlib.util.find_spec(module) is None:
        return f"module {module} is missing"
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return f"{module} --help did not answer within 60 s"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return f"{module} --help failed ({done.returncode}): {last[0]}"
    if "--json" not in done.stdout:
        return f"{module} has no --json option (its results cannot be read)"
    return None


def plan(section: Section, args: argparse.Namespace, workdir: Path) -> Outcome:
    """The section's command, or why it does not run (status ``skipped``)."""
    out = Outcome(section.name)
    chosen = [t for t in section.transports if t in args.transports]
    if not chosen:
        out.status, out.reason = "skipped", "none of its transports selected"
        return out
    extra = section.quick if args.quick else section.full
    if extra is None:
        out.status = "skipped"
        out.reason = f"{'--quick' if args.quick else 'a full run'} leaves it out ({section.note})"
        return out
    if section.script == "patterns":
        if not args.patterns:
            out.status, out.reason = "skipped", "--patterns none"
            return out
        if set(args.patterns) != set(PATTERNS):
            out.notes.append(
                "bench.patterns has no --patterns option: it runs all six, the matrix keeps "
                + ", ".join(args.patterns)
            )
    if section.note and not args.quick:
        out.notes.append(section.note)
    if section.broker and section.broker in chosen:
        why = broker_reachable(section.broker)
        if why:
            out.status, out.reason = "skipped", why
            return out
    missing = lacks_json(section.module)
    if missing:
        out.status, out.reason = "skipped", missing
        return out
    json_path = workdir / f"{section.name}.json"
    out.command = [sys.executable, "-m", section.module, "--json", str(json_path), *extra]
    if section.takes_transports:
        out.command += ["--transports", ",".join(chosen)]
    return out


# -- running ---------------------------------------------------------------------------------


def run_section(
    section: Section,
    outcome: Outcome,
    log_path: Path,
    timeout: float,
    on_line: Any = None,
) -> None:
    """Run the planned command, streaming its output to ``log_path`` and ``on_line``.

    The script runs in a session of its own, so that a timeout ends it and the
    far processes it started (its process group), and nothing else.
    """
    started = time.perf_counter()
    tail: collections.deque[str] = collections.deque(maxlen=12)
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(outcome.command) + "\n")
        log.flush()
        proc = subprocess.Popen(
            outcome.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                text = line.rstrip()
                if text:
                    tail.append(text)
                    if on_line is not None:
                        on_line(text)
            proc.wait()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            timer.cancel()
    outcome.seconds = time.perf_counter() - started
    outcome.returncode = proc.returncode
    outcome.log = str(log_path)
    outcome.tail = list(tail)
    if timed_out.is_set():
        outcome.status, outcome.reason = "failed", f"timed out after {timeout:.0f} s"
    elif proc.returncode != 0:
        last = tail[-1] if tail else "(no output)"
        outcome.status = "failed"
        outcome.reason = f"exited with status {proc.returncode}: {last}"
    else:
        outcome.status = "ran"


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def read_rows(
    section: Section, outcome: Outcome, json_path: Path, args: argparse.Namespace
) -> None:
    """Load the section's JSON and normalise it; a failure here marks the section failed.

    A section that timed out stays failed, but the figures its script had
    already written (``bench.patterns`` rewrites its JSON after every round)
    are kept, and the reason says so.
    """
    timed_out = outcome.status == "failed" and outcome.reason.startswith("timed out")
    if outcome.status != "ran" and not (timed_out and json_path.exists()):
        return
    reason_before = outcome.reason
    try:
        outcome.data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        outcome.status, outcome.reason = "failed", f"no readable JSON at {json_path}: {exc}"
        return
    normalise = NORMALISERS.get(section.script)
    if normalise is None:
        outcome.status = "failed"
        outcome.reason = (
            "wrote JSON, but the matrix has no normaliser for it (kept in results.json)"
        )
        return
    try:
        rows = normalise(outcome.data)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        outcome.status = "failed"
        outcome.reason = f"JSON not understood ({type(exc).__name__}: {exc}); kept in results.json"
        return
    keep = set(args.transports)
    patterns = {name for p in args.patterns for name in PATTERN_ROWS.get(p, (p,))}
    outcome.rows = [
        r
        for r in rows
        if r.transport in keep and (r.section != "patterns" or r.pattern in patterns)
    ]
    if outcome.rows:  # a floor (transport "floor") belongs to every transport of its section
        outcome.rows += [r for r in rows if r.transport == FLOOR]
    for scheme, why in skipped_transports(outcome.data).items():
        if scheme in keep:
            outcome.notes.append(f"{section.script} skipped {scheme}: {why}")
    for scheme, why in (outcome.data.get("not_judged") or {}).items():
        if scheme in keep:
            outcome.notes.append(f"{scheme} not judged: {why}")
    for row in outcome.rows:
        if row.metric.startswith("failed"):
            what = " ".join(filter(None, (row.transport, row.pattern or row.peer)))
            outcome.notes.append(f"{what}: {row.value:.0f} {row.metric} (listed as MISS)")
    for peer, why in (outcome.data.get("absent") or {}).items():
        outcome.notes.append(f"{peer} left out: {why}")
    if timed_out:
        outcome.status = "failed"
        outcome.reason = (
            f"{reason_before}; kept the {len(outcome.rows)} figures of the rounds it finished"
        )
        return
    if not outcome.rows:
        outcome.status = "failed"
        outcome.reason = "ran, but produced no figure for the selected transports"


# -- the whole run ---------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        info["load_avg"] = None
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("synaptic-mesh", "pykka", "autogen-core", "pyzmq", "pynng", "nats-py", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    info["versions"] = versions
    return info


def run_matrix(args: argparse.Namespace) -> dict[str, Any]:
    """Plan, run and read every section, a progress bar each; returns ``results.json``'s data."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    out_dir = Path(args.out)
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    console = _console()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    load_before = machine_info()["load_avg"]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="smesh-matrix-") as tmp:
        workdir = Path(tmp)
        planned = [(s, plan(s, args, workdir)) for s in SECTIONS]
        columns = (
            SpinnerColumn(finished_text=" "),
            TextColumn("[bold]{task.description:<9}[/]"),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}", markup=False),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            tasks = {
                s.name: progress.add_task(
                    s.name,
                    total=1,
                    start=o.status == "pending",
                    status="queued" if o.status == "pending" else f"skipped: {o.reason}",
                )
                for s, o in planned
            }
            for section, outcome in planned:
                task = tasks[section.name]
                if outcome.status != "pending":
                    progress.update(task, completed=1)
                    outcomes.append(outcome)
                    continue
                progress.reset(task, total=None, status="starting")

                def on_line(text: str, task: Any = task) -> None:
                    progress.update(task, status=text[:90])

                timeout = section.timeout_quick if args.quick else section.timeout_full
                run_section(section, outcome, logs / f"{section.name}.log", timeout, on_line)
                read_rows(section, outcome, workdir / f"{section.name}.json", args)
                summary = (
                    f"{len(outcome.rows)} figures"
                    if outcome.status == "ran"
                    else f"{outcome.status}: {outcome.reason}"
                )
                progress.update(task, total=1, completed=1, status=summary[:110])
                progress.stop_task(task)
                outcomes.append(outcome)
    return {
        "command": ["synaptic-mesh", "bench", *sys.argv[2:]]
        if sys.argv[1:2] == ["bench"]
        else sys.argv,
        "quick": args.quick,
        "selection": {"transports": args.transports, "patterns": args.patterns},
        "started": started_at,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": time.perf_counter() - t0,
        "machine": machine_info() | {"load_avg_before": load_before},
        "sections": [
            {
                "name": o.name,
                "status": o.status,
                "reason": o.reason,
                "command": o.command,
                "seconds": round(o.seconds, 2),
                "returncode": o.returncode,
                "log": o.log,
                "tail": o.tail if o.status != "ran" else [],
                "notes": o.notes,
                "figures": len(o.rows),
            }
            for o in outcomes
        ],
        "rows": [r.as_dict() for o in outcomes for r in o.rows],
        "raw": {o.name: o.data for o in outcomes if o.data is not None},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the matrix and write its outputs.

    Returns 0 when the run completed (misses included), 1 when no section produced a figure.
    """

    from synaptic_mesh.bench.matrix_plots import write_plots
    from synaptic_mesh.bench.matrix_report import terminal_tables, write_json, write_report

    args = parse_args(argv)
    results = run_matrix(args)
    out_dir = Path(args.out)
    write_json(results, out_dir / "results.json")
    plots = write_plots(results, out_dir)
    write_report(results, out_dir / "report.md", plots)
    console = _console()
    for table in terminal_tables(results):
        console.print(table)
    console.print(
        f"wall time {results['wall_seconds']:.0f} s; wrote {out_dir / 'results.json'}, "
        f"{out_dir / 'report.md'}, " + ", ".join(str(out_dir / p) for p in plots)
    )
    return 0 if results["rows"] else 1


def _console() -> Any:
    """A rich console; piped output (a log, a test) gets 160 columns rather than 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


if __name__ == "__main__":
    raise SystemExit(main())
