"""Deployment files: which actors a node runs, on which transport, until when.

A deployment is data, not code, so that moving agents from ``inproc://`` to
``nats://`` is a one-line edit of a TOML file (DESIGN.md section 1)::

    [node]
    name = "claude-gemini"          # optional; the node id is derived from it
    transport = "inproc://"         # optional, default "inproc://"
    until = "idle"                  # optional: "idle" or "stopped" (default)

    [[actor]]                       # spawned in file order
    class = "agents:Gemini"         # "module:Class", module looked up next to the file first
    subject = "core.gemini"
    args = []                       # optional positional arguments
    capacity = 100                  # optional mailbox settings, as in Node.spawn
    overflow = "block"
    concurrency = 1
    [actor.kwargs]                  # optional keyword arguments
    model = "gemini-pro"

A node may sit on several transports at once (a hybrid deployment): the
``[node] transport`` is then the default route, ``[[route]]`` tables send
chosen subjects (or only large messages) over other transports and
``[[bridge]]`` tables join two meshes; see :mod:`synaptic_mesh.runtime.toml_routes`.

Loading is strict, as a compiler is: every problem raises one
:class:`DeploymentError` whose message names the file and the table and key
at fault, and unknown keys are rejected (with the allowed ones listed) so a
typo such as ``capactiy`` fails loudly instead of being ignored. Actor
classes are imported by :func:`run_deployment` (or :func:`load_class`), not
by :func:`load_deployment`, so parsing a file never runs user code.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib
import inspect
import logging
import sys
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from synaptic_mesh.actors.actor import AgentActor
from synaptic_mesh.runtime.errors import DeploymentError, UnknownTransport
from synaptic_mesh.runtime.hybrid import Bridge, HybridTransport, Route
from synaptic_mesh.runtime.toml_routes import parse_bridges, parse_routes
from synaptic_mesh.runtime.toml_tables import (
    ActorSpec,
    check_keys,
    kind_of,
    optional,
    parse_actor_table,
    required,
)
from synaptic_mesh.runtime.transport_lookup import available_schemes, scheme_of, transport_class
from synaptic_mesh.supervisors.toml_tree import (
    ActorChildTable,
    SupervisorTable,
    build_trees,
    parse_supervisors,
)

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node
    from synaptic_mesh.transports.base import Transport

log = logging.getLogger("synaptic_mesh.deployment")

Until = Literal["idle", "stopped"]
UNTIL_MODES: Final = ("idle", "stopped")
"""``idle``: exit once every actor is idle (a batch job, a demo);
``stopped``: exit once every actor has stopped (a service; Ctrl-C stops it)."""

DEFAULT_TRANSPORT: Final = "inproc://"
STOPPED_POLL_INTERVAL: Final = 0.05

TOP_KEYS: Final = ("actor", "bridge", "node", "route", "supervisor")
NODE_KEYS: Final = ("name", "transport", "until")


@dataclass(frozen=True)
class Deployment:
    """A parsed deployment file; ``path`` is where it came from (for messages, imports)."""

    path: Path
    name: str | None
    transport: str
    until: Until
    actors: tuple[ActorSpec, ...]
    supervisors: tuple[SupervisorTable, ...] = ()
    routes: tuple[Route, ...] = ()
    bridges: tuple[Bridge, ...] = ()

    @property
    def base_dir(self) -> Path:
        """The file's directory: put first on ``sys.path`` to import its actor classes."""
        return self.path.parent


# -- loading -----------------------------------------------------------------------


