"""Tree of thought over a damaged 3D scan: explore, vote, refine on a hotline, process.

The seed's scenario, deterministic and offline (fixed rules instead of model
calls), with every interaction pattern in its place:

1. pub-sub: four ``Explorer`` branches publish their idea on
   ``tot.<branch>.exploration``; the judges subscribe to ``tot.*.exploration``.
2. survey + consensus: ``Claude`` (the lead) surveys the council of judges
   (``@respond("tot.council")``) and picks a branch by confidence-weighted vote.
3. PAIR hotline: ``Claude`` and ``Gemini`` (the two leads) refine the chosen
   plan over an exclusive line until Gemini approves it.
4. pipeline: the scans go through ``meshjobs`` (repair, decimate, export; two
   workers per stage, in order per scan); the ``Archivist`` hears the results.

Only ``Claude`` prints while the run goes on, and the ``Archivist`` prints
the results (sorted) when it stops, so the output is the same on every run
and every transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from synaptic_mesh import (
    AgentActor,
    Ballot,
    Hotline,
    Pipeline,
    Stage,
    StageWorker,
    majority,
    message,
    respond,
    subscribe,
    weighted_by_confidence,
)


@dataclass(frozen=True)
class Branch:
    idea: str
    cost: int
    quality: int
    risk: str


BRANCHES: dict[str, Branch] = {
    "branch1": Branch("remesh with Poisson reconstruction, then decimate", 8, 9, "low"),
    "branch2": Branch("fill the holes locally and keep the scanned topology", 3, 5, "medium"),
    "branch3": Branch("voxelise at 2 mm and run marching cubes", 5, 7, "low"),
    "branch4": Branch("ask the photographer for a new capture", 13, 10, "high"),
}

SCANS: tuple[tuple[str, int, int], ...] = (
    ("scan-a", 120_000, 7),
    ("scan-b", 80_000, 2),
    ("scan-c", 200_000, 12),
    ("scan-d", 50_000, 0),
)
"""The meshes to process: name, faces, holes."""


@message(name="tot.Exploration")
class Exploration:
    branch: str
    idea: str
    cost: int
    quality: int
    risk: str


@message(name="tot.Choose")
class Choose:
    """The council's question: which branch should we follow?"""

    branches: list[str]


@message(name="tot.Draft")
class Draft:
    round: int
    steps: list[str]


@message(name="tot.Critique")
class Critique:
    approved: bool
    note: str
    add: str = ""


@message(name="tot.MeshJob")
class MeshJob:
    mesh: str
    faces: int
    holes: int
    notes: list[str]


# -- pub-sub: the branches -------------------------------------------------------------


class Explorer(AgentActor):
    """One branch of the tree: publishes its exploration once, when it starts."""

    def __init__(self, branch: str) -> None:
        self.branch = branch

    async def on_start(self) -> None:
        b = BRANCHES[self.branch]
        found = Exploration(self.branch, b.idea, b.cost, b.quality, b.risk)
        await self.publish(f"tot.{self.branch}.exploration", found)


# -- survey: the council -----------------------------------------------------------------


class Judge(AgentActor):
    """Hears every exploration; votes by its style when the council is asked."""

    def __init__(self, style: str, confidence: float) -> None:
        self.style = style
        self.confidence = confidence
        self.heard: dict[str, Exploration] = {}

    @subscribe("tot.*.exploration")
    async def explored(self, found: Exploration) -> None:
        self.heard[found.branch] = found

    @respond("tot.council")
    async def vote(self, question: Choose) -> Ballot:
        options = [self.heard[b] for b in question.branches if b in self.heard]
        if self.style == "cautious":
            pick = max((o for o in options if o.risk == "low"), key=lambda o: o.quality)
            why = f"low risk, best quality ({pick.quality})"
        elif self.style == "thrifty":
            pick = min((o for o in options if o.risk != "high"), key=lambda o: o.cost)
            why = f"cheapest acceptable (cost {pick.cost})"
        elif self.style == "bold":
            pick = max(options, key=lambda o: o.quality)
            why = f"best quality ({pick.quality}), whatever the risk"
        else:
            pick = max((o for o in options if o.risk != "high"), key=lambda o: o.quality / o.cost)
            why = f"best quality per cost ({pick.quality / pick.cost:.2f})"
        return Ballot(pick.branch, self.confidence, why)


