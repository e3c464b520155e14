"""The command-line pieces every bench script shares: options, header, load average, JSON.

Each bench measures something of its own, but all of them are run the same
way: the same output options (``--json PATH``, ``--strict``), defaults that
shrink with ``--quick``, a first line saying what ran where and under what
load (a busy machine explains a wide spread), and a JSON file headed by the
same facts, which ``synaptic-mesh bench`` (``bench/matrix.py``) reads back.
These pieces live here once so that every script starts, reports its
machine and writes its figures alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None
"""What builds a bench's event loop: ``None`` for asyncio's own, or uvloop's factory."""

JSON_HELP = "also write the results as JSON to PATH"


def add_output_options(
    parser: argparse.ArgumentParser,
    *,
    json_help: str = JSON_HELP,
    strict_help: str = "exit 1 when a target is missed",
) -> None:
    """Add ``--json PATH`` (where the figures go) and ``--strict`` (a miss fails the run).

    ``bench/matrix.py`` runs every script with ``--json``, so each one takes it.
    """
    parser.add_argument("--json", metavar="PATH", help=json_help)
    parser.add_argument("--strict", action="store_true", help=strict_help)


def fill_unset(args: argparse.Namespace, full: Mapping[str, int], quick: Mapping[str, int]) -> None:
    """Give each count option the user left unset (``None``) its default.

    The default comes from ``quick`` when ``--quick`` was given, else from
    ``full``; both map option names (``args`` attributes) to counts.
    """
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def require_positive(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> None:
    """Stop with a usage error (exit 2) when one of the ``names`` options is below 1.

    The message names every option checked: ``--asks, --oneway and --repeats
    must be positive``.
    """
    if min(getattr(args, name) for name in names) < 1:
        options = [f"--{name.replace('_', '-')}" for name in names]
        listed = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} and {options[-1]}"
        parser.error(f"{listed} must be positive")


def scheme_list(parser: argparse.ArgumentParser, text: str, example: str) -> list[str]:
    """The schemes of a comma-separated ``--transports``, in order, each once.

    An empty list is a usage error (exit 2) that shows ``example``.
    """
    schemes = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not schemes:
        parser.error(f"--transports needs at least one scheme, e.g. {example}")
    return schemes


def loop_factory(use_uvloop: bool) -> tuple[LoopFactory, str] | None:
    """The event-loop factory a bench runs on and its name (``asyncio`` or ``uvloop``).

    ``None`` when ``--uvloop`` was asked for but uvloop is not installed; the
    reason is printed to stderr and the bench exits 2.
    """
    if not use_uvloop:
        return None, "asyncio"
    try:
        import uvloop
    except ImportError:
        print("--uvloop needs uvloop: pip install 'synaptic-mesh[fast]'", file=sys.stderr)
        return None
    return uvloop.new_event_loop, "uvloop"


def load_avg() -> str:
    """The 1/5/15-minute load average as printed in a header (``n/a`` where the OS has none)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_header(
    bench: str, load: str, *, machine: bool = True, library: str = "", loop: str = ""
) -> str:
    """The first line of a bench's output: Python, machine, library, CPUs, loop and load.

    ``synaptic_mesh link bench: Python 3.12.3 on x86_64, 2 CPUs, loop=asyncio,
    load avg 0.52 0.61 0.70``; ``machine`` adds `` on x86_64``, ``library``
    (versions of the library measured against) stands before the CPUs and
    ``loop`` (how the bench names its event loop) after them. The bench
    follows it with what it measures.
    """
    where = f" on {platform.machine()}" if machine else ""
    parts = [f"synaptic_mesh {bench} bench: Python {platform.python_version()}{where}"]
    if library:
        parts.append(library)
    parts.append(f"{os.cpu_count()} CPUs")
    if loop:
        parts.append(loop)
    parts.append(f"load avg {load}")
    return ", ".join(parts)


def measured_on(load: Any, *, machine: bool = False, loop: str | None = None) -> dict[str, Any]:
    """The keys that follow ``bench`` in every bench's JSON: when and where it ran, under what load.

    ``load`` is what the bench keeps of the load average (the ``os.getloadavg()``
    list, or the printed figures before and after the run); ``machine`` adds
    ``platform.machine()`` and ``loop`` the event loop's name.
    """
    facts: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
    }
    if machine:
        facts["machine"] = platform.machine()
    facts["cpus"] = os.cpu_count()
    if loop is not None:
        facts["loop"] = loop
    facts["load_avg"] = load
    return facts


def dump_json(path: str, data: dict[str, Any], *, quiet: bool = False) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically, and say so unless ``quiet``.

    The file is written beside ``path`` and then renamed over it, so a reader
    (``bench/matrix.py`` after a timeout) never sees half a file; a bench that
    rewrites its file after every round passes ``quiet``.
    """
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
    os.replace(partial, path)
    if not quiet:
        print(f"\nwrote {path}")


def write_json(path: str, bench: str, **figures: Any) -> None:
    """Write a bench's figures to ``path`` as JSON, with when and where they were measured.

    What ``synaptic-mesh bench`` (``bench/matrix.py``) reads back from each script.
    """
    dump_json(path, {"bench": bench, **measured_on(list(os.getloadavg())), **figures})
