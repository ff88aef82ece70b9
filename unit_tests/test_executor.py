from __future__ import annotations

import time
from typing import Any

import pytest
from fakes import make_expert, routed
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig, RunnableLambda

from langchain_complm import Expert, FailurePolicy, Plan, SubQuery, events
from langchain_complm.batching import current_cohort
from langchain_complm.errors import SubQueryExecutionError
from langchain_complm.execute import QueryExecutor


def overlaps(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


FAN_OUT = routed(
    ("q1", "one", "math", ()), ("q2", "two", "medicine", ()), ("q3", "three", "math", ())
)


@pytest.mark.parametrize("use_async", [False, True])
async def test_independent_sub_queries_overlap_in_time(use_async: bool) -> None:
    math, math_fake = make_expert("math", delay=0.3)
    medicine, medicine_fake = make_expert("medicine", delay=0.3)
    executor = QueryExecutor(experts=[math, medicine])
    started = time.perf_counter()
    result = await executor.ainvoke(FAN_OUT) if use_async else executor.invoke(FAN_OUT)
    elapsed = time.perf_counter() - started
    calls = math_fake.calls + medicine_fake.calls
    assert len(calls) == 3
    assert all(overlaps(a, b) for a in calls for b in calls if a is not b)
    assert elapsed < 0.8  # three 0.3 s calls one after another would take 0.9 s
    assert {r.status for r in result.results.values()} == {"ok"}


def test_dependents_see_parents_answers_and_wait_for_them() -> None:
    math, math_fake = make_expert("math", delay=0.05)
    medicine, _ = make_expert("medicine", delay=0.05)
    plan = routed(
        ("q1", "What is the sum of 2 and 3?", "math", ()),
        ("q2", "Which drug treats it?", "medicine", ()),
        ("q3", "Multiply {q1} by two", "math", ("q1", "q2")),
    )
    result = QueryExecutor(experts=[math, medicine]).invoke(plan)
    q1, q2, q3 = (result.results[k] for k in ("q1", "q2", "q3"))
    # The placeholder is filled and both parents' answers are given as context.
    assert f"Multiply {q1.answer} by two" in q3.prompt
    assert q1.answer in q3.prompt and q2.answer in q3.prompt
    assert q3.started_at >= max(q1.ended_at, q2.ended_at)
    assert [c["prompt"] for c in math_fake.calls][-1] == q3.prompt
    assert list(result.results) == ["q1", "q2", "q3"]


def test_diamond_fan_in_runs_each_sub_query_once() -> None:
    math, fake = make_expert("math")
    plan = routed(
        ("a", "root", "math", ()),
        ("b", "left {a}", "math", ("a",)),
        ("c", "right", "math", ("a",)),
        ("d", "join {b} {c}", "math", ("b", "c")),
        ("e", "late {d} {a}", "math", ("d", "a")),
    )
    result = QueryExecutor(experts=[math]).invoke(plan)
    assert len(fake.calls) == 5
    assert all(r.status == "ok" for r in result.results.values())


def test_trace_records_expert_prompt_answer_and_times() -> None:
    math, _ = make_expert("math", delay=0.02)
    result = QueryExecutor(experts=[math]).invoke(routed(("q1", "one", "math", ())))
    r = result.results["q1"]
    assert r.expert == "math" and r.prompt == "one" and r.answer == "math answer to <one>"
    assert r.started_at <= r.ended_at and r.duration >= 0.02
    assert r.attempts[0].expert == "math" and r.attempts[0].error is None
    assert result.answers == {"q1": r.answer} and result.failed == {}


def test_max_concurrency_one_serializes() -> None:
    math, fake = make_expert("math", delay=0.1)
    plan = routed(("q1", "one", "math", ()), ("q2", "two", "math", ()))
    QueryExecutor(experts=[math], max_concurrency=1).invoke(plan)
    assert not overlaps(*fake.calls)


def test_sequential_mode_same_answers_no_overlap() -> None:
    math, fake = make_expert("math", delay=0.05)
    medicine, _ = make_expert("medicine", delay=0.05)
    parallel = QueryExecutor(experts=[math, medicine]).invoke(FAN_OUT)
    fake.calls.clear()
    sequential = QueryExecutor(experts=[math, medicine], mode="sequential").invoke(FAN_OUT)
    assert sequential.answers == parallel.answers
    assert not overlaps(*fake.calls)


class _RunTree(BaseCallbackHandler):
    """Records every chain run's name and parent."""

    def __init__(self) -> None:
        self.names: dict[Any, str] = {}
        self.parents: dict[Any, Any] = {}

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self.names[kwargs["run_id"]] = kwargs.get("name") or ""
        self.parents[kwargs["run_id"]] = kwargs.get("parent_run_id")

    def parent_name(self, name: str) -> str:
        run_id = next(r for r, n in self.names.items() if n == name)
        return self.names.get(self.parents[run_id], "")


@pytest.mark.parametrize("mode", ["superstep", "eager", "sequential"])
def test_each_sub_query_is_a_task_named_by_its_id(mode: str) -> None:
    math, fake = make_expert("math")
    plan = routed(("q1", "one", "math", ()), ("q2", "two {q1}", "math", ("q1",)))
    tree = _RunTree()
    result = QueryExecutor(experts=[math], mode=mode).invoke(plan, {"callbacks": [tree]})
    assert tree.parent_name("q1") == tree.parent_name("q2") == "execute"
    assert tree.parent_name("expert:math") in {"q1", "q2"}
    assert result.results["q2"].started_at >= result.results["q1"].ended_at
    assert fake.calls[1]["prompt"].endswith("two math answer to <one>")


def test_retry_then_success() -> None:
    math, fake = make_expert("math", fail_times=1)
    executor = QueryExecutor(experts=[math], failure_policy=FailurePolicy(max_retries=1))
    r = executor.invoke(routed(("q1", "one", "math", ()))).results["q1"]
    assert r.status == "ok" and len(fake.calls) == 2
    assert r.attempts[0].error and "math is down" in r.attempts[0].error


def test_fallback_expert_answers_when_routed_expert_fails() -> None:
    math, _ = make_expert("math", fail_times=5)
    general, _ = make_expert("general")
    executor = QueryExecutor(
        experts=[math, general], failure_policy=FailurePolicy(fallback_expert="general")
    )
    r = executor.invoke(routed(("q1", "one", "math", ()))).results["q1"]
    assert r.status == "ok" and r.expert == "general" and r.used_fallback
    assert [a.expert for a in r.attempts] == ["math", "general"]


def test_continue_policy_skips_dependents_and_keeps_other_answers() -> None:
    math, _ = make_expert("math", fail_times=5)
    medicine, _ = make_expert("medicine")
    plan = routed(
        ("q1", "one", "math", ()),
        ("q2", "two", "medicine", ()),
        ("q3", "three {q1}", "medicine", ("q1",)),
    )
    result = QueryExecutor(experts=[math, medicine]).invoke(plan)
    assert result.results["q1"].status == "failed"
    assert "math is down" in result.results["q1"].error
    assert result.results["q2"].status == "ok"
    assert result.results["q3"].status == "skipped" and "q1" in result.results["q3"].error
    assert set(result.failed) == {"q1", "q3"}


def test_raise_policy_raises_with_computed_answers() -> None:
    math, _ = make_expert("math", delay=0.2, fail_times=5)  # fails after q2 is answered
    medicine, _ = make_expert("medicine", delay=0.05)
    plan = routed(
        ("q1", "one", "math", ()),
        ("q2", "two", "medicine", ()),
        ("q3", "three {q1} {q2}", "medicine", ("q1", "q2")),
        ("q4", "four {q2}", "medicine", ("q2",)),
    )
    executor = QueryExecutor(experts=[math, medicine], failure_policy={"on_failure": "raise"})
    with pytest.raises(SubQueryExecutionError, match="q1") as info:
        executor.invoke(plan)
    results = info.value.result.results
    assert results["q2"].status == "ok" and results["q2"].answer  # computed, not lost
    assert results["q3"].status == "skipped"
    # q4's parents succeeded, but it comes after the failure: not started.
    assert results["q4"].status == "skipped" and "'raise'" in results["q4"].error


@pytest.mark.parametrize("use_async", [False, True])
async def test_timeout_counts_as_failure_and_falls_back(use_async: bool) -> None:
    slow, _ = make_expert("slow", delay=5.0)
    fast, _ = make_expert("fast")
    executor = QueryExecutor(
        experts=[slow, fast], failure_policy=FailurePolicy(timeout=0.1, fallback_expert="fast")
    )
    plan = routed(("q1", "one", "slow", ()))
    started = time.perf_counter()
    result = await executor.ainvoke(plan) if use_async else executor.invoke(plan)
    # Far below the slow expert's 5 s: the run did not wait for it.
    assert time.perf_counter() - started < 2.5
    r = result.results["q1"]
    assert r.attempts[0].error == "timed out after 0.1 s"
    assert r.status == "ok" and r.expert == "fast"


def test_per_run_failure_policy_from_config() -> None:
    math, fake = make_expert("math", fail_times=2)
    executor = QueryExecutor(experts=[math])
    config = {"configurable": {"failure_policy": {"max_retries": 2}}}
    assert executor.invoke(routed(("q1", "one", "math", ())), config).results["q1"].status == "ok"
    assert len(fake.calls) == 3


def test_empty_answer_is_a_failure() -> None:
    mute = Expert(name="mute", llm=RunnableLambda(lambda _: "  "))
    r = QueryExecutor(experts=[mute]).invoke(routed(("q1", "one", "mute", ()))).results["q1"]
    assert r.status == "failed" and "empty answer" in r.error


def test_bad_input_errors() -> None:
    math, _ = make_expert("math")
    executor = QueryExecutor(experts=[math])
    with pytest.raises(TypeError, match="expects a Plan"):
        executor.invoke("not a plan")  # type: ignore[arg-type]
    unrouted = Plan(query="x", sub_queries=(SubQuery(id="q1", question="one"),))
    with pytest.raises(ValueError, match="route the plan first"):
        executor.invoke(unrouted)
    with pytest.raises(ValueError, match="unknown expert 'law'"):
        executor.invoke(routed(("q1", "one", "law", ())))
    with pytest.raises(ValueError, match="fallback_expert: unknown expert 'law'"):
        QueryExecutor(experts=[math], failure_policy=FailurePolicy(fallback_expert="law"))
    with pytest.raises(ValueError, match="duplicate expert name"):
        QueryExecutor(experts=[math, math])
    with pytest.raises(ValueError, match="at least one expert"):
        QueryExecutor(experts=[])


@pytest.mark.parametrize("mode", ["superstep", "sequential", "eager"])
def test_a_chain_longer_than_langgraphs_default_step_limit_runs(mode: str) -> None:
    # LangGraph stops a graph after 25 supersteps unless told otherwise.
    math, fake = make_expert("math")
    chain = routed(
        *((f"q{i}", f"step {i}", "math", (f"q{i - 1}",) if i > 1 else ()) for i in range(30, 0, -1))
    )
    result = QueryExecutor(experts=[math], mode=mode).invoke(chain)
    assert all(r.status == "ok" for r in result.results.values())
    assert [c["prompt"].splitlines()[-1] for c in fake.calls][-1] == "Question: step 30"


SKEWED = routed(
    ("slow", "slow branch", "slow", ()),
    ("fast", "fast branch", "fast", ()),
    ("after", "after {fast}", "fast", ("fast",)),
)


@pytest.mark.parametrize("use_async", [False, True])
async def test_eager_starts_dependent_before_slow_sibling_finishes(use_async: bool) -> None:
    slow, _ = make_expert("slow", delay=0.4)
    fast, _ = make_expert("fast", delay=0.05)
    results = {}
    for mode in ("superstep", "eager"):
        executor = QueryExecutor(experts=[slow, fast], mode=mode)
        results[mode] = await executor.ainvoke(SKEWED) if use_async else executor.invoke(SKEWED)
    superstep, eager = results["superstep"].results, results["eager"].results
    # Superstep: "after" waits for the whole first level, the slow sibling included.
    assert superstep["after"].started_at >= superstep["slow"].ended_at
    # Eager: "after" starts as soon as its own parent is done.
    assert eager["after"].started_at < eager["slow"].ended_at - 0.2
    assert {k: r.answer for k, r in eager.items()} == {k: r.answer for k, r in superstep.items()}


def test_eager_honours_max_concurrency() -> None:
    math, fake = make_expert("math", delay=0.05)
    plan = routed(("q1", "one", "math", ()), ("q2", "two", "math", ()), ("q3", "three", "math", ()))
    result = QueryExecutor(experts=[math], mode="eager", max_concurrency=1).invoke(plan)
    assert len(fake.calls) == 3 and all(r.status == "ok" for r in result.results.values())
    assert not any(overlaps(a, b) for a in fake.calls for b in fake.calls if a is not b)
    fake.calls.clear()
    QueryExecutor(experts=[math], mode="eager", max_concurrency=2).invoke(plan)
    assert sum(overlaps(a, b) for a in fake.calls for b in fake.calls if a is not b) >= 2


def test_eager_failure_policy_and_diamond() -> None:
    math, _ = make_expert("math", fail_times=1)
    plan = routed(
        ("a", "root", "math", ()),
        ("b", "left {a}", "math", ("a",)),
        ("c", "right", "math", ()),
        ("d", "join {b} {c}", "math", ("b", "c")),
    )
    result = QueryExecutor(experts=[math], mode="eager").invoke(plan).results
    failed_root = [k for k, r in result.items() if r.status == "failed"]
    assert len(failed_root) == 1
    assert result["d"].status == "skipped"


def test_reply_metadata_is_kept_in_the_trace() -> None:
    from langchain_core.messages import AIMessage

    reply = AIMessage(content="42", response_metadata={"batch_size": 3, "load_time_s": 0.5})
    local = Expert(name="local", llm=RunnableLambda(lambda _: reply))
    r = QueryExecutor(experts=[local]).invoke(routed(("q1", "one", "local", ()))).results["q1"]
    assert r.answer == "42"
    assert r.response_metadata == {"batch_size": 3, "load_time_s": 0.5}


@pytest.mark.parametrize("mode", ["superstep", "eager"])
def test_wide_fan_out_runs_in_one_round(mode: str) -> None:
    # LangGraph's default thread pool (CPU count + 4 threads) must not cap the fan-out.
    math, fake = make_expert("math", delay=0.2)
    plan = routed(*((f"q{i}", f"question {i}", "math", ()) for i in range(12)))
    QueryExecutor(experts=[math], mode=mode).invoke(plan)
    # One round: every call started before any call ended (an order, not a wall-time bound,
    # so a loaded machine cannot fail it).
    assert len(fake.calls) == 12
    assert max(c["start"] for c in fake.calls) < min(c["end"] for c in fake.calls)


def _cohort_recorder(name: str, seen: dict[str, Any], fail_first: bool = False) -> Expert:
    """An expert that records the batch cohort each call was made in."""
    failed: set[str] = set()

    def call(messages: list[Any], config: RunnableConfig) -> str:
        sq_id = config["metadata"]["complm_sub_query_id"]
        if fail_first and sq_id not in failed:
            failed.add(sq_id)
            raise RuntimeError("first attempt fails")
        seen.setdefault(sq_id, []).append(current_cohort())
        return f"{name}: {sq_id}"

    async def acall(messages: list[Any], config: RunnableConfig) -> str:
        return call(messages, config)

    return Expert(name=name, llm=RunnableLambda(call, afunc=acall))


DIAMOND_MIXED = routed(
    ("a", "root", "math", ()),
    ("b", "left", "math", ("a",)),
    ("c", "right", "math", ("a",)),
    ("m", "other expert", "medicine", ("a",)),
    ("d", "join", "math", ("b", "c", "m")),
)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("mode", ["superstep", "eager"])
async def test_sub_queries_started_together_form_a_batch_cohort(mode: str, use_async: bool) -> None:
    seen: dict[str, Any] = {}
    executor = QueryExecutor(
        experts=[_cohort_recorder("math", seen), _cohort_recorder("medicine", seen)], mode=mode
    )
    await executor.ainvoke(DIAMOND_MIXED) if use_async else executor.invoke(DIAMOND_MIXED)
    cohorts = {q: calls[0] for q, calls in seen.items()}
    # b and c start together on one model: one cohort of 2; m is alone on its model.
    assert cohorts["b"] is not None and cohorts["b"] is cohorts["c"]
    assert cohorts["b"].size == 2
    assert cohorts["a"] is None and cohorts["m"] is None and cohorts["d"] is None


def test_sequential_mode_and_retries_declare_no_cohort() -> None:
    seen: dict[str, Any] = {}
    QueryExecutor(experts=[_cohort_recorder("math", seen)], mode="sequential").invoke(
        routed(("q1", "one", "math", ()), ("q2", "two", "math", ()))
    )
    assert seen == {"q1": [None], "q2": [None]}
    seen.clear()
    # A retry runs alone, after its cohort has been served: it must not wait for peers.
    QueryExecutor(
        experts=[_cohort_recorder("math", seen, fail_first=True)],
        failure_policy=FailurePolicy(max_retries=1),
    ).invoke(routed(("q1", "one", "math", ()), ("q2", "two", "math", ())))
    assert seen == {"q1": [None], "q2": [None]}


def test_eager_cohorts_respect_max_concurrency() -> None:
    seen: dict[str, Any] = {}
    plan = routed(*((f"q{i}", f"question {i}", "math", ()) for i in range(3)))
    QueryExecutor(experts=[_cohort_recorder("math", seen)], mode="eager", max_concurrency=2).invoke(
        plan
    )
    sizes = sorted(c.size if c else 1 for calls in seen.values() for c in calls)
    assert sizes == [1, 2, 2]


class _EventRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((data["type"], data["sub_query_id"]))


@pytest.mark.parametrize("mode", ["superstep", "eager", "sequential"])
def test_progress_events_reach_callback_handlers_only_when_there_are_some(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    math, _ = make_expert("math")
    medicine, _ = make_expert("medicine")
    executor = QueryExecutor(experts=[math, medicine], mode=mode)
    recorder = _EventRecorder()
    executor.invoke(FAN_OUT, {"callbacks": [recorder]})
    assert sorted(recorder.events) == sorted(
        (kind, sq) for sq in ("q1", "q2", "q3") for kind in ("subquery_start", "subquery_answer")
    )

    # Without handlers no callback manager is configured for an event (it costs more than
    # the rest of a sub-query's bookkeeping).
    def unexpected(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("dispatched an event nobody listens to")

    monkeypatch.setattr(events, "dispatch_custom_event", unexpected)
    assert executor.invoke(FAN_OUT).answers.keys() == {"q1", "q2", "q3"}