# -- hotline: the two leads ----------------------------------------------------------------

REQUIRED = ("patch large holes", "check watertightness")


class Gemini(AgentActor):
    """Critiques Claude's drafts on the hotline until one has every required step."""

    async def on_hotline(self, line: Hotline) -> None:
        async for draft in line:
            missing = [step for step in REQUIRED if step not in draft.steps]
            if missing:
                await line.send(Critique(False, f"needs work: add {missing[0]!r}", missing[0]))
            else:
                await line.send(Critique(True, f"approved: {len(draft.steps)} steps"))


# -- pipeline: mesh jobs ------------------------------------------------------------------


class Repair(StageWorker):
    async def process(self, job: MeshJob) -> MeshJob:
        notes = [*job.notes, f"repaired {job.holes} holes" if job.holes else "no holes"]
        return MeshJob(job.mesh, job.faces, 0, notes)


async def decimate(job: MeshJob) -> MeshJob:
    target = max(job.faces // 4, 20_000)
    return MeshJob(job.mesh, target, job.holes, [*job.notes, f"{job.faces} -> {target} faces"])


async def export(job: MeshJob) -> MeshJob:
    return MeshJob(job.mesh, job.faces, job.holes, [*job.notes, f"exported {job.mesh}.obj"])


MESH_JOBS = Pipeline(
    "meshjobs",
    [Stage("repair", Repair), Stage("decimate", decimate), Stage("export", export, workers=1)],
    workers=2,
    key=lambda job: job.mesh,
    output="meshjobs.done",
)


class MeshLab(AgentActor):
    """Starts the mesh-processing pipeline (a supervision subtree of its own)."""

    async def on_start(self) -> None:
        await self.node.start_supervisor(MESH_JOBS)


class Archivist(AgentActor):
    """Hears the processed meshes; prints them in name order when it stops."""

    def __init__(self) -> None:
        self.done: dict[str, MeshJob] = {}

    @subscribe("meshjobs.done")
    async def archived(self, job: MeshJob) -> None:
        self.done[job.mesh] = job

    async def on_stop(self) -> None:
        for name in sorted(self.done):
            print(f"archivist: {name}: {', '.join(self.done[name].notes)}", flush=True)
        print(f"archivist: {len(self.done)} meshes done", flush=True)


# -- the lead -----------------------------------------------------------------------------


class Claude(AgentActor):
    """Runs the scenario in ``on_start``: survey, hotline, then feeds the pipeline."""

    def __init__(self, council: str = "tot.council", partner: str = "core.gemini") -> None:
        self.council = council
        self.partner = partner

    async def on_start(self) -> None:
        branches = sorted(BRANCHES)
        say(f"claude: {len(branches)} branches explored; asking the council ({self.council})")
        votes = await self.survey(self.council, Choose(branches), timeout=5, quorum=4)
        for vote in sorted(votes, key=lambda v: v.respondent):
            b = vote.value
            say(f"  {vote.respondent:<15} -> {b.choice} ({b.confidence:.2f}): {b.reason}")
        say(f"claude: majority: {majority(votes).reason}")
        decision = weighted_by_confidence(votes)
        say(f"claude: weighted_by_confidence: {decision.reason}")
        if not decision:
            return
        chosen = decision.value
        say(f"claude: hotline to {self.partner} about {chosen}: {BRANCHES[chosen].idea}")
        steps = ["fill small holes", "keep topology"]
        async with self.hotline(self.partner) as line:
            for round in range(1, 6):
                say(f"  claude> draft {round}: {'; '.join(steps)}")
                await line.send(Draft(round, steps))
                critique = await line.receive()
                say(f"  gemini> {critique.note}")
                if critique.approved:
                    break
                steps = [*steps, critique.add]
        say(f"claude: line closed ({line.closed_reason})")
        say(f"claude: feeding {len(SCANS)} scans into pipeline meshjobs")
        for name, faces, holes in SCANS:
            await self.feed("meshjobs", MeshJob(name, faces, holes, []))


def say(line: str) -> None:
    print(line, flush=True)
