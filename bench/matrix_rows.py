"""The matrix's common row, and one normaliser per bench module's ``--json``.

Every bench script writes JSON of its own shape (``bench/inproc.py`` keeps
per-peer series, ``bench/links.py`` per-peer round lists, ``bench/patterns.py``
a table per transport). ``synaptic-mesh bench`` needs one shape to print, plot
and judge, so each module gets a small function here turning its JSON into
:class:`Row` objects: a figure, the floor it is compared with (measured in the
same run by the same script), the ratio, the issue's target when one applies
and the verdict. A normaliser that meets JSON it does not understand raises
``KeyError``/``TypeError``; the matrix reports that section as failed with the
error instead of dropping it.

Ratios are always ``value / floor_value``. Latencies are lower-is-better, so
their targets read ``<= 1.5x``; throughputs are higher-is-better, so theirs
read ``>= 60%`` (a share) or ``>= 7x`` (a speed-up).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from synaptic_mesh.bench._stats import median, spread, tail_note


@dataclasses.dataclass
class Goal:
    """A target from an earlier issue: ``ratio op bound`` (``>=`` or ``<=``)."""

    op: str
    bound: float
    percent: bool = False  # shown as a share (``>= 70%``) rather than a factor (``>= 7x``)
    overhead: bool = False  # a throughput share shown as the cost over the floor (``+20%``)

    def text(self) -> str:
        if self.overhead:
            return f"<= +{(1 / self.bound - 1) * 100:.0f}% overhead"
        return f"{self.op} {self.bound * 100:g}%" if self.percent else f"{self.op} {self.bound:g}x"

    def show(self, ratio: float | None) -> str:
        """``ratio`` the way this goal states its bound."""
        if ratio is None or math.isnan(ratio) or ratio == 0:
            return "-"
        if self.overhead:
            return f"{(1 / ratio - 1) * 100:+.0f}%"
        return f"{ratio * 100:.0f}%" if self.percent else f"{ratio:.2f}x"

    def verdict(self, ratio: float | None) -> str:
        if ratio is None or math.isnan(ratio):
            return "n/a"
        met = ratio >= self.bound if self.op == ">=" else ratio <= self.bound
        return "PASS" if met else "MISS"


@dataclasses.dataclass
class Row:
    """One figure of the matrix, next to its floor."""

    section: str
    transport: str
    pattern: str
    peer: str
    metric: str
    value: float | None
    unit: str
    floor_name: str | None = None
    floor_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    verdict: str = "info"
    spread: float | None = None
    runs: int = 0
    goal_source: str | None = None
    ratio_range: tuple[float, float] | None = None  # per-round min..max of the ratio, if known
    ratio_text: str | None = None  # the ratio as its goal states it (``88%``, ``+12% overhead``)
    range_text: str | None = None
    low: float | None = None  # smallest of the runs
    high: float | None = None  # largest of the runs
    samples: int | None = None  # latency samples a percentile was taken from
    note: str | None = None  # e.g. a percentile resting on few samples

    def as_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in dataclasses.asdict(self).items()}


_QUANTILE = re.compile(r"(?:^| )p(\d+(?:\.\d+)?)$")
"""The percentile a metric names: ``p99.9`` in ``round trip p99.9``."""


def _finite(value: Any) -> Any:
    """NaN and infinities become ``None``: ``results.json`` stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple | list):
        return [_finite(v) for v in value]
    return value


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def figure(
    section: str,
    transport: str,
    pattern: str,
    peer: str,
    metric: str,
    runs: Sequence[float],
    unit: str,
    *,
    floor: tuple[str, Sequence[float]] | None = None,
    goal: Goal | None = None,
    source: str | None = None,
    pooled: float | None = None,
    floor_pooled: float | None = None,
    samples: int | None = None,
) -> Row:
    """A row from per-round values: median, spread, and the ratio of medians to the floor's.

    With a floor, the per-round range of the paired ratio is kept too when both
    series have the same length (the scripts interleave peers round by round).
    A tail percentile may come ``pooled`` over every round's samples
    (``floor_pooled`` for its floor): then that is the value, the per-round
    figures give its spread, and ``samples`` (how many it was taken from) says
    whether it rests on enough of them (:func:`~synaptic_mesh.bench._stats.tail_note`).
    """
    value = _num(pooled) if pooled is not None else (_num(median(runs)) if runs else None)
    row = Row(section, transport, pattern, peer, metric, value, unit, runs=len(runs))
    row.spread = _num(spread(runs)) if len(runs) > 1 else None  # one run has no spread
    if runs:
        row.low, row.high = _num(min(runs)), _num(max(runs))
    quantile = _QUANTILE.search(metric)
    if samples and quantile:
        row.samples = samples
        row.note = tail_note(float(quantile.group(1)), samples)
    if floor is not None:
        name, floor_runs = floor
        row.floor_name = name
        if floor_pooled is not None:
            row.floor_value = _num(floor_pooled)
        else:
            row.floor_value = _num(median(floor_runs)) if floor_runs else None
        if value is not None and row.floor_value:
            row.ratio = value / row.floor_value
        if runs and len(runs) == len(floor_runs) and all(floor_runs):
            paired = [a / b for a, b in zip(runs, floor_runs, strict=True)]
            row.ratio_range = (min(paired), max(paired))
    if goal is not None:
        row.target = goal.text()
        row.verdict = goal.verdict(row.ratio)
        row.goal_source = source
    shown = goal or Goal(">=", 0)
    row.ratio_text = shown.show(row.ratio)
    if row.ratio_range is not None and len(runs) > 1:
        low, high = (shown.show(r) for r in row.ratio_range)
        if shown.overhead:  # the smaller share is the larger overhead
            low, high = high, low
        row.range_text = f"{low}..{high}"
    return row


