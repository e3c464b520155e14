"""Claude asks Gemini to verify claims; a scribe writes the transcript.

The scenario of DESIGN.md section 1, made deterministic and offline: Gemini
judges claims with a few fixed rules instead of calling a model, so the
transcript is the same on every run and every transport.

Why the scribe prints and Claude does not (beyond one opening line): Claude
and the scribe run concurrently, so lines printed by both could interleave
differently from run to run. Each verdict carries its claim, and the scribe
prints in claim order (it holds back a verdict that overtook an earlier one:
the mesh orders messages per publisher *and subject*, and every verdict has
its own subject ``tot.verdicts.<n>``).
"""

from __future__ import annotations

import re
import string

from synaptic_mesh import AgentActor, message, on, subscribe

CLAIMS: tuple[str, ...] = (
    "Water boils at 100 degrees Celsius at sea level.",
    "The Great Wall of China is visible from the Moon with the naked eye.",
    "7 * 6 = 42",
    "This mesh is always watertight.",
)
"""What Claude asks about when the deployment gives no ``claims``."""


@message(name="claude_gemini.Verify")
class Verify:
    """A request to check one claim."""

    claim: str


@message(name="claude_gemini.Verdict")
class Verdict:
    """Gemini's answer; it echoes the claim so a listener needs no other context."""

    ok: bool
    reason: str
    claim: str = ""


# -- Gemini: deterministic rules instead of a model ------------------------------

KNOWN_FACTS: dict[str, tuple[bool, str]] = {
    "water boils at 100 degrees celsius at sea level": (
        True,
        "known fact: at 1 atm water boils at 100 C",
    ),
    "the great wall of china is visible from the moon with the naked eye": (
        False,
        "known myth: no astronaut has seen it from the Moon",
    ),
}
ABSOLUTES = ("always", "never", "guaranteed", "impossible")
ARITHMETIC = re.compile(r"^\s*(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?\s*$")


def judge(claim: str) -> Verdict:
    """Check ``claim`` against the rules, most specific first."""
    key = claim.lower().strip().rstrip(string.punctuation).strip()
    if key in KNOWN_FACTS:
        ok, reason = KNOWN_FACTS[key]
        return Verdict(ok, reason, claim)
    match = ARITHMETIC.match(claim)
    if match:
        a, op, b, stated = match.groups()
        x, y = int(a), int(b)
        actual = x + y if op == "+" else x - y if op == "-" else x * y
        return Verdict(actual == int(stated), f"arithmetic: {a} {op} {b} = {actual}", claim)
    words = set(key.split())
    absolute = next((w for w in ABSOLUTES if w in words), None)
    if absolute is not None:
        return Verdict(False, f"absolute claim ({absolute!r}) that no rule can confirm", claim)
    return Verdict(False, "unverified: no rule applies", claim)


class Gemini(AgentActor):
    """The verifier: answers each ``Verify`` ask with a ``Verdict``."""

    @on(Verify)
    async def verify(self, msg: Verify) -> Verdict:
        return judge(msg.claim)


class Claude(AgentActor):
    """Asks the verifier about each claim, one at a time, and publishes the verdicts.

    All the work happens in ``on_start``, so ``Node.spawn`` returns once every
    claim has been answered; spawn the verifier and the scribe before Claude.
    """

    def __init__(
        self,
        verifier: str = "core.gemini",
        topic: str = "tot.verdicts",
        claims: list[str] | None = None,
    ) -> None:
        self.verifier = verifier
        self.topic = topic
        self.claims = tuple(claims) if claims is not None else CLAIMS

    async def on_start(self) -> None:
        print(f"claude: asking {self.verifier} to verify {len(self.claims)} claims", flush=True)
        for n, claim in enumerate(self.claims, start=1):
            verdict = await self.ask(self.verifier, Verify(claim), timeout=5)
            await self.publish(f"{self.topic}.{n}", verdict)


class Scribe(AgentActor):
    """Prints one transcript line per verdict, in claim order, and a summary at the end."""

    def __init__(self) -> None:
        self.next = 1
        self.held: dict[int, Verdict] = {}
        self.counts = {True: 0, False: 0}

    @subscribe("tot.verdicts.>")
    async def record(self, verdict: Verdict) -> None:
        last = self.current_subject.rsplit(".", 1)[-1]
        if not last.isdigit():
            self.log.warning("ignoring verdict on %s", self.current_subject)
            return
        self.held[int(last)] = verdict
        while self.next in self.held:
            self._write(self.next, self.held.pop(self.next))
            self.next += 1

    def _write(self, n: int, verdict: Verdict) -> None:
        self.counts[verdict.ok] += 1
        label = "TRUE " if verdict.ok else "FALSE"
        print(f'[{n}] {label} "{verdict.claim}" -- {verdict.reason}', flush=True)

    async def on_stop(self) -> None:
        for n in sorted(self.held):  # verdicts after a gap that never closed
            self._write(n, self.held[n])
        total = self.counts[True] + self.counts[False]
        print(
            f"scribe: {total} verdicts, {self.counts[True]} true, {self.counts[False]} false",
            flush=True,
        )
