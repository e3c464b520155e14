"""The 100 MB attachment on every transport, next to memcpy and the raw socket floors.

For each selected transport the bench sends a 100 MB float32 numpy array (a
field of a ``@message``; arrays at or above the attachment threshold travel
as a frame of their own) from a node here to a node in **another process**
(``bench/_links_peer.py``, the far node ``bench/links.py`` uses), as an ask:
the far actor reads the last element and answers, so the clock stops once
all of it arrived. ``inproc://`` cannot leave the process (a hub lives in
one), so both of its nodes run here and the array is passed by reference:
its figure is what a co-located agent pays, not a copy.

Floors, measured in the same run and interleaved with the transports:

* ``memcpy``: ``np.copyto`` of the same 100 MB in this process (cold: into a
  freshly allocated buffer, page faults included; warm: into that buffer
  again). The physical floor a shared-memory path is judged against.
* ``raw uds`` and ``raw tcp``: the same bytes as one length-prefixed frame
  over a hand-written asyncio ``Protocol`` to another process, acknowledged
  once all of it arrived (the floors of ``bench/links.py``).

Each round opens every path afresh (a new far process, a new near node, a
new buffer), so its first transfer is **cold** (fresh connection, segments
and socket buffers); ``--warm`` transfers follow on the same path. Rounds
interleave the paths, so load from other processes hits them alike; the
report gives the median, minimum and maximum of the cold transfers (one per
round) and of the warm ones (``rounds x warm``).

A transport whose ``capabilities.max_message`` (after start: on NATS the
server's ``max_payload``) cannot carry the message is **skipped with that
reason**; so is one that cannot start (a broker that is down). A transfer
that fails is printed and kept in the JSON as a failure. Goals (issue 5):
``shm://`` at least 7x ``tcp://`` and at least 70% of memcpy, warm medians.

``--json PATH`` writes every transfer's seconds; ``synaptic-mesh bench``
(``bench/matrix.py``) reads it. Run ``python -m synaptic_mesh.bench.bulk --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from synaptic_mesh.bench._cli import (
    add_output_options,
    fill_unset,
    load_avg,
    run_header,
    scheme_list,
    write_json,
)
from synaptic_mesh.bench._links_clients import Far, MeshClient, RawClient
from synaptic_mesh.bench._links_peer import BulkSink, Echo, Ping
from synaptic_mesh.bench._stats import fmt_pct, fmt_ratio, median, render_table
from synaptic_mesh.bench._urls import first_url, joining_url, needs_dir
from synaptic_mesh.runtime.errors import NoResponders
from synaptic_mesh.runtime.node import Node

BULK_FLOATS = 25_000_000
BULK_BYTES = BULK_FLOATS * 4  # 100,000,000 bytes
ROUNDS = 5
WARM = 3
FLOORS = ("memcpy", "raw uds", "raw tcp")
IN_PROCESS = frozenset({"inproc"})
"""Schemes whose nodes must share this process (an in-process hub)."""
PATH_TIMEOUT = 240.0
"""Seconds one path may take for a round (start, cold and warm transfers, close)."""
SERVED_TIMEOUT = 20.0
"""Seconds to wait until the far node's actor is reachable (interest exchanged)."""
GOALS = {"shm vs tcp": 7.0, "shm vs memcpy": 0.70}


class Client(Protocol):
    async def bulk(self, data: Any) -> float: ...


@dataclass
class PathFigures:
    """One path's transfers: seconds, cold one per round, warm ``rounds x warm``."""

    name: str
    label: str
    where: str
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def label(name: str) -> tuple[str, str]:
    """``(label, where the receiver runs)`` of a path."""
    if name == "memcpy":
        return "np.copyto into a buffer (floor)", "this process"
    if name == "raw uds":
        return "asyncio Protocol, Unix socket, one frame (floor)", "another process"
    if name == "raw tcp":
        return "asyncio Protocol, TCP, one frame (floor)", "another process"
    if name in IN_PROCESS:
        return f"{name}:// (by reference, nothing copied)", "this process, by reference"
    return f"{name}:// (synaptic_mesh)", "another process"


# -- the paths ------------------------------------------------------------------------------


class Memcpy:
    """The physical floor: a copy of the array into a buffer this path owns."""

    def __init__(self, data: Any) -> None:
        import numpy as np

        self.dst = np.empty_like(data)  # untouched: the first copy faults its pages in

    async def bulk(self, data: Any) -> float:
        import numpy as np

        t0 = time.perf_counter()
        np.copyto(self.dst, data)
        return time.perf_counter() - t0


