"""Fault tests: hung experts, decomposers and aggregators under timeouts.

A timeout must free what the call holds: an async call is cancelled; a sync call is abandoned
in a daemon thread (the process can exit), its limiter permit goes back at once, and the
package's own blocking points (limiter waits, a local model's queue) end the call there.
Each fault runs 50 times and the thread count must come back to where it was.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import KeywordEmbeddings, fake_llm, make_expert, plan_json
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda

from langchain_complm import Expert, FailurePolicy, Plan, RoutingDecision, SubQuery
from langchain_complm.aggregate import ResponseAggregator
from langchain_complm.concurrency import (
    DEFAULT_TIMEOUT,
    call_with_timeout,
    current_cancellation,
    limit_concurrency,
)
from langchain_complm.decompose import SubQueryGenerator
from langchain_complm.execute import QueryExecutor
from langchain_complm.pipeline import CompLLMOutput, create_comp_llm

RUNS = 50
TIMEOUT = 0.05
SECONDS_PER_RUN = 2.0
"""A run with a hung expert ends at its timeout; this bound leaves room for a loaded CI."""

PLAN = Plan(
    query="q",
    sub_queries=(
        SubQuery(
            id="q1",
            question="What is 2+2?",
            route=RoutingDecision(
                sub_query_id="q1", question="What is 2+2?", expert="x", score=1.0, scores={}
            ),
        ),
    ),
)


class Hang:
    """A call that blocks until the test releases it (sync: a thread event, async: forever,
    until cancelled), counting how its calls ended."""

    def __init__(self, listens: bool = False) -> None:
        self.listens = listens  # waits on the call's Cancellation instead of the release
        self.release = threading.Event()
        self.started = 0
        self.cancelled = 0
        self.finished = 0
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def sync(self, _: Any) -> str:
        self._count("started")
        cancellation = current_cancellation()
        if self.listens and cancellation is not None:
            cancellation.wait()
            self._count("cancelled")
            raise TimeoutError("given up")
        self.release.wait()
        self._count("finished")
        return "late answer"

    async def asynchronous(self, _: Any) -> str:
        self._count("started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._count("cancelled")
            raise
        return "never"

    def runnable(self) -> RunnableLambda:
        return RunnableLambda(self.sync, afunc=self.asynchronous, name="hang")


def expert(llm: Any, name: str = "x") -> Expert:
    return Expert(name=name, description="anything", llm=llm)


def timed_call_threads() -> list[threading.Thread]:
    """The threads that timed sync calls run in (named by call_with_timeout)."""
    return [t for t in threading.enumerate() if t.name.startswith("complm ")]


def settles(expected: int, within: float = 10.0) -> bool:
    """Whether, within ``within`` seconds, every timed call's thread has ended and the thread
    count is down to ``expected`` (other tests' threads may end meanwhile, so the count
    alone could be reached early)."""
    deadline = time.monotonic() + within
    while threading.active_count() > expected or timed_call_threads():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def hang() -> Iterator[Hang]:
    fake = Hang()
    yield fake
    fake.release.set()


def run_many(call: Callable[[], Any]) -> list[Any]:
    results = []
    for _ in range(RUNS):
        started = time.perf_counter()
        results.append(call())
        assert time.perf_counter() - started < SECONDS_PER_RUN
    return results


def assert_timed_out(result: Any) -> None:
    r = result.results["q1"]
    assert r.status == "failed"
    assert r.error == f"x: timed out after {TIMEOUT:g} s"


# --- defaults -----------------------------------------------------------------------------------


def test_every_model_call_has_a_default_timeout() -> None:
    assert FailurePolicy().timeout == DEFAULT_TIMEOUT
    assert SubQueryGenerator(llm=fake_llm("x")).timeout == DEFAULT_TIMEOUT
    assert ResponseAggregator(llm=fake_llm("x")).timeout == DEFAULT_TIMEOUT
    assert FailurePolicy(timeout=None).timeout is None


# --- experts ------------------------------------------------------------------------------------


async def test_a_hung_async_expert_is_cancelled_and_leaves_nothing_running(hang: Hang) -> None:
    executor = QueryExecutor(
        experts=[expert(hang.runnable())], failure_policy=FailurePolicy(timeout=TIMEOUT)
    )
    await executor.ainvoke(PLAN)
    baseline = threading.active_count()
    for _ in range(RUNS):
        started = time.perf_counter()
        assert_timed_out(await executor.ainvoke(PLAN))
        assert time.perf_counter() - started < SECONDS_PER_RUN
    assert hang.cancelled == hang.started == RUNS + 1
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert settles(baseline)


def test_a_sync_expert_that_listens_for_its_cancellation_ends_at_the_timeout() -> None:
    listening = Hang(listens=True)
    executor = QueryExecutor(
        experts=[expert(listening.runnable())], failure_policy=FailurePolicy(timeout=TIMEOUT)
    )
    baseline = threading.active_count()
    for result in run_many(lambda: executor.invoke(PLAN)):
        assert_timed_out(result)
    assert settles(baseline)
    assert listening.cancelled == RUNS


def test_a_stuck_sync_expert_is_abandoned_in_daemon_threads_that_end_with_it(
    hang: Hang,
) -> None:
    executor = QueryExecutor(
        experts=[expert(hang.runnable())], failure_policy=FailurePolicy(timeout=TIMEOUT)
    )
    baseline = threading.active_count()
    for result in run_many(lambda: executor.invoke(PLAN)):
        assert_timed_out(result)
    stuck = timed_call_threads()
    assert len(stuck) == RUNS and all(t.daemon for t in stuck)
    hang.release.set()  # the model finally answers: the answers are dropped
    assert settles(baseline)
    assert hang.finished == RUNS


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_limited_expert_gets_its_permit_back_when_a_call_times_out(
    hang: Hang, use_async: bool
) -> None:
    # The first call hangs for good; the expert is healthy again afterwards.
    calls = 0

    def answer(messages: Any) -> str:
        nonlocal calls
        calls += 1
        return hang.sync(messages) if calls == 1 else "4"

    async def aanswer(messages: Any) -> str:
        nonlocal calls
        calls += 1
        return await hang.asynchronous(messages) if calls == 1 else "4"

    limited = limit_concurrency(RunnableLambda(answer, afunc=aanswer), 1)
    executor = QueryExecutor(experts=[expert(limited)], failure_policy=FailurePolicy(timeout=0.2))
    run = executor.ainvoke if use_async else executor.invoke
    results = [await run(PLAN) if use_async else run(PLAN) for _ in range(3)]
    statuses = [r.results["q1"].status for r in results]
    assert statuses == ["failed", "ok", "ok"]
    assert limited.limiter.active == 0


def test_callers_waiting_for_a_stuck_permit_leave_the_queue_at_their_timeout(
    hang: Hang,
) -> None:
    limited = limit_concurrency(hang.runnable(), 1)
    executor = QueryExecutor(
        experts=[expert(limited)], failure_policy=FailurePolicy(timeout=TIMEOUT)
    )
    baseline = threading.active_count()
    blocker = threading.Thread(target=limited.invoke, args=("hold the permit",), daemon=True)
    blocker.start()  # a call without a timeout holds the only permit
    while hang.started == 0:
        time.sleep(0.01)
    for result in run_many(lambda: executor.invoke(PLAN)):
        assert_timed_out(result)
    # Every timed call gave up its place in the queue: only the blocker's thread is left.
    assert settles(baseline + 1)
    assert hang.started == 1
    assert limited.limiter._waiters == deque()
    hang.release.set()
    blocker.join(10)
    assert settles(baseline)


def test_a_served_model_stuck_on_a_request_frees_its_slot_at_the_timeout() -> None:
    pytest.importorskip("langchain_openai")
    from scripted_openai import Behaviour, ScriptedOpenAIServer

    from langchain_complm.models import ChatRemote

    with ScriptedOpenAIServer(script={"echo": Behaviour(delay=3.0)}) as server:
        model = ChatRemote.from_model("echo", base_url=server.base_url, max_concurrency=1)
        executor = QueryExecutor(experts=[expert(model)], failure_policy=FailurePolicy(timeout=0.3))
        assert executor.invoke(PLAN).results["q1"].status == "failed"  # the server hangs
        server.script["echo"] = Behaviour()  # and is healthy again: the slot must be free
        answer = executor.invoke(PLAN).results["q1"]
        assert answer.status == "ok" and answer.answer == "echo says: What is 2+2?"


def test_a_hung_local_model_releases_its_callers_and_drops_their_requests() -> None:
    pytest.importorskip("transformers")
    from langchain_complm.models.huggingface import ChatLocalHuggingFace
    from langchain_complm.models.testing import smollm2_tokenizer, tiny_llama

    try:
        tokenizer = smollm2_tokenizer()
    except ImportError as exc:
        pytest.skip(str(exc))
    model = tiny_llama(tokenizer)
    release = threading.Event()
    generate = model.generate

    def hung_generate(*args: Any, **kwargs: Any) -> Any:
        release.wait()
        return generate(*args, **kwargs)

    model.generate = hung_generate
    llm = ChatLocalHuggingFace.from_model(model, tokenizer, max_new_tokens=2)
    executor = QueryExecutor(experts=[expert(llm)], failure_policy=FailurePolicy(timeout=TIMEOUT))
    baseline = threading.active_count()
    try:
        for result in run_many(lambda: executor.invoke(PLAN)):
            assert_timed_out(result)
        # The callers are gone; the engine's worker is the one still in the hung generate.
        assert settles(baseline + 1)
    finally:
        release.set()
        llm.engine.close(timeout=60)
    assert settles(baseline)
    # The requests queued behind the hung batch were dropped, not generated.
    assert llm.engine.stats.requests <= 2


def test_a_process_with_a_stuck_sync_expert_exits_when_its_run_is_done(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import threading
        from langchain_core.runnables import RunnableLambda
        from langchain_complm import Expert, FailurePolicy, Plan, RoutingDecision, SubQuery
        from langchain_complm.execute import QueryExecutor

        stuck = RunnableLambda(lambda _: threading.Event().wait())  # never returns
        route = RoutingDecision(sub_query_id="q1", question="Q?", expert="x", score=1, scores={})
        plan = Plan(query="Q?", sub_queries=(SubQuery(id="q1", question="Q?", route=route),))
        executor = QueryExecutor(
            experts=[Expert(name="x", description="x", llm=stuck)],
            failure_policy=FailurePolicy(timeout=0.2),
        )
        print(executor.invoke(plan).results["q1"].error, flush=True)
        """
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "x: timed out after 0.2 s"
    # Interpreter start and imports take seconds; the stuck thread must not add to them.
    assert time.perf_counter() - started < 60


