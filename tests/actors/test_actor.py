"""AgentActor behaviour on one node: dispatch, replies, errors, lifecycle."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from synaptic_mesh import (
    DEAD_LETTER_SUBJECT,
    ActorStartError,
    AgentActor,
    AskTimeout,
    DeadLetter,
    Node,
    NoResponders,
    Pipeline,
    RemoteError,
    Stage,
    ThreadedAgentActor,
    TransportClosed,
    message,
    on,
    respond,
    subscribe,
)


@message(name="test_actor.Verify")
class Verify:
    claim: str


@message(name="test_actor.Verdict")
class Verdict:
    ok: bool
    reason: str


@message(name="test_actor.Unhandled")
class Unhandled:
    pass


@message(name="test_actor.Crash")
class Crash:
    why: str


class Gemini(AgentActor):
    def __init__(self, prefix: str = "checked") -> None:
        self.prefix = prefix
        self.events: list[str] = []

    async def on_start(self) -> None:
        self.events.append(f"start {self.subject}")

    async def on_stop(self) -> None:
        self.events.append("stop")

    @on(Verify)
    async def verify(self, msg: Verify) -> Verdict:
        return Verdict(ok="watertight" in msg.claim, reason=f"{self.prefix}: {msg.claim}")

    @on(Crash)
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.why)


async def test_design_example_flow_on_one_node() -> None:
    published: list[tuple[str, object]] = []

    class Claude(AgentActor):
        async def on_start(self) -> None:
            verdict = await self.ask("core.gemini", Verify("mesh is watertight"), timeout=5)
            await self.publish("tot.branch3.exploration", verdict)

    async with Node(transport="inproc://") as node:

        async def keep(msg: object, subject: str) -> None:
            published.append((subject, msg))

        await node.subscribe("tot.>", keep)
        await node.spawn(Gemini, "core.gemini")
        await node.spawn(Claude, "core.claude")
        await node.wait_idle(timeout=5)
    assert published == [("tot.branch3.exploration", Verdict(True, "checked: mesh is watertight"))]


async def test_constructor_arguments_and_subject_available_in_init_and_hooks() -> None:
    async with Node() as node:
        ref = await node.spawn(Gemini, "core.gemini", prefix="audited")
        assert await ref.ask(Verify("x"), timeout=5) == Verdict(False, "audited: x")
        actor = node._local["core.gemini"].actor
        assert actor.events == ["start core.gemini"]
        await ref.stop()
        assert actor.events == ["start core.gemini", "stop"]


async def test_handler_exception_is_remote_error_and_failure_event() -> None:
    async with Node() as node:
        ref = await node.spawn(Gemini, "core.gemini")
        with pytest.raises(RemoteError) as info:
            await ref.ask(Crash("hallucinated citation"), timeout=5)
        assert info.value.remote_type == "RuntimeError"
        assert "hallucinated citation" in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert node.stats.failures == 1
        ref.tell_nowait(Crash("told, not asked"))
        await node.wait_idle(timeout=5)
        assert node.stats.failures == 2
        reasons = [d.reason for d, _ in node.recent_dead_letters]
        assert "handler raised RuntimeError: told, not asked" in reasons
        assert await ref.ask(Verify("still alive"), timeout=5) is not None


async def test_unhandled_message_is_dead_letter_and_ask_fails_fast() -> None:
    async with Node() as node:
        letters: list[DeadLetter] = []

        async def watch(letter: DeadLetter, subject: str) -> None:
            letters.append(letter)

        await node.subscribe(DEAD_LETTER_SUBJECT, watch)
        ref = await node.spawn(Gemini, "core.gemini")
        ref.tell_nowait(Unhandled())
        with pytest.raises(RemoteError, match="no handler"):
            await ref.ask(Unhandled(), timeout=5)
        await node.wait_idle(timeout=5)
        assert len(letters) == 2
        assert letters[0].subject == "core.gemini"
        assert letters[0].type == "test_actor.Unhandled"
        assert "no handler" in letters[0].reason


async def test_ask_timeout_on_local_actor_and_late_reply_counted() -> None:
    class Slowpoke(AgentActor):
        @on(Verify)
        async def verify(self, msg: Verify) -> str:
            await asyncio.sleep(0.2)
            return "late"

    async with Node() as node:
        ref = await node.spawn(Slowpoke, "core.slow")
        started = time.monotonic()
        with pytest.raises(AskTimeout):
            await ref.ask(Verify("x"), timeout=0.05)
        assert 0.04 < time.monotonic() - started < 0.18
        await node.wait_idle(timeout=5)
        assert node.stats.late_replies == 1


async def test_ask_nobody_raises_no_responders_at_once_and_records_dead_letter() -> None:
    async with Node() as node:
        started = time.monotonic()
        with pytest.raises(NoResponders, match=r"nobody\.here"):
            await node.ask("nobody.here", Verify("x"), timeout=5)
        assert time.monotonic() - started < 0.5
        letter, original = node.recent_dead_letters[-1]
        assert letter.reason == "no responders"
        assert original == Verify("x")


async def test_start_failure_raises_actor_start_error_and_frees_the_subject() -> None:
    class Broken(AgentActor):
        async def on_start(self) -> None:
            raise OSError("model weights missing")

    async with Node() as node:
        with pytest.raises(ActorStartError, match="model weights missing"):
            await node.spawn(Broken, "core.broken")
        assert node.actors() == []
        await node.spawn(Gemini, "core.broken")  # the subject is free again


async def test_spawn_rejects_bad_input() -> None:
    async with Node() as node:
        await node.spawn(Gemini, "core.gemini")
        with pytest.raises(ValueError, match="already serves"):
            await node.spawn(Gemini, "core.gemini")
        with pytest.raises(ValueError):
            await node.spawn(Gemini, "core.*")
        with pytest.raises(TypeError):
            await node.spawn(object, "core.object")  # type: ignore[arg-type]


def test_sync_handler_on_async_actor_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="async def"):

        class Wrong(AgentActor):
            @on(Verify)
            def verify(self, msg: Verify) -> None: ...


async def test_handler_table_resolves_subclasses_and_overrides() -> None:
    @message(name="test_actor.SpecialVerify")
    class SpecialVerify(Verify):
        pass

    class Stricter(Gemini):
        @on(Verify)
        async def verify(self, msg: Verify) -> Verdict:
            return Verdict(False, "strict")

    async with Node() as node:
        ref = await node.spawn(Stricter, "core.strict")
        assert await ref.ask(SpecialVerify("x"), timeout=5) == Verdict(False, "strict")
        with pytest.raises(RemoteError):
            await ref.ask(Crash("inherited handler"), timeout=5)


async def test_subscribe_decorator_and_current_subject() -> None:
    class Branches(AgentActor):
        def __init__(self) -> None:
            self.heard: list[tuple[str, str]] = []

        @subscribe("tot.*.exploration")
        async def explored(self, msg: Verify) -> None:
            self.heard.append((self.current_subject, msg.claim))

    async with Node() as node:
        await node.spawn(Branches, "tot.listener")
        await node.publish("tot.b1.exploration", Verify("one"))
        await node.publish("tot.b2.exploration", Verify("two"))
        await node.publish("tot.b2.other", Verify("no"))
        await node.wait_idle(timeout=5)
        assert node._local["tot.listener"].actor.heard == [
            ("tot.b1.exploration", "one"),
            ("tot.b2.exploration", "two"),
        ]


async def test_undecodable_frame_becomes_dead_letter_and_node_goes_on() -> None:
    async with Node() as node:
        ref = await node.spawn(Gemini, "core.gemini")
        await node.transport.publish("core.gemini", [b"\xc1 definitely not msgpack"])
        letter, _ = node.recent_dead_letters[-1]
        assert letter.reason.startswith("decode error")
        assert letter.subject == "core.gemini"
        assert node.stats.decode_errors == 1
        assert await ref.ask(Verify("still serving"), timeout=5) is not None


class Blocking(ThreadedAgentActor):
    def __init__(self) -> None:
        self.threads: set[str] = set()

    def on_start(self) -> None:
        self.threads.add(threading.current_thread().name)

    @on(Verify)
    def verify(self, msg: Verify) -> Verdict:
        time.sleep(0.01)  # a blocking SDK call
        self.threads.add(threading.current_thread().name)
        return Verdict(True, f"threaded {msg.claim}")

    @on(Crash)
    def crash(self, msg: Crash) -> Verdict:
        return self.ask("core.gemini", Verify(msg.why), timeout=5)

    @subscribe("claims.*")
    def overheard(self, msg: Verify) -> None:
        time.sleep(0.01)  # blocking here must not block the loop either
        self.threads.add(threading.current_thread().name)
        self.heard = msg.claim


async def test_threaded_actor_runs_subscribe_handlers_in_its_thread(no_leaks) -> None:
    async with Node() as node:
        ref = await node.spawn(Blocking, "core.blocking")
        actor = node._local["core.blocking"].actor
        assert isinstance(actor, Blocking)
        await node.publish("claims.new", Verify("overheard"))
        await ref.ask(Verify("sync"), timeout=5)  # after the publish in the mailbox
        assert getattr(actor, "heard", None) == "overheard"
        assert threading.current_thread().name not in actor.threads
        assert len(actor.threads) == 1
    await no_leaks()


async def test_threaded_actor_runs_blocking_handlers_off_the_loop(no_leaks) -> None:
    async with Node() as node:
        await node.spawn(Gemini, "core.gemini")
        ref = await node.spawn(Blocking, "core.blocking")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        replies = await asyncio.gather(*(ref.ask(Verify(str(n)), timeout=5) for n in range(5)))
        ticker.cancel()
        assert [r.reason for r in replies] == [f"threaded {n}" for n in range(5)]
        assert ticks >= 10, "the event loop kept running while handlers blocked"
        actor = node._local["core.blocking"].actor
        assert threading.main_thread().name not in actor.threads
        assert len(actor.threads) == 1
        # a blocking handler can ask another actor through the loop
        assert await ref.ask(Crash("watertight"), timeout=5) == Verdict(True, "checked: watertight")
    await no_leaks()


def test_threaded_actor_refuses_async_handlers() -> None:
    with pytest.raises(TypeError, match="plain 'def'"):

        class Wrong(ThreadedAgentActor):
            @on(Verify)
            async def verify(self, msg: Verify) -> None: ...


async def test_closing_a_node_leaves_nothing_behind(no_leaks) -> None:
    node = Node("inproc://leak-check")
    await node.start()
    for n in range(20):
        await node.spawn(Gemini, f"core.g{n}")
    await node.spawn(Blocking, "core.blocking")
    pending = asyncio.ensure_future(node.ask("core.g1", Verify("x"), timeout=5))
    await pending
    await node.close()
    await node.close()
    await no_leaks()


async def test_shutdown_timeout_cancels_a_stuck_handler_and_fails_its_asker() -> None:
    class Stuck(AgentActor):
        @on(Verify)
        async def verify(self, msg: Verify) -> None:
            await asyncio.sleep(30)

    node = Node(shutdown_timeout=0.1)
    await node.start()
    ref = await node.spawn(Stuck, "core.stuck")
    pending = asyncio.ensure_future(ref.ask(Verify("x"), timeout=30))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await node.close()
    assert time.monotonic() - started < 1.0
    with pytest.raises(TransportClosed, match="stopped before replying"):
        await pending


@message(name="test_actor.Poll")
class Poll:
    question: str


class Pollster(ThreadedAgentActor):
    """Surveys a council and feeds a pipeline from its thread."""

    @on(Poll)
    def poll(self, msg: Poll) -> list[str]:
        result = self.survey("council", Verify(msg.question), timeout=5, quorum=3)
        self.feed("tally", Verdict(True, msg.question), timeout=5)
        return sorted(vote.value.claim for vote in result)


class Councillor(AgentActor):
    @respond("council")
    async def vote(self, msg: Verify) -> Verify:
        return Verify(f"{self.subject}: {msg.claim}")


async def test_threaded_actor_surveys_and_feeds_from_its_thread(no_leaks) -> None:
    tallied: list[Verdict] = []

    async def tally(verdict: Verdict) -> None:
        tallied.append(verdict)

    async with Node() as node:
        for n in range(3):
            await node.spawn(Councillor, f"council.c{n}")
        await node.start_supervisor(Pipeline("tally", [Stage("count", tally)]))
        ref = await node.spawn(Pollster, "core.pollster")
        votes = await ref.ask(Poll("cheap?"), timeout=10)
        assert votes == [f"council.c{n}: cheap?" for n in range(3)]
        for _ in range(100):
            if tallied:
                break
            await asyncio.sleep(0.01)
        assert tallied == [Verdict(True, "cheap?")]
    await no_leaks()