async def _served(node: Node) -> None:
    """Wait until the far node's actors answer: interest has crossed the link (or broker)."""
    async with asyncio.timeout(SERVED_TIMEOUT):
        while True:
            try:
                await node.ask("bench.echo", Ping(b"x"), timeout=5)
                return
            except NoResponders:
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def open_path(name: str, data: Any, tmp: str) -> AsyncIterator[Client]:
    """A fresh path for one round: its far process, its near node, its buffer."""
    if name == "memcpy":
        yield Memcpy(data)
        return
    if name in ("raw uds", "raw tcp"):
        kind = name[4:]
        socket_path = os.path.join(tempfile.mkdtemp(dir=tmp), "raw.sock")
        far = await Far.start("raw", kind, socket_path)
        try:
            client = await RawClient.connect(kind, far.address)
            try:
                yield client
            finally:
                await client.close()
        finally:
            await far.close()
        return
    first = _url(name, tmp)
    if name in IN_PROCESS:
        async with Node(first, name="far") as far_node, Node(first, name="near") as near:
            await far_node.spawn(BulkSink, "bench.bulk")
            await far_node.spawn(Echo, "bench.echo")
            await _served(near)
            yield MeshClient(near)
        return
    far = await Far.start("mesh", first)
    try:
        async with Node(joining_url(name, first, far.address), name="near") as near:
            await _served(near)
            yield MeshClient(near)
    finally:
        await far.close()


def _url(scheme: str, tmp: str) -> str:
    """The first node's URL (``bench/_urls.py``); on ``nats+js`` its stream goes with it."""
    url = first_url(scheme, tempfile.mkdtemp(dir=tmp) if needs_dir(scheme) else None)
    if scheme == "nats+js":  # leave no stream behind on the broker
        url += "&delete_stream=1&storage=memory"
    return url


async def capacity(scheme: str, tmp: str) -> str | None:
    """``None`` when ``scheme`` can carry the message, else why not (one line)."""
    return await capacity_of(_url(scheme, tmp))


async def capacity_of(url: str) -> str | None:
    """``None`` when a node on ``url`` can carry the message, else why not (one line).

    Starts one node alone and reads ``transport.capabilities.max_message``
    after start (a broker's limit is known only then: on NATS the server's
    ``max_payload``).
    """
    try:
        async with asyncio.timeout(30), Node(url, name="probe") as node:
            limit = node.transport.capabilities.max_message
    except Exception as exc:
        return f"cannot start: {type(exc).__name__}: {exc}".splitlines()[0]
    if limit >= BULK_BYTES:
        return None
    why = f"capabilities.max_message is {limit:,} bytes, below the {BULK_BYTES:,}-byte attachment"
    if url.startswith("nats"):
        why += (
            " (the server's max_payload less the header reserve); a hybrid deployment "
            "routes large messages over shm:// ([[route]] with min_size)"
        )
    return why


async def one_round(path: PathFigures, data: Any, warm: int, tmp: str) -> tuple[float, list[float]]:
    """The cold transfer and ``warm`` warm ones on a freshly opened path."""
    async with asyncio.timeout(PATH_TIMEOUT), open_path(path.name, data, tmp) as client:
        gc.collect()
        cold = await client.bulk(data)
        warms = []
        for _ in range(warm):
            gc.collect()
            warms.append(await client.bulk(data))
    return cold, warms


async def run(args: argparse.Namespace) -> tuple[dict[str, PathFigures], dict[str, str]]:
    import numpy as np

    data = np.arange(BULK_FLOATS, dtype=np.float32)
    tmp = tempfile.mkdtemp(prefix="smesh-bulk-", dir="/tmp")
    try:
        skipped: dict[str, str] = {}
        for scheme in args.transports:
            reason = await capacity(scheme, tmp)
            if reason is not None:
                skipped[scheme] = reason
                print(f"skipping {scheme}: {reason}", flush=True)
        names = [*FLOORS, *(s for s in args.transports if s not in skipped)]
        paths = {n: PathFigures(n, *label(n)) for n in names}
        for i in range(args.rounds):
            line = []
            for path in paths.values():
                try:
                    cold, warms = await one_round(path, data, args.warm, tmp)
                except Exception as exc:  # one broken path must not lose the others' figures
                    why = f"round {i + 1}: {type(exc).__name__}: {exc}".splitlines()[0]
                    path.failures.append(why)
                    print(f"  {path.name} FAILED {why}", flush=True)
                    continue
                path.cold.append(cold)
                path.warm.extend(warms)
                shown = "/".join(f"{t * 1000:.0f}" for t in warms)
                line.append(f"{path.name} {cold * 1000:.0f} | {shown} ms")
            print(f"round {i + 1}/{args.rounds} (cold | warm): " + "; ".join(line), flush=True)
        return paths, skipped
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- judging and reporting ----------------------------------------------------------------------


def gbps(seconds: float) -> float:
    return BULK_BYTES / seconds / 1e9