def test_call_with_timeout_names_the_call_and_keeps_the_callers_context() -> None:
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    assert call_with_timeout(var.get, 1.0, "reading") == "caller"
    assert call_with_timeout(var.get, None, "reading") == "caller"
    with pytest.raises(TimeoutError, match=r"^sleeping did not finish within 0.05 s$"):
        call_with_timeout(lambda: time.sleep(1), 0.05, "sleeping")


# --- decomposer and aggregator ------------------------------------------------------------------


class HungChatModel(BaseChatModel):
    """A chat model that never answers (until the test releases it)."""

    release: Any

    @property
    def _llm_type(self) -> str:
        return "hung"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.release.wait()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="late"))])

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
def hung_model() -> Iterator[HungChatModel]:
    model = HungChatModel(release=threading.Event())
    yield model
    model.release.set()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_hung_decomposer_falls_back_to_the_whole_query(
    hung_model: HungChatModel, use_async: bool
) -> None:
    generator = SubQueryGenerator(llm=hung_model, timeout=TIMEOUT)
    started = time.perf_counter()
    plan = await generator.ainvoke("Q?") if use_async else generator.invoke("Q?")
    assert time.perf_counter() - started < SECONDS_PER_RUN
    assert plan.is_fallback and [sq.question for sq in plan.sub_queries] == ["Q?"]
    assert plan.fallback_reason == (
        f"TimeoutError: the decomposer model did not finish within {TIMEOUT:g} s"
    )


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_hung_aggregator_answers_with_the_experts_answers(
    hung_model: HungChatModel, use_async: bool
) -> None:
    math, _ = make_expert("math")
    medicine, _ = make_expert("medicine")
    plan = plan_json(("q1", "What is the sum of 2 and 3?", []), ("q2", "Which drug?", []))
    aggregator = ResponseAggregator(llm=hung_model, timeout=TIMEOUT)
    comp = create_comp_llm(
        [math, medicine],
        generator=fake_llm(plan),
        router=KeywordEmbeddings(),
        aggregator=aggregator,
    )
    started = time.perf_counter()
    state = await comp.ainvoke("Q?") if use_async else comp.invoke("Q?")
    out = CompLLMOutput.model_validate(state)
    assert time.perf_counter() - started < 2 * SECONDS_PER_RUN
    assert out.answer == aggregator.format_answers(list(out.results.values()))
    assert "math answer to <What is the sum of 2 and 3?>" in out.answer