def failed(
    section: str,
    transport: str,
    pattern: str,
    peer: str,
    metric: str,
    failures: Sequence[str],
    unit: str,
    note: str | None = None,
) -> Row:
    """A row counting the runs of a figure that failed, judged MISS.

    A failed trial or transfer is left out of its figure, so without this row
    the figure would pass on the runs that happened to work.
    """
    return Row(
        section,
        transport,
        pattern,
        peer,
        metric,
        float(len(failures)),
        unit,
        verdict="MISS",
        note=note,
    )


# -- bench.inproc ---------------------------------------------------------------------------------

INPROC_GOALS = {
    ("tell", "handactor_waiter"): Goal(">=", 0.5),
    ("tell", "pykka"): Goal(">=", 5.0),
    ("ask_p50", "handactor_waiter"): Goal("<=", 2.0),
}


def from_inproc(data: dict[str, Any]) -> list[Row]:
    """In-process peers: tell throughput and ask latency, each against the hand-written floor.

    The runtime is also compared with every other peer (pykka, asyncio.Queue,
    AutoGen-core when it ran); the goals of ``bench.inproc`` are judged here
    from the series again, so the matrix and the script agree by construction.
    """
    peers = data["peers"]
    floor = data.get("floor", "handactor_waiter")
    runtime = data.get("runtime", "synaptic_mesh")
    source = "bench.inproc"
    rows: list[Row] = []
    series = {
        name: {
            "tell": p["tell_msgs_per_s"]["runs"],
            "ask_p50": p["ask_us"]["p50_runs"],
            "ask_p99": p["ask_us"]["p99_runs"],
            "ask_p99.9": p["ask_us"].get("p999_runs", []),
        }
        for name, p in peers.items()
    }
    metrics = (
        ("tell", "tell throughput", "msgs/s"),
        ("ask_p50", "ask p50", "us"),
        ("ask_p99", "ask p99", "us"),
        ("ask_p99.9", "ask p99.9", "us"),
    )
    asks = data.get("asks")  # per round: each percentile is a median of per-round ones
    for name in peers:
        for key, label, unit in metrics:
            if not series[name][key]:
                continue
            against = None if name == floor else (floor, series[floor][key])
            goal = INPROC_GOALS.get((key, floor)) if name == runtime else None
            rows.append(
                figure(
                    "inproc",
                    "inproc",
                    "",
                    name,
                    label,
                    series[name][key],
                    unit,
                    floor=against,
                    goal=goal,
                    source=source,
                    samples=asks if unit == "us" else None,
                )
            )
    for other in peers:
        if other in (runtime, floor):
            continue
        for key, label, unit in metrics[:2]:
            goal = INPROC_GOALS.get((key, other))
            rows.append(
                figure(
                    "inproc",
                    "inproc",
                    "",
                    runtime,
                    label,
                    series[runtime][key],
                    unit,
                    floor=(other, series[other][key]),
                    goal=goal,
                    source=source if goal else None,
                )
            )
    return rows