def _ms(values: list[float]) -> str:
    """``median (min..max)`` in milliseconds, or ``-``."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * 1000:.1f}"
    return f"{median(values) * 1000:.1f} ({min(values) * 1000:.1f}..{max(values) * 1000:.1f})"


def judge(paths: dict[str, PathFigures]) -> list[list[str]]:
    """The issue-5 goals on warm medians: ``[comparison, measured, target, verdict]`` rows."""
    rows = []
    shm, tcp, memcpy = (paths.get(n) for n in ("shm", "tcp", "memcpy"))
    if shm and tcp and shm.warm and tcp.warm:
        ratio = median(tcp.warm) / median(shm.warm)
        met = ratio >= GOALS["shm vs tcp"]
        rows.append(["tcp:// time / shm:// time (warm)", fmt_ratio(ratio), ">= 7x", _ok(met)])
    if shm and memcpy and shm.warm and memcpy.warm:
        share = median(memcpy.warm) / median(shm.warm)
        met = share >= GOALS["shm vs memcpy"]
        rows.append(["shm:// throughput / memcpy (warm)", fmt_pct(share), ">= 70%", _ok(met)])
    return rows


def _ok(met: bool) -> str:
    return "ok" if met else "MISS"


def report(paths: dict[str, PathFigures], skipped: dict[str, str]) -> str:
    memcpy = paths.get("memcpy")
    floor = median(memcpy.warm) if memcpy and memcpy.warm else float("nan")
    rows = []
    for path in paths.values():
        warm = median(path.warm) if path.warm else float("nan")
        rows.append(
            [
                path.label,
                path.where,
                _ms(path.cold),
                _ms(path.warm),
                f"{gbps(warm):.2f}" if path.warm else "-",
                fmt_pct(floor / warm) if path.warm else "-",
                f"{len(path.cold)}+{len(path.warm)}",
            ]
        )
    parts = [
        f"{BULK_BYTES:,} bytes float32, one ask per transfer\n"
        + render_table(
            [
                "path",
                "receiver",
                "cold ms (min..max)",
                "warm ms (min..max)",
                "warm GB/s",
                "vs memcpy",
                "cold+warm",
            ],
            rows,
            [False, False, True, True, True, True, True],
        )
    ]
    targets = judge(paths)
    if targets:
        parts.append(
            "Goals (issue 5, warm medians, same run)\n"
            + render_table(
                ["comparison", "measured", "target", "verdict"], targets, [False, True, True, False]
            )
        )
    failed = [f"  {p.name}: {f}" for p in paths.values() for f in p.failures]
    if failed:
        parts.append("failed transfers (left out):\n" + "\n".join(failed))
    if skipped:
        parts.append("skipped:\n" + "\n".join(f"  {s}: {why}" for s, why in skipped.items()))
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from synaptic_mesh.bench.matrix import available_transports

    registered = available_transports()
    parser = argparse.ArgumentParser(
        prog="python -m synaptic_mesh.bench.bulk",
        description="A 100 MB numpy attachment on every transport (receiver in another "
        "process), cold and warm, next to memcpy and raw asyncio sockets.",
    )
    parser.add_argument(
        "--transports",
        default=",".join(registered),
        help="comma-separated schemes (default: every registered one); one that cannot "
        "carry 100 MB or cannot start is skipped with the reason",
    )
    parser.add_argument("--rounds", type=int, help=f"rounds, each a cold path (default {ROUNDS})")
    parser.add_argument("--warm", type=int, help=f"warm transfers per round (default {WARM})")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, 1 warm")
    add_output_options(parser, strict_help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    args.transports = scheme_list(parser, args.transports, "tcp,shm")
    fill_unset(args, full={"rounds": ROUNDS, "warm": WARM}, quick={"rounds": 1, "warm": 1})
    if args.rounds < 1 or args.warm < 0:
        parser.error("--rounds must be positive and --warm at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print its table; 0 when done (1 with ``--strict`` on a miss)."""
    args = parse_args(argv)
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("bulk: numpy is not installed, nothing to send (pip install numpy)")
        return 2
    print(
        run_header("bulk", load_avg()) + f"; {BULK_BYTES:,} bytes per transfer, "
        f"{args.rounds} rounds of 1 cold + {args.warm} warm per path; "
        f"transports={','.join(args.transports)}",
        flush=True,
    )
    paths, skipped = asyncio.run(run(args))
    print("\n" + report(paths, skipped))
    targets = judge(paths)
    if args.json:
        write_json(
            args.json,
            "bulk",
            args=vars(args),
            bulk_bytes=BULK_BYTES,
            floor="memcpy",
            note="seconds per transfer; cold: the first on a freshly opened path, one per round",
            paths={
                p.name: {
                    "label": p.label,
                    "receiver": p.where,
                    "cold_s": p.cold,
                    "warm_s": p.warm,
                    "failures": p.failures,
                }
                for p in paths.values()
            },
            skipped=skipped,
            targets=[
                dict(zip(("name", "measured", "target", "verdict"), t, strict=True))
                for t in targets
            ],
        )
    return 1 if args.strict and any(t[-1] == "MISS" for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
