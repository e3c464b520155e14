"""The ``synaptic-mesh`` command: run deployments, list transports, benchmark.

Errors a user can fix (a bad deployment file, an unreachable broker: every
:class:`MeshError`) print one line ``synaptic-mesh: error: ...`` on stderr and
exit with status 2, as argparse does for bad arguments; a traceback is kept
for bugs. ``run`` stops gracefully on Ctrl-C or SIGTERM: the main task is
cancelled, so :func:`run_deployment` closes the node (each actor runs its
``on_stop``) before the command exits with 130 (Ctrl-C) or 143 (SIGTERM),
the shell's 128 + signal number convention. A second signal while closing
interrupts the close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

log = logging.getLogger("synaptic_mesh.cli")

if TYPE_CHECKING:
    from synaptic_mesh.runtime.node import Node

PROG = "synaptic-mesh"
EXIT_USAGE = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def main(argv: list[str] | None = None) -> int:
    """Run the command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        # Everything after "bench" belongs to the benchmark, --help included.
        return _guard(lambda: _bench(args_list[1:]))
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, usage errors: argparse printed them
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _guard(lambda: args.handler(args))


def _parser() -> argparse.ArgumentParser:
    from synaptic_mesh import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, description="An asyncio actor runtime for LLM agents."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run a deployment file")
    run.add_argument("file", metavar="FILE", help="deployment file (TOML)")
    run.add_argument(
        "--until",
        choices=("idle", "stopped"),
        help="exit once every actor is idle, or once all have stopped (default: the file's)",
    )
    run.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help="logging level on stderr (default: WARNING)",
    )
    run.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop when installed (auto), or force one",
    )
    run.add_argument(
        "--tree",
        action="store_true",
        help="print the running supervision tree once every actor has started",
    )
    run.set_defaults(handler=_run)

    transports = commands.add_parser("transports", help="list the available transport schemes")
    transports.set_defaults(handler=_transports)

    proxy = commands.add_parser(
        "proxy", help="run the XPUB-XSUB proxy of a zmq+pubsub:// mesh (until Ctrl-C)"
    )
    proxy.add_argument("url", metavar="URL", help="zmq+pubsub://HOST:PORT (XSUB PORT, XPUB PORT+1)")
    proxy.set_defaults(handler=_proxy)

    # Listed for --help only: main() hands "bench ..." over before parsing.
    commands.add_parser("bench", help="measure latency and throughput (see 'bench --help')")
    return parser


def _guard(command: Callable[[], int]) -> int:
    """Run ``command``, turning the errors a user can fix into one line on stderr."""
    from synaptic_mesh.runtime.errors import MeshError

    try:
        return command()
    except MeshError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C where no signal handler could be installed
        return 128 + signal.SIGINT


# -- run ---------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from synaptic_mesh.runtime.deployment import load_deployment, run_deployment

    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    dep = load_deployment(args.file)
    on_started = _print_tree if args.tree else None
    return _run_loop(
        lambda: _until_signalled(run_deployment(dep, until=args.until, on_started=on_started)),
        args.loop,
    )


def _print_tree(node: Node) -> None:
    print(node.supervision_tree(), flush=True)


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]], choice: str) -> int:
    """Run ``main()`` on uvloop when importable (unless refused), else on asyncio's loop."""
    uvloop: Any = None
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                from synaptic_mesh.runtime.errors import MeshError

                raise MeshError("--loop uvloop: uvloop is not installed") from None
    if uvloop is not None:
        log.debug("event loop: uvloop %s", uvloop.__version__)
        return uvloop.run(main())
    reason = "as asked" if choice == "asyncio" else "uvloop is not installed"
    log.debug("event loop: asyncio (%s)", reason)
    return asyncio.run(main())


async def _until_signalled(coro: Coroutine[Any, Any, int]) -> int:
    """Await ``coro``; SIGINT or SIGTERM cancel it, and the status says which."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        log.info("%s received; stopping gracefully", signal.Signals(signum).name)
        received.append(signum)
        task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, other thread
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        return await coro
    except asyncio.CancelledError:
        if not received:
            raise
        for _ in received:
            task.uncancel()
        return 128 + received[0]
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


# -- proxy ---------------------------------------------------------------------------


def _proxy(args: argparse.Namespace) -> int:
    """Run a ``zmq+pubsub`` proxy in the foreground; Ctrl-C or SIGTERM stop it (status 0)."""
    from synaptic_mesh.runtime.errors import MeshError
    from synaptic_mesh.transports.zmq_proxy import Proxy, parse_proxy_url

    try:
        host, port = parse_proxy_url(args.url)
        proxy = Proxy(host, port)
        proxy.start()
    except (ValueError, OSError) as exc:
        raise MeshError(str(exc)) from None
    print(f"proxy {proxy.address}: XSUB port {proxy.port}, XPUB port {proxy.port + 1}", flush=True)
    stop = asyncio.Event()

    async def wait() -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        return 0

    try:
        return asyncio.run(wait())
    finally:
        proxy.close()


# -- transports, bench -------------------------------------------------------------


def _transports(args: argparse.Namespace) -> int:
    from synaptic_mesh.runtime.errors import UnknownTransport
    from synaptic_mesh.runtime.transport_lookup import available_schemes, transport_class

    for scheme in available_schemes():
        try:
            cls = transport_class(f"{scheme}://")
        except UnknownTransport as exc:
            print(f"{scheme:<12} unavailable: {exc}")
        else:
            print(f"{scheme:<12} {cls.__module__}:{cls.__qualname__}")
    return 0


def _bench(argv: list[str]) -> int:
    from synaptic_mesh.runtime.errors import MeshError

    try:
        from synaptic_mesh.bench.matrix import main as bench_main  # the comparison matrix
    except ImportError as exc:
        raise MeshError(f"the benchmark is not available: {exc}") from None
    return bench_main(argv)