def load_deployment(path: str | Path) -> Deployment:
    """Read and validate the deployment file at ``path``.

    Raises :class:`DeploymentError` for a missing or unreadable file, a TOML
    syntax error (tomllib's message carries the line and column) and every
    problem listed in the module docstring.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeploymentError(f"{file}: deployment file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentError(f"{file}: cannot read deployment file: {exc}") from None
    return parse_deployment(text, file)


def parse_deployment(text: str, path: str | Path = "<string>") -> Deployment:
    """Validate deployment ``text``; ``path`` is named in errors and anchors imports."""
    file = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentError(f"{file}: invalid TOML: {exc}") from None
    check_keys(file, "the top level", data, TOP_KEYS)
    supervisors = parse_supervisors(file, data["supervisor"]) if "supervisor" in data else ()
    node = data.get("node", {})
    if not isinstance(node, dict):
        raise DeploymentError(f"{file}: 'node' must be a table ([node]), not {kind_of(node)}")
    check_keys(file, "[node]", node, NODE_KEYS)
    name = optional(file, "[node]", node, "name", str)
    if name is not None:
        _check_name(file, name)
    transport = optional(file, "[node]", node, "transport", str) or DEFAULT_TRANSPORT
    _check_transport(file, "[node] transport", transport)
    routes = parse_routes(file, data.get("route"), _check_transport)
    bridges = parse_bridges(file, data.get("bridge"), _check_transport)
    until = optional(file, "[node]", node, "until", str) or "stopped"
    if until not in UNTIL_MODES:
        raise DeploymentError(
            f"{file}: [node] until = {until!r}: choose one of {', '.join(UNTIL_MODES)}"
        )
    actors = _parse_actors(file, data.get("actor"), needed=not supervisors)
    _check_unique_subjects(file, actors, supervisors)
    return Deployment(
        file,
        name,
        transport,
        until,  # type: ignore[arg-type]
        actors,
        supervisors,
        routes,
        bridges,
    )


def _check_unique_subjects(
    file: Path, actors: tuple[ActorSpec, ...], supervisors: tuple[SupervisorTable, ...]
) -> None:
    subjects = [a.subject for a in actors] + [
        c.actor.subject for t in supervisors for c in t.children if isinstance(c, ActorChildTable)
    ]
    twice = sorted({s for s in subjects if subjects.count(s) > 1})
    if twice:
        raise DeploymentError(f"{file}: subjects used by two actors: {', '.join(twice)}")


def _parse_actors(file: Path, tables: Any, *, needed: bool = True) -> tuple[ActorSpec, ...]:
    if tables is None:
        if not needed:
            return ()
        raise DeploymentError(
            f"{file}: no [[actor]] or [[supervisor]] table; a deployment needs at least one actor"
        )
    if not isinstance(tables, list):
        raise DeploymentError(f"{file}: 'actor' must be an array of tables; write [[actor]]")
    specs: list[ActorSpec] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        where = f"[[actor]] #{index}"
        if not isinstance(table, dict):
            raise DeploymentError(f"{file}: {where} must be a table, not {kind_of(table)}")
        subject = required(file, where, table, "subject", str)
        where = f"[[actor]] #{index} ({subject})"
        spec = parse_actor_table(file, where, table, subject)
        if subject in seen:
            raise DeploymentError(
                f"{file}: {where}: duplicate subject {subject!r} (already used by "
                f"[[actor]] #{seen[subject]})"
            )
        seen[subject] = index
        specs.append(spec)
    return tuple(specs)


def _check_name(file: Path, name: str) -> None:
    # The name becomes part of the node id, which is a token of inbox subjects.
    if not name or any(c.isspace() or c in ".*>" for c in name):
        raise DeploymentError(
            f"{file}: [node] name {name!r} must be non-empty, without spaces, '.', '*' or '>'"
        )


def _check_transport(file: Path, where: str, url: str) -> None:
    """Fail at load time, not at start, for a scheme nobody registered."""
    known = ", ".join(available_schemes()) or "none"
    try:
        scheme = scheme_of(url)
    except UnknownTransport:
        raise DeploymentError(
            f"{file}: {where} = {url!r} has no scheme; write it like 'inproc://' "
            f"(known schemes: {known})"
        ) from None
    try:
        transport_class(url)
    except UnknownTransport as exc:
        if scheme not in available_schemes():
            raise DeploymentError(
                f"{file}: {where} = {url!r}: unknown transport scheme {scheme!r}; "
                f"known schemes: {known}"
            ) from None
        raise DeploymentError(f"{file}: {where} = {url!r}: {exc}") from None


def node_transport(dep: Deployment) -> str | Transport:
    """What ``Node(transport=...)`` gets: the URL, or a hybrid of it, the routes and bridges."""
    if not dep.routes and not dep.bridges:
        return dep.transport
    return HybridTransport(dep.transport, dep.routes, dep.bridges)


# -- classes -----------------------------------------------------------------------


def load_class(class_path: str, base_dir: str | Path | None = None) -> type[AgentActor]:
    """Import ``"package.module:ClassName"`` and check it is an ``AgentActor`` subclass.

    ``base_dir`` (the deployment file's directory) is put first on
    ``sys.path`` so ``agents:Claude`` finds ``agents.py`` next to the file, as
    ``python script.py`` finds modules next to the script. Modules are cached
    in ``sys.modules`` as usual, so two deployments in one process whose
    ``agents.py`` differ see the first one imported.
    """
    module_name, sep, attr = class_path.partition(":")
    if not sep or not module_name or not attr:
        raise DeploymentError(f"class {class_path!r}: write it as 'package.module:ClassName'")
    if base_dir is not None:
        entry = str(Path(base_dir).resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)
    module = _import_module(class_path, module_name, base_dir)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            candidates = [n for n, v in vars(module).items() if inspect.isclass(v)]
            close = difflib.get_close_matches(attr, candidates, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DeploymentError(
                f"class {class_path!r}: module {module_name!r} has no attribute {attr!r}{hint}"
            ) from None
    if not (inspect.isclass(obj) and issubclass(obj, AgentActor)):
        what = f"the class {obj.__qualname__}" if inspect.isclass(obj) else kind_of(obj)
        raise DeploymentError(
            f"class {class_path!r} is not an AgentActor subclass (it is {what}); "
            f"actors must subclass synaptic_mesh.AgentActor"
        )
    return obj


def _import_module(class_path: str, module_name: str, base_dir: str | Path | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        parts = module_name.split(".")
        if exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
            where = f" (looked in {base_dir} and on sys.path)" if base_dir else ""
            raise DeploymentError(
                f"class {class_path!r}: module {module_name!r} not found{where}"
            ) from None
        raise DeploymentError(
            f"class {class_path!r}: importing module {module_name!r} failed: {exc}"
        ) from None
    except Exception as exc:
        raise DeploymentError(
            f"class {class_path!r}: importing module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from None


def resolve_classes(dep: Deployment) -> list[type[AgentActor]]:
    """Import every actor class of ``dep``; errors name the file and the table."""
    classes = []
    for index, spec in enumerate(dep.actors, start=1):
        try:
            classes.append(load_class(spec.class_path, dep.base_dir))
        except DeploymentError as exc:
            raise DeploymentError(
                f"{dep.path}: [[actor]] #{index} ({spec.subject}): {exc}"
            ) from None
    return classes


# -- running -----------------------------------------------------------------------

OnNode = Callable[["Node"], "Awaitable[None] | None"]


async def run_deployment(
    dep: Deployment,
    *,
    until: Until | None = None,
    on_node: OnNode | None = None,
    on_started: OnNode | None = None,
) -> int:
    """Run ``dep`` on a new node and return an exit code.

    Imports every class first (so a typo fails before anything starts), opens
    ``Node(transport=node_transport(dep), name=dep.name)``, calls ``on_node(node)``
    (sync or async; a place for taps, dashboards and tests), spawns the actors
    in file order (each ``on_start`` finishes before the next actor is
    spawned, so list servers before the actors that ask them), then waits
    according to ``until`` (default: the file's). The node is closed in every
    case, also when the task is cancelled (Ctrl-C in the CLI).

    Returns 0, or 1 when an actor's handler raised during the run (the node
    logged each failure), so a batch deployment can fail a CI job.
    ``MeshError``s (e.g. ``ActorStartError``) propagate after the node closed.
    """
    mode = until or dep.until
    if mode not in UNTIL_MODES:
        raise DeploymentError(f"until = {mode!r}: choose one of {', '.join(UNTIL_MODES)}")
    classes = resolve_classes(dep)
    trees = build_trees(dep.supervisors, lambda path: load_class(path, dep.base_dir))
    from synaptic_mesh.runtime.node import Node  # the node pulls in the codec and transports

    node = Node(transport=node_transport(dep), name=dep.name)
    try:
        await node.start()
        if on_node is not None:
            result = on_node(node)
            if inspect.isawaitable(result):
                await result
        for cls, spec in zip(classes, dep.actors, strict=True):
            log.debug("spawning %s at %s", spec.class_path, spec.subject)
            await node.spawn(
                cls,
                spec.subject,
                *spec.args,
                capacity=spec.capacity,
                overflow=spec.overflow,
                concurrency=spec.concurrency,
                **spec.kwargs,
            )
        for tree in trees:
            await node.start_supervisor(tree)
        if on_started is not None:
            result = on_started(node)
            if inspect.isawaitable(result):
                await result
        log.info("deployment %s running %d actors until %s", dep.path, len(node.actors()), mode)
        if mode == "idle":
            await node.wait_idle()
        else:
            while node.actors() and node.failure is None:
                await asyncio.sleep(STOPPED_POLL_INTERVAL)
    finally:
        await node.close()
    if node.failure is not None:
        raise node.failure
    failures = node.stats.failures
    if failures:
        log.warning("deployment %s: %d handler failure(s); exit code 1", dep.path, failures)
        return 1
    return 0
