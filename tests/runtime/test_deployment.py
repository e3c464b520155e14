"""Deployment files: every malformed file fails with a message naming the problem.

A deployment file is written by hand and read at startup, so the tests pin
down the messages, not only the exception type: each must name the file and
the table or key at fault.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from synaptic_mesh import DeploymentError
from synaptic_mesh.runtime.deployment import (
    ActorSpec,
    Deployment,
    load_class,
    load_deployment,
    parse_deployment,
    run_deployment,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "claude_gemini" / "deploy.toml"

ACTOR = '[[actor]]\nclass = "agents:A"\nsubject = "core.a"\n'


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch):
    """Undo what load_class does to sys.path and sys.modules after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(tmp_path: Path, text: str, name: str = "deploy.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def fails(tmp_path: Path, text: str, *needles: str) -> str:
    """Load ``text`` as a file, expect DeploymentError containing every needle."""
    path = write(tmp_path, text)
    with pytest.raises(DeploymentError) as info:
        load_deployment(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "\n" not in message
    return message


# -- valid files ---------------------------------------------------------------------


def test_full_file_parses(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [node]
        name = "n1"
        transport = "inproc://x"
        until = "idle"

        [[actor]]
        class = "agents:Gemini"
        subject = "core.gemini"
        args = [1, "two"]
        capacity = 10
        overflow = "drop_oldest"
        concurrency = 2
        [actor.kwargs]
        model = "m"

        [[actor]]
        class = "pkg.mod:Outer.Inner"
        subject = "core.claude"
        """,
    )
    dep = load_deployment(path)
    assert dep == Deployment(
        path,
        "n1",
        "inproc://x",
        "idle",
        (
            ActorSpec(
                "agents:Gemini", "core.gemini", (1, "two"), {"model": "m"}, 10, "drop_oldest", 2
            ),
            ActorSpec("pkg.mod:Outer.Inner", "core.claude"),
        ),
    )
    assert dep.base_dir == tmp_path


def test_defaults_without_node_table(tmp_path: Path) -> None:
    dep = load_deployment(write(tmp_path, ACTOR))
    assert (dep.name, dep.transport, dep.until) == (None, "inproc://", "stopped")
    assert dep.actors == (ActorSpec("agents:A", "core.a"),)


def test_node_without_transport_defaults_to_inproc(tmp_path: Path) -> None:
    dep = load_deployment(write(tmp_path, '[node]\nname = "n"\n' + ACTOR))
    assert dep.transport == "inproc://"


def test_deployment_is_frozen(tmp_path: Path) -> None:
    dep = load_deployment(write(tmp_path, ACTOR))
    with pytest.raises(AttributeError):
        dep.transport = "nats://"  # type: ignore[misc]


def test_example_parses() -> None:
    dep = load_deployment(EXAMPLE)
    assert dep.until == "idle"
    assert [a.subject for a in dep.actors] == ["core.gemini", "tot.scribe", "core.claude"]


def test_parse_deployment_from_text() -> None:
    dep = parse_deployment(ACTOR, "inline.toml")
    assert dep.path == Path("inline.toml")
    with pytest.raises(DeploymentError, match=r"^inline\.toml: invalid TOML"):
        parse_deployment("[node", "inline.toml")


# -- file and syntax -----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(DeploymentError, match="deployment file not found") as info:
        load_deployment(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="cannot read deployment file"):
        load_deployment(tmp_path)


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    fails(tmp_path, '[node]\ntransport = "inproc://"\nuntil idle\n', "invalid TOML", "line 3")
    fails(tmp_path, "[[actor]\n", "invalid TOML", "line 1", "column")


# -- [node] ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "needles"),
    [
        ("transport = 5", ("[node] transport must be a string, not an integer",)),
        ("name = 3", ("[node] name must be a string",)),
        ("name = 'a b'", ("[node] name 'a b'",)),
        ("until = 'forever'", ("[node] until = 'forever'", "idle, stopped")),
        ("until = true", ("[node] until must be a string, not a boolean",)),
    ],
)
def test_node_wrong_values(tmp_path: Path, node: str, needles: tuple[str, ...]) -> None:
    fails(tmp_path, f"[node]\n{node}\n{ACTOR}", *needles)


def test_node_must_be_a_table(tmp_path: Path) -> None:
    fails(tmp_path, 'node = "x"\n' + ACTOR, "'node' must be a table")


def test_unknown_transport_scheme_names_known_ones(tmp_path: Path) -> None:
    fails(
        tmp_path,
        f'[node]\ntransport = "carrier-pigeon://coop"\n{ACTOR}',
        "[node] transport",
        "unknown transport scheme 'carrier-pigeon'",
        "known schemes: inproc",
    )


def test_transport_without_scheme(tmp_path: Path) -> None:
    fails(
        tmp_path,
        f'[node]\ntransport = "localhost:4222"\n{ACTOR}',
        "has no scheme",
        "known schemes: inproc",
    )


# -- unknown keys --------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    fails(
        tmp_path,
        '[[actors]]\nclass = "a:B"\nsubject = "s"\n',
        "the top level",
        "'actors' (did you mean 'actor'?)",
        "allowed keys: actor, bridge, node, route, supervisor",
    )


def test_unknown_node_key(tmp_path: Path) -> None:
    fails(
        tmp_path,
        f'[node]\ntransprot = "inproc://"\n{ACTOR}',
        "[node]",
        "'transprot' (did you mean 'transport'?)",
        "allowed keys: name, transport, until",
    )


def test_unknown_actor_key(tmp_path: Path) -> None:
    fails(
        tmp_path,
        ACTOR + "capactiy = 3\nfoo = 1\n",
        "[[actor]] #1 (core.a)",
        "'capactiy' (did you mean 'capacity'?)",
        "'foo'",
        "allowed keys: args, capacity, class, concurrency, kwargs, overflow, subject",
    )


# -- [[actor]] -----------------------------------------------------------------------


def test_no_actor(tmp_path: Path) -> None:
    fails(tmp_path, '[node]\ntransport = "inproc://"\n', "no [[actor]] or [[supervisor]] table")


def test_actor_written_as_single_table(tmp_path: Path) -> None:
    fails(tmp_path, '[actor]\nclass = "a:B"\nsubject = "s"\n', "write [[actor]]")


def test_actor_without_class(tmp_path: Path) -> None:
    fails(tmp_path, '[[actor]]\nsubject = "core.a"\n', "[[actor]] #1 (core.a)", "no 'class' key")


def test_actor_without_subject(tmp_path: Path) -> None:
    fails(tmp_path, ACTOR + '[[actor]]\nclass = "a:B"\n', "[[actor]] #2", "no 'subject' key")


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ("args = 'x'", ("args must be an array, not a string",)),
        ("kwargs = [1]", ("kwargs must be a table, not an array",)),
        ("capacity = '10'", ("capacity must be an integer, not a string",)),
        ("capacity = true", ("capacity must be an integer, not a boolean",)),
        ("capacity = 0", ("capacity must be at least 1, got 0",)),
        ("concurrency = 1.5", ("concurrency must be an integer, not a float",)),
        ("concurrency = -1", ("concurrency must be at least 1",)),
        ("overflow = 'explode'", ("overflow = 'explode'", "block, drop_newest, drop_oldest, fail")),
        ("overflow = 1", ("overflow must be a string",)),
    ],
)
def test_actor_wrong_types(tmp_path: Path, line: str, needles: tuple[str, ...]) -> None:
    fails(tmp_path, ACTOR + line + "\n", "[[actor]] #1 (core.a)", *needles)


@pytest.mark.parametrize(
    ("table", "needles"),
    [
        ('class = 3\nsubject = "s"', ("class must be a string, not an integer",)),
        ('class = "a:B"\nsubject = 1', ("subject must be a string",)),
        ('class = "a:B"\nsubject = " "', ("subject is empty",)),
        ('class = "agents.Claude"\nsubject = "s"', ("write it as 'package.module:ClassName'",)),
        ('class = "agents:"\nsubject = "s"', ("write it as 'package.module:ClassName'",)),
        ('class = "a:B"\nsubject = "core.*"', ("contains a wildcard",)),
        ('class = "a:B"\nsubject = "core..a"', ("subject",)),
    ],
)
def test_actor_bad_class_or_subject(tmp_path: Path, table: str, needles: tuple[str, ...]) -> None:
    fails(tmp_path, f"[[actor]]\n{table}\n", "[[actor]] #1", *needles)


def test_duplicate_subjects(tmp_path: Path) -> None:
    fails(
        tmp_path,
        ACTOR + ACTOR.replace("agents:A", "agents:B"),
        "[[actor]] #2 (core.a)",
        "duplicate subject 'core.a'",
        "[[actor]] #1",
    )


def test_kwargs_that_spawn_keeps_for_itself(tmp_path: Path) -> None:
    fails(
        tmp_path,
        ACTOR + "[actor.kwargs]\ncapacity = 3\nsubject = 'x'\n",
        "[actor.kwargs] cannot use 'capacity', 'subject'",
    )


# -- classes -------------------------------------------------------------------------


@pytest.fixture
def agents_module(tmp_path: Path, isolated_imports: None) -> str:
    """A uniquely named module next to a deployment file, returning its name."""
    name = f"mesh_agents_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from synaptic_mesh import AgentActor

            class Worker(AgentActor):
                class Nested(AgentActor):
                    pass

            class Plain:
                pass

            def function():
                pass
            """
        ),
        encoding="utf-8",
    )
    return name


def test_load_class_next_to_the_file(tmp_path: Path, agents_module: str) -> None:
    cls = load_class(f"{agents_module}:Worker", tmp_path)
    assert cls.__name__ == "Worker"
    assert sys.path[0] == str(tmp_path.resolve())
    assert load_class(f"{agents_module}:Worker.Nested", tmp_path).__name__ == "Nested"


def test_load_class_from_an_installed_package() -> None:
    from synaptic_mesh.actors.threaded import ThreadedAgentActor

    assert load_class("synaptic_mesh.actors.threaded:ThreadedAgentActor") is ThreadedAgentActor


def test_load_class_module_missing(tmp_path: Path, isolated_imports: None) -> None:
    with pytest.raises(DeploymentError, match="module 'no_such_agents' not found") as info:
        load_class("no_such_agents:Claude", tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(DeploymentError, match=r"module 'synaptic_mesh\.nope' not found"):
        load_class("synaptic_mesh.nope:Claude")


def test_load_class_attribute_missing(tmp_path: Path, agents_module: str) -> None:
    with pytest.raises(DeploymentError, match="has no attribute 'Worke'; did you mean 'Worker'"):
        load_class(f"{agents_module}:Worke", tmp_path)


@pytest.mark.parametrize(("attr", "what"), [("Plain", "the class Plain"), ("function", "function")])
def test_load_class_not_an_actor(tmp_path: Path, agents_module: str, attr: str, what: str) -> None:
    with pytest.raises(DeploymentError, match="is not an AgentActor subclass") as info:
        load_class(f"{agents_module}:{attr}", tmp_path)
    assert what in str(info.value)


def test_load_class_module_with_a_missing_dependency(
    tmp_path: Path, isolated_imports: None
) -> None:
    name = f"mesh_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import not_installed_dependency_xyz\n")
    with pytest.raises(DeploymentError, match=f"importing module '{name}' failed") as info:
        load_class(f"{name}:A", tmp_path)
    assert "not_installed_dependency_xyz" in str(info.value)


def test_load_class_module_raising_on_import(tmp_path: Path, isolated_imports: None) -> None:
    name = f"mesh_raising_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(DeploymentError, match="raised RuntimeError: boom"):
        load_class(f"{name}:A", tmp_path)


# -- running -------------------------------------------------------------------------


async def test_run_example_in_process(
    capsys: pytest.CaptureFixture[str], isolated_imports: None, no_leaks
) -> None:
    seen = []

    async def on_node(node) -> None:
        seen.append(node.transport.url)
        await node.subscribe("tot.verdicts.>", lambda msg, subject: _append(seen, subject))

    assert await run_deployment(load_deployment(EXAMPLE), on_node=on_node) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "claude: asking core.gemini to verify 4 claims"
    assert [line[:9] for line in out[1:5]] == ["[1] TRUE ", "[2] FALSE", "[3] TRUE ", "[4] FALSE"]
    assert out[5] == "scribe: 4 verdicts, 2 true, 2 false"
    assert seen == ["inproc://", *(f"tot.verdicts.{n}" for n in range(1, 5))]
    await no_leaks()


async def _append(seen: list[str], subject: str) -> None:
    seen.append(subject)


SELF_STOPPING = """
from synaptic_mesh import AgentActor, on

class Once(AgentActor):
    async def on_start(self):
        print("started", self.subject, flush=True)
        self.stop()

    async def on_stop(self):
        print("stopped", self.subject, flush=True)

class Failing(AgentActor):
    async def on_start(self):
        await self.tell(self.subject, 1)

    @on(int)
    async def boom(self, n):
        raise ValueError("boom")

class NoStart(AgentActor):
    async def on_start(self):
        raise RuntimeError("cannot start")
"""


@pytest.fixture
def lifecycle_module(tmp_path: Path, isolated_imports: None) -> str:
    name = f"mesh_life_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(SELF_STOPPING, encoding="utf-8")
    return name


def _actors(module: str, *pairs: tuple[str, str]) -> str:
    return "".join(f'[[actor]]\nclass = "{module}:{c}"\nsubject = "{s}"\n' for c, s in pairs)


async def test_run_until_stopped(
    tmp_path: Path, lifecycle_module: str, capsys: pytest.CaptureFixture[str], no_leaks
) -> None:
    path = write(tmp_path, _actors(lifecycle_module, ("Once", "svc.a"), ("Once", "svc.b")))
    assert await run_deployment(load_deployment(path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == ["started svc.a", "started svc.b", "stopped svc.a", "stopped svc.b"]
    await no_leaks()


async def test_handler_failure_gives_exit_code_1(
    tmp_path: Path, lifecycle_module: str, no_leaks
) -> None:
    path = write(tmp_path, _actors(lifecycle_module, ("Failing", "svc.fail")))
    assert await run_deployment(load_deployment(path), until="idle") == 1
    await no_leaks()


async def test_start_failure_propagates_after_close(
    tmp_path: Path, lifecycle_module: str, no_leaks
) -> None:
    from synaptic_mesh import ActorStartError

    path = write(tmp_path, _actors(lifecycle_module, ("Once", "svc.a"), ("NoStart", "svc.b")))
    with pytest.raises(ActorStartError, match="cannot start"):
        await run_deployment(load_deployment(path), until="idle")
    await no_leaks()


async def test_class_errors_come_before_the_node_opens(
    tmp_path: Path, lifecycle_module: str, no_leaks
) -> None:
    path = write(tmp_path, _actors(lifecycle_module, ("Once", "svc.a"), ("Missing", "svc.b")))
    called = []
    with pytest.raises(DeploymentError) as info:
        await run_deployment(load_deployment(path), on_node=called.append)
    assert str(path) in str(info.value)
    assert "[[actor]] #2 (svc.b)" in str(info.value)
    assert "has no attribute 'Missing'" in str(info.value)
    assert called == []
    await no_leaks()


async def test_run_rejects_unknown_until(tmp_path: Path) -> None:
    dep = load_deployment(write(tmp_path, ACTOR))
    with pytest.raises(DeploymentError, match="until = 'later'"):
        await run_deployment(dep, until="later")  # type: ignore[arg-type]
