"""The ``synaptic-mesh`` command, run for real in a subprocess.

What a user sees is the contract here: the exact transcript of the example,
one-line errors without a traceback and exit status 2, and a graceful stop on
Ctrl-C or SIGTERM (every ``on_stop`` runs) with status 130 or 143.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from synaptic_mesh import __version__
from synaptic_mesh.runtime import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "claude_gemini" / "deploy.toml"
SCRIPT = Path(sys.executable).with_name("synaptic-mesh")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "synaptic_mesh"]

TRANSCRIPT = [
    "claude: asking core.gemini to verify 4 claims",
    '[1] TRUE  "Water boils at 100 degrees Celsius at sea level." '
    "-- known fact: at 1 atm water boils at 100 C",
    '[2] FALSE "The Great Wall of China is visible from the Moon with the naked eye." '
    "-- known myth: no astronaut has seen it from the Moon",
    '[3] TRUE  "7 * 6 = 42" -- arithmetic: 7 * 6 = 42',
    "[4] FALSE \"This mesh is always watertight.\" -- absolute claim ('always') "
    "that no rule can confirm",
    "scribe: 4 verdicts, 2 true, 2 false",
]

FOREVER = """
from synaptic_mesh import AgentActor

class Forever(AgentActor):
    async def on_start(self):
        print("ready", flush=True)

    async def on_stop(self):
        print("on_stop ran", flush=True)
"""


def mesh(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess, *needles: str, stdout: str = ""
) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("synaptic-mesh: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == stdout


@pytest.fixture
def forever(tmp_path: Path) -> Path:
    (tmp_path / "forever_agents.py").write_text(FOREVER, encoding="utf-8")
    path = tmp_path / "forever.toml"
    path.write_text(
        '[[actor]]\nclass = "forever_agents:Forever"\nsubject = "svc.forever"\n', encoding="utf-8"
    )
    return path


# -- subprocess ----------------------------------------------------------------------


def test_version() -> None:
    result = mesh("--version")
    assert (result.returncode, result.stdout) == (0, f"synaptic-mesh {__version__}\n")
    assert __version__ == "0.1.0"


def test_python_dash_m_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "synaptic_mesh", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (0, f"synaptic-mesh {__version__}\n")


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_example_transcript(loop: str, tmp_path: Path) -> None:
    result = mesh("run", str(EXAMPLE), "--loop", loop, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == TRANSCRIPT
    assert result.stderr == ""


def test_debug_log_names_the_event_loop(tmp_path: Path) -> None:
    result = mesh("run", str(EXAMPLE), "--log-level", "debug", "--loop", "asyncio")
    assert result.returncode == 0, result.stderr
    assert "event loop: asyncio" in result.stderr
    assert result.stdout.splitlines() == TRANSCRIPT


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(mesh("run", str(tmp_path / "nope.toml")), "deployment file not found")


def test_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[node]\ntransport = \n", encoding="utf-8")
    assert_one_line_error(mesh("run", str(path)), str(path), "invalid TOML", "line 2")


def test_unknown_scheme(tmp_path: Path) -> None:
    path = tmp_path / "scheme.toml"
    path.write_text(
        '[node]\ntransport = "smoke-signals://hill"\n'
        '[[actor]]\nclass = "agents:Gemini"\nsubject = "core.gemini"\n',
        encoding="utf-8",
    )
    assert_one_line_error(
        mesh("run", str(path)), "unknown transport scheme 'smoke-signals'", "known schemes: inproc"
    )


def test_unimportable_class(tmp_path: Path) -> None:
    path = tmp_path / "class.toml"
    path.write_text(
        '[[actor]]\nclass = "no_such_agents_module:Claude"\nsubject = "core.claude"\n',
        encoding="utf-8",
    )
    assert_one_line_error(
        mesh("run", str(path)), "[[actor]] #1 (core.claude)", "module 'no_such_agents_module'"
    )


def test_actor_that_cannot_start(tmp_path: Path) -> None:
    """Claude without Gemini: the ask fails at once (no responders), so the start fails."""
    path = tmp_path / "alone.toml"
    path.write_text(
        textwrap.dedent(
            """
            [[actor]]
            class = "agents:Claude"
            subject = "core.claude"
            [actor.kwargs]
            verifier = "core.nobody"
            """
        ),
        encoding="utf-8",
    )
    (tmp_path / "agents.py").symlink_to(EXAMPLE.with_name("agents.py"))
    result = mesh("run", str(path))
    assert_one_line_error(
        result,
        "failed to start: NoResponders",
        "core.nobody",
        stdout="claude: asking core.nobody to verify 4 claims\n",
    )


def test_until_overrides_the_file(forever: Path) -> None:
    result = mesh("run", str(forever), "--until", "idle")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ready", "on_stop ran"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_gracefully(forever: Path, signum: int, status: int) -> None:
    proc = subprocess.Popen(
        [*COMMAND, "run", str(forever)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"  # the node runs; handlers are installed
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, err
    assert out == "on_stop ran\n"
    assert "Traceback" not in err


def test_transports_lists_inproc() -> None:
    result = mesh("transports")
    assert result.returncode == 0
    assert "inproc       synaptic_mesh.transports.inproc:InprocTransport" in result.stdout


# -- in process ----------------------------------------------------------------------


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "run" in capsys.readouterr().err


def test_usage_error_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "x.toml", "--until", "soon"]) == 2
    assert "invalid choice: 'soon'" in capsys.readouterr().err


def test_bench_hands_over_every_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("synaptic_mesh.bench.matrix")
    fake.main = lambda argv: calls.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "synaptic_mesh.bench.matrix", fake)
    assert cli.main(["bench", "--help", "-n", "5"]) == 7
    assert calls == [["--help", "-n", "5"]]


def test_bench_missing_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "synaptic_mesh.bench.matrix", None)
    assert cli.main(["bench"]) == 2
    assert capsys.readouterr().err.startswith(
        "synaptic-mesh: error: the benchmark is not available"
    )