# -- bench.links ----------------------------------------------------------------------------------

LINK_FLOORS = {"shm": "raw uds", "tcp": "raw tcp"}
BULK_BYTES = 100_000_000
SMALL_METRICS = (
    ("p50", "round trip p50", "us"),
    ("p99", "round trip p99", "us"),
    ("p999", "round trip p99.9", "us"),
    ("oneway", "one-way throughput", "msgs/s"),
)


def _small_rows(
    section: str,
    small: dict[str, Any],
    floors: dict[str, str],
    goals: dict[str, Goal],
) -> list[Row]:
    """Rows of a ``bench.links``-shaped ``small`` part: each transport and its raw floor.

    ``small`` maps each peer to per-round lists ``p50``, ``p99``, ``p999``
    and ``oneway``, and optionally ``p999_pooled`` with ``samples`` (p99.9
    over every round's round trips together), which then is the p99.9 figure.
    """
    rows: list[Row] = []
    for transport, floor in floors.items():
        if transport not in small:
            continue
        for peer in (transport, floor):
            s, f = small[peer], small[floor]
            mine = peer == transport
            for key, metric, unit in SMALL_METRICS:
                if not s.get(key):
                    continue
                tail = key == "p999" and s.get("p999_pooled") is not None
                goal = goals.get(metric) if mine else None
                rows.append(
                    figure(
                        section,
                        transport,
                        "",
                        f"{peer}://" if mine else peer,
                        metric,
                        s[key],
                        unit,
                        floor=(floor, f[key]) if mine else None,
                        goal=goal,
                        source=f"bench.{section}" if goal else None,
                        pooled=s["p999_pooled"] if tail else None,
                        floor_pooled=f.get("p999_pooled") if tail and mine else None,
                        samples=s.get("samples") if tail else None,
                    )
                )
    return rows


def from_links(data: dict[str, Any]) -> list[Row]:
    """``shm://`` and ``tcp://`` across two processes: 64-byte messages against raw asyncio.

    Round trip p50/p99/p99.9 and one-way throughput against the raw asyncio
    echo of the same socket family (p50 <= 1.5x, one-way >= 60%). The 100 MB
    transfer is read from ``bench.bulk`` only (the matrix runs ``links`` with
    ``--transfers 0``), so each figure has one source.
    """
    goals = {
        "round trip p50": Goal("<=", 1.5),
        "one-way throughput": Goal(">=", 0.6, percent=True),
    }
    return _small_rows("links", data["small"], LINK_FLOORS, goals)


# -- bench.bulk -----------------------------------------------------------------------------------

BULK_FLOORS = ("memcpy", "raw uds", "raw tcp")
FLOOR = "floor"
"""The transport of a row that is a floor of no one scheme (memcpy, raw sockets)."""
WARM, COLD = "100 MB transfer, warm", "100 MB transfer, cold"


def _bulk_peer(name: str) -> str:
    """How a bulk path is named in rows: ``tcp://`` for a transport, ``raw tcp`` for a floor."""
    return name if name in BULK_FLOORS else f"{name}://"


