"""The same tree written in Python and in a deployment file has one structure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synaptic_mesh import Backoff, DeploymentError, Supervisor, child
from synaptic_mesh.runtime.deployment import load_class, parse_deployment
from synaptic_mesh.supervisors.toml_tree import build_trees
from tests.supervisors.kit import Child

TREE = """
[node]
transport = "inproc://"

[[supervisor]]
name = "core"
strategy = "rest_for_one"
max_restarts = 4
within = 2.5
backoff = { initial = 0.02, max = 0.5, jitter = 0.1 }

  [[supervisor.child]]
  class = "tests.supervisors.kit:Child"
  subject = "core.gemini"
  shutdown = 1.5

  [[supervisor.child]]
  supervisor = "workers"

  [[supervisor.child]]
  class = "tests.supervisors.kit:Child"
  subject = "core.claude"
  restart = "transient"
  capacity = 10

[[supervisor]]
name = "workers"
strategy = "simple_one_for_one"
restart = "transient"

  [[supervisor.child]]
  class = "tests.supervisors.kit:Child"
  subject = "workers.w"
  restart = "temporary"
"""

PYTHON_TREE = Supervisor(
    "core",
    "rest_for_one",
    max_restarts=4,
    within=2.5,
    backoff=Backoff(initial=0.02, max=0.5, jitter=0.1),
    children=[
        child(Child, "core.gemini", shutdown=1.5),
        Supervisor(
            "workers",
            "simple_one_for_one",
            restart="transient",
            children=[child(Child, "workers.w", restart="temporary")],
        ),
        child(Child, "core.claude", restart="transient", capacity=10),
    ],
)


def test_toml_and_python_trees_have_the_same_structure() -> None:
    dep = parse_deployment(TREE, "deploy.toml")
    trees = build_trees(dep.supervisors, load_class)
    assert [t.structure() for t in trees] == [PYTHON_TREE.structure()]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[supervisor]]\nname = "a"\nstrategy = "one_for_some"\n', "strategy = 'one_for_some'"),
        ('[[supervisor]]\nname = "a"\nmax_restart = 3\n', "did you mean 'max_restarts'"),
        (
            '[[supervisor]]\nname = "a"\n[[supervisor.child]]\nsupervisor = "b"\n',
            "unknown supervisor 'b'",
        ),
        (
            '[[supervisor]]\nname = "a"\n[[supervisor.child]]\nsupervisor = "b"\n'
            '[[supervisor]]\nname = "b"\n[[supervisor.child]]\nsupervisor = "a"\n',
            "cycle",
        ),
        (
            '[[supervisor]]\nname = "a"\n[[supervisor.child]]\nclass = "x:Y"\n'
            'subject = "s.a"\nrestart = "often"\n',
            "restart = 'often'",
        ),
        ('[[supervisor]]\nname = "a"\nwithin = -1\n', "within must be a number >= 0"),
        (
            '[[supervisor]]\nname = "a"\nbackoff = { initial = 1, speed = 2 }\n',
            "unknown key 'speed'",
        ),
    ],
)
def test_bad_supervisor_tables_are_clear_errors(text: str, needle: str) -> None:
    with pytest.raises(DeploymentError) as info:
        parse_deployment(text, "deploy.toml")
    assert needle in str(info.value)
    assert "deploy.toml" in str(info.value)


def test_run_tree_prints_the_running_supervision_tree(tmp_path: Path) -> None:
    agents = tmp_path / "tree_agents.py"
    agents.write_text("from synaptic_mesh import AgentActor\nclass Quiet(AgentActor):\n    pass\n")
    deploy = tmp_path / "deploy.toml"
    deploy.write_text(
        '[node]\nuntil = "idle"\n'
        '[[supervisor]]\nname = "core"\nstrategy = "one_for_all"\n'
        '[[supervisor.child]]\nclass = "tree_agents:Quiet"\nsubject = "core.a"\n'
        '[[supervisor.child]]\nsupervisor = "pool"\n'
        '[[supervisor]]\nname = "pool"\n'
        '[[supervisor.child]]\nclass = "tree_agents:Quiet"\nsubject = "pool.b"\n'
        'restart = "transient"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "synaptic_mesh", "run", str(deploy), "--tree"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("core (one_for_all, max 3 restarts in 5 s) running")
    assert "core.a  Quiet  permanent  running" in lines[1]
    assert lines[2].startswith("└── pool (one_for_one")
    assert "pool.b  Quiet  transient  running" in lines[3]
