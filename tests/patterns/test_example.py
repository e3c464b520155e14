"""``examples/tree_of_thought``: the same transcript from every deployment file.

Runs ``synaptic-mesh run`` for real (a subprocess per file); a transport that
adds its ``deploy.<scheme>.toml`` joins the test by existing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tree_of_thought"
SCRIPT = Path(sys.executable).with_name("synaptic-mesh")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "synaptic_mesh"]
DEPLOYMENTS = sorted(EXAMPLE.glob("deploy*.toml"))


def expected_transcript() -> list[str]:
    """The console block of the example's README, without the command line."""
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    block = readme.split("```console\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if not line.startswith("$ ")]


def test_every_transport_has_a_deployment() -> None:
    from synaptic_mesh.runtime.transport_lookup import available_schemes

    names = {p.name for p in DEPLOYMENTS}
    for scheme in available_schemes():
        wanted = "deploy.toml" if scheme == "inproc" else f"deploy.{scheme}.toml"
        assert wanted in names, f"examples/tree_of_thought has no {wanted}"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[p.name for p in DEPLOYMENTS])
def test_the_example_prints_the_transcript(deployment: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "run", str(deployment)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected_transcript()
    assert result.stderr == ""