def from_bulk(data: dict[str, Any]) -> list[Row]:
    """The 100 MB attachment on every transport that carried it, in GB/s.

    Every path (floors included) against a memcpy of the same bytes in the
    same run, warm and cold separately; ``shm://`` against ``tcp://`` (the
    seed's 7x claim) and ``tcp://`` against raw asyncio TCP. Goals of issue 5
    on warm medians: ``shm://`` >= 7x ``tcp://`` and >= 70% of memcpy. The
    floors get the transport ``floor`` (they belong to no scheme); a path
    with failed transfers gets a ``failed transfers`` row judged MISS.
    """
    size = data.get("bulk_bytes", BULK_BYTES)
    paths: dict[str, Any] = data["paths"]

    def rates(name: str, key: str) -> list[float]:
        return [size / t / 1e9 for t in paths[name][key]] if name in paths else []

    rows: list[Row] = []
    for name, path in paths.items():
        floor = name in BULK_FLOORS
        transport, peer = (FLOOR if floor else name), _bulk_peer(name)
        for metric, key in ((WARM, "warm_s"), (COLD, "cold_s")):
            runs = rates(name, key)
            if not runs:
                continue
            memcpy = rates("memcpy", key)
            goal = Goal(">=", 0.7, percent=True) if name == "shm" and metric == WARM else None
            rows.append(
                figure(
                    "bulk",
                    transport,
                    "",
                    peer,
                    metric,
                    runs,
                    "GB/s",
                    floor=("memcpy", memcpy) if name != "memcpy" and memcpy else None,
                    goal=goal,
                    source="bench.links" if goal else None,
                )
            )
        if path.get("failures"):
            failures = path["failures"]
            note = "; ".join(failures)[:300]
            rows.append(
                failed("bulk", transport, "", peer, "failed transfers", failures, "rounds", note)
            )
    for name, floor_name, goal in (
        ("shm", "tcp", Goal(">=", 7.0)),
        ("tcp", "raw tcp", None),
        ("shm", "raw tcp", None),
    ):
        for metric, key in ((WARM, "warm_s"), (COLD, "cold_s")):
            runs, floor_runs = rates(name, key), rates(floor_name, key)
            if not runs or not floor_runs:
                continue
            judged = goal if metric == WARM else None
            rows.append(
                figure(
                    "bulk",
                    name,
                    "",
                    f"{name}://",
                    metric,
                    runs,
                    "GB/s",
                    floor=(_bulk_peer(floor_name), floor_runs),
                    goal=judged,
                    source="bench.links" if judged else None,
                )
            )
    return rows


# -- bench.patterns -------------------------------------------------------------------------------


def from_patterns(data: dict[str, Any]) -> list[Row]:
    """Each pattern on each transport against its bare ``node.publish`` twin.

    The overhead goal (at most 20% over the twin) is a throughput ratio:
    ``pattern rate / twin rate >= 1 / 1.2``, reported here as the share of the
    twin's rate; ``bench.patterns`` itself reports it as the median of the
    per-round overheads, which can differ slightly from the ratio of medians.
    """
    target = float(data.get("target", 0.2))
    goal = Goal(">=", 1 / (1 + target), overhead=True)
    rows: list[Row] = []
    twin = "bare publish twin"
    for transport, table in data["transports"].items():
        for pattern, r in table.items():
            where = ("patterns", transport, pattern, "synaptic_mesh")
            rows.append(
                figure(*where, "p50", r["p50_us"], "us", floor=(twin, r.get("bare_p50_us") or []))
            )
            rows.append(
                figure(
                    *where,
                    "p99",
                    r["p99_us"],
                    "us",
                    floor=(twin, r["bare_p99_us"]) if r.get("bare_p99_us") else None,
                    samples=min(r.get("samples_per_round") or [0]) or None,
                )
            )
            if r.get("p999_us"):
                rows.append(
                    figure(
                        *where,
                        "p99.9",
                        r["p999_us"],
                        "us",
                        floor=(twin, r["bare_p999_us"]) if r.get("bare_p999_us") else None,
                        pooled=r.get("p999_pooled_us"),
                        floor_pooled=r.get("bare_p999_pooled_us"),
                        samples=r.get("samples"),
                    )
                )
            judged = pattern != "its hook" and r.get("verdict") in ("PASS", "MISS")
            rows.append(
                figure(
                    *where,
                    "throughput",
                    r["ops_per_s"],
                    "ops/s",
                    floor=(twin, r.get("bare_ops_per_s") or []),
                    goal=goal if judged else None,
                    source="bench.patterns" if judged else None,
                )
            )
            if r.get("failures"):
                rows.append(failed(*where, "failed trials", r["failures"], "trials"))
    return rows


def skipped_transports(data: dict[str, Any]) -> dict[str, str]:
    """The transports a script left out, each with its reason (``skipped`` in its JSON)."""
    return dict(data.get("skipped") or {})


# -- bench.zmq, bench.nng, bench.nats: raw-client floors ------------------------------------

ZMQ_FLOORS = {"zmq": "raw router", "zmq+pair": "raw router", "zmq+pubsub": "raw pubsub"}
NNG_FLOORS = {"nng+tcp": "raw nng tcp", "nng+ipc": "raw nng ipc"}
CLIENT_GOALS = {
    "round trip p50": Goal("<=", 1.3),
    "one-way throughput": Goal(">=", 0.7, percent=True),
}


def small_against_raw(
    section: str, floors: dict[str, str]
) -> Callable[[dict[str, Any]], list[Row]]:
    """A normaliser for a script shaped like ``bench.links``' small part.

    Its JSON holds ``small`` (or ``results``): per peer, per-round lists
    ``p50``, ``p99``, optionally ``p999`` (and ``p999_pooled``), and ``oneway``;
    ``floors`` maps each transport to the raw client it is judged against
    (round trip p50 <= 1.3x, one-way >= 70%).
    """

    def normalise(data: dict[str, Any]) -> list[Row]:
        return _small_rows(section, data.get("small") or data["results"], floors, CLIENT_GOALS)

    return normalise


def from_nats(data: dict[str, Any]) -> list[Row]:
    """``NatsTransport``/``NatsJsTransport`` against raw nats-py on the same server.

    Reads the per-round series ``bench.nats`` keeps (``rtt p50 raw``,
    ``rtt p50 transport``, ``rtt p50 ask``, the same for p99 and p99.9,
    ``flow raw``/``flow transport`` in msgs/s and ``js raw``/``js transport``
    in acknowledged publishes/s), found under ``series`` or ``rows``.
    """
    series: dict[str, list[float]] = data.get("series") or data["rows"]
    pooled: dict[str, float] = data.get("pooled") or {}
    samples = (data.get("samples") or {}).get("rtt")
    raw = "raw nats-py"
    rows: list[Row] = []
    for q in ("p50", "p99", "p99.9"):
        key = f"rtt {q} transport"
        if key not in series:
            continue
        metric = f"round trip {q}"
        goal = CLIENT_GOALS.get(metric)
        tail = {
            name: pooled.get(f"rtt {q} {name}") for name in ("raw", "transport", "ask")
        }  # None unless the script pooled this percentile
        per_round = (data.get("args") or {}).get("trips")
        count = samples if tail["raw"] is not None else per_round
        for name, peer in (("transport", "nats://"), ("raw", raw), ("ask", "nats:// node ask")):
            if f"rtt {q} {name}" not in series:
                continue
            mine = name != "raw"
            judged = goal if name == "transport" else None
            rows.append(
                figure(
                    "nats",
                    "nats",
                    "",
                    peer,
                    metric,
                    series[f"rtt {q} {name}"],
                    "us",
                    floor=(raw, series[f"rtt {q} raw"]) if mine else None,
                    goal=judged,
                    source="bench.nats" if judged else None,
                    pooled=tail[name],
                    floor_pooled=tail["raw"] if mine else None,
                    samples=count,
                )
            )
    if "flow transport" in series:
        metric = "one-way throughput"
        rows.append(
            figure(
                "nats",
                "nats",
                "",
                "nats://",
                metric,
                series["flow transport"],
                "msgs/s",
                floor=(raw, series["flow raw"]),
                goal=CLIENT_GOALS[metric],
                source="bench.nats",
            )
        )
        rows.append(figure("nats", "nats", "", raw, metric, series["flow raw"], "msgs/s"))
    if "js transport" in series:
        # issue 8 asks for JetStream "next to raw nats-py": reported, no target
        metric = "JetStream publish+ack throughput"
        rows.append(
            figure(
                "nats",
                "nats+js",
                "",
                "nats+js://",
                metric,
                series["js transport"],
                "msgs/s",
                floor=(raw, series["js raw"]),
            )
        )
        rows.append(figure("nats", "nats+js", "", raw, metric, series["js raw"], "msgs/s"))
    if not rows:
        raise KeyError("no 'rtt p50 transport', 'flow transport' or 'js transport' series")
    return rows


NORMALISERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "inproc": from_inproc,
    "links": from_links,
    "bulk": from_bulk,
    "patterns": from_patterns,
    "zmq": small_against_raw("zmq", ZMQ_FLOORS),
    "nng": small_against_raw("nng", NNG_FLOORS),
    "nats": from_nats,
}
