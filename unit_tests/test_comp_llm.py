from __future__ import annotations

import contextlib
import re
import time
from typing import Any
from uuid import UUID

import pytest
from fakes import KeywordEmbeddings, fake_llm, make_expert, plan_json
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from langchain_complm import CompLLMOutput, FailurePolicy, create_comp_llm
from langchain_complm.aggregate import ResponseAggregator
from langchain_complm.decompose import StructuralSubQueryGenerator
from langchain_complm.pipeline import DEFAULT_MAX_QUERY_CHARS, coerce_query

PLAN = plan_json(
    ("q1", "What is the sum of 2 and 3?", []),
    ("q2", "Which drug treats this disease?", []),
    ("q3", "Multiply {q1} by the number of war years", ["q1"]),
)


def build(delay: float = 0.0, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    math, math_fake = make_expert("math", delay=delay)
    medicine, medicine_fake = make_expert("medicine", delay=delay)
    history, history_fake = make_expert("history", delay=delay)
    comp = create_comp_llm(
        [math, medicine, history],
        generator=kwargs.pop("generator", fake_llm(PLAN)),
        router=kwargs.pop("router", KeywordEmbeddings()),
        aggregator=kwargs.pop(
            "aggregator",
            # Reads the fake model's answer as it is (the coverage check has its own tests).
            ResponseAggregator(llm=fake_llm("Final: 5, aspirin, 10."), check_coverage=False),
        ),
        **kwargs,
    )
    return comp, {"math": math_fake, "medicine": medicine_fake, "history": history_fake}


def ask(comp: Any, value: Any, config: Any = None) -> CompLLMOutput:
    """The run's output state, read as a CompLLMOutput."""
    return CompLLMOutput.model_validate(comp.invoke(value, config))


def test_invoke_string_returns_answer_and_complete_trace() -> None:
    comp, fakes = build()
    state = comp.invoke("What is 2+3, which drug treats it, and times the war years?")
    assert set(state) == {"query", "answer", "plan", "results", "timings", "messages"}
    out = CompLLMOutput.model_validate(state)
    assert out.answer == "Final: 5, aspirin, 10."
    assert [sq.expert for sq in out.plan.sub_queries] == ["math", "medicine", "math"]
    # The drawing reads the routed sub-queries (the generator's plan was validated, and so
    # looked up by id, before the router annotated a copy).
    assert "[math" in out.plan.to_text() and "medicine" in out.plan.to_mermaid()
    dumped = out.model_dump(mode="json")
    assert dumped["errors"] == {} and dumped["fallbacks"] == [] and len(dumped["routing"]) == 3
    assert [d.sub_query_id for d in out.routing] == ["q1", "q2", "q3"]
    assert all(set(d.scores) == {"math", "medicine", "history"} for d in out.routing)
    assert list(out.results) == ["q1", "q2", "q3"]
    assert out.results["q1"].answer in out.results["q3"].prompt
    assert all(r.started_at and r.ended_at for r in out.results.values())
    assert set(out.timings) == {"decompose", "route", "execute", "aggregate", "total"}
    assert out.errors == {} and out.fallbacks == []
    assert len(fakes["math"].calls) == 2 and len(fakes["medicine"].calls) == 1


@pytest.mark.parametrize(
    "value",
    [
        "What is 2+3?",
        {"query": "What is 2+3?"},
        {"messages": [HumanMessage("What is 2+3?")]},
        [SystemMessage("be brief"), HumanMessage("What is 2+3?"), AIMessage("ok")],
        HumanMessage("What is 2+3?"),
        ChatPromptTemplate.from_messages([("human", "What is {x}?")]).invoke({"x": "2+3"}),
    ],
)
def test_accepted_input_forms(value: Any) -> None:
    assert coerce_query(value) == "What is 2+3?"
    comp, _ = build()
    assert ask(comp, value).query == "What is 2+3?"


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("", ValueError, "query is empty"),
        ("   \n", ValueError, "query is empty"),
        (42, TypeError, "got int"),
        (b"bytes", TypeError, "got bytes"),
        ({"question": "x"}, ValueError, "'query', 'messages' or 'plan'"),
        ([SystemMessage("only system")], ValueError, "no human message"),
        ("x" * 101, ValueError, "101 characters long, over the limit of 100"),
        (None, TypeError, "got NoneType"),
        ("What is \ud800?", ValueError, r"lone surrogate \(U\+D800\) at position 8"),
        ({"query": "a\udfffb"}, ValueError, "lone surrogate"),
        ({"query": None}, TypeError, "got NoneType"),
        ([HumanMessage("x"), 3], TypeError, "got list"),
    ],
)
def test_bad_queries_raise_clear_errors(value: Any, error: type, match: str) -> None:
    comp, fakes = build(max_query_chars=100)
    with pytest.raises(error, match=match):
        comp.invoke(value)
    assert fakes["math"].calls == []


async def test_none_is_rejected_by_every_entry_point_unless_it_resumes_a_thread() -> None:
    comp, _ = build()
    for call in (lambda: list(comp.stream(None)), lambda: comp.batch([None])):
        with pytest.raises(TypeError, match="got NoneType"):
            call()
    with pytest.raises(TypeError, match="got NoneType"):
        await comp.ainvoke(None)
    with pytest.raises(TypeError, match="got NoneType"):
        [e async for e in comp.astream_events(None, version="v2")]
    # On a checkpointed thread None still means what LangGraph makes it mean.
    from langgraph.checkpoint.memory import InMemorySaver

    saved, _ = build(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t"}}
    with pytest.raises(TypeError, match="got NoneType"):
        saved.invoke(None, thread)
    first = saved.invoke("What is 2+3?", thread)
    assert saved.invoke(None, thread)["answer"] == first["answer"]


# Adversarial input of the maximum length: each is refused or accepted in linear time.
BOUNDARY_INPUTS = {
    "over the limit": "x" * (10 * DEFAULT_MAX_QUERY_CHARS),
    "surrogate at the end": "x" * (DEFAULT_MAX_QUERY_CHARS - 1) + "\ud800",
    "whitespace": " \n\t" * DEFAULT_MAX_QUERY_CHARS,
    "many messages": [SystemMessage("s")] * 100_000 + [HumanMessage("What is 2+3?")],
}


@pytest.mark.parametrize("kind", sorted(BOUNDARY_INPUTS))
def test_adversarial_inputs_at_the_boundary_are_handled_in_linear_time(kind: str) -> None:
    started = time.perf_counter()
    with contextlib.suppress(ValueError):
        coerce_query(BOUNDARY_INPUTS[kind])
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "question", ["What does f'{name}' print?", "Is {q1} a set? And what is {x} + 1 = 3?"]
)
def test_questions_with_braces_are_answered(question: str) -> None:
    # Fallback (the question whole), a decomposition that keeps the braces, and the splitter.
    braced = plan_json(("q1", question, []), ("q2", "What is 2+2?", []))
    for generator in (fake_llm("no json", "none"), fake_llm(braced), StructuralSubQueryGenerator()):
        comp, _ = build(generator=generator)
        out = ask(comp, question)
        assert out.errors == {}
        prompts = " ".join(r.prompt or "" for r in out.results.values())
        assert all(braces in prompts for braces in re.findall(r"\{\w+\}", question))


def test_bad_configuration_raises_at_construction() -> None:
    math, _ = make_expert("math")
    llm, emb = fake_llm(PLAN), KeywordEmbeddings()
    with pytest.raises(ValueError, match="at least one expert"):
        create_comp_llm([], generator=llm, router=emb, aggregator=llm)
    with pytest.raises(ValueError, match="duplicate expert names: math"):
        create_comp_llm([math, math], generator=llm, router=emb, aggregator=llm)
    with pytest.raises(ValueError, match="fallback_expert: unknown expert 'law'"):
        create_comp_llm([math], generator=llm, router=emb, aggregator=llm, fallback_expert="law")
    with pytest.raises(ValueError, match="fallback_expert: unknown expert 'law'"):
        create_comp_llm(
            [math],
            generator=llm,
            router=emb,
            aggregator=llm,
            failure_policy=FailurePolicy(fallback_expert="law"),
        )
    with pytest.raises(TypeError, match="Expert instances"):
        create_comp_llm(["math"], generator=llm, router=emb, aggregator=llm)  # type: ignore[list-item]


def test_routing_threshold_sends_weak_matches_to_fallback() -> None:
    comp, fakes = build(routing_threshold=0.99, fallback_expert="history")
    out = ask(comp, "anything")
    assert {sq.expert for sq in out.plan.sub_queries} == {"history"}
    assert len(out.fallbacks) == 3 and len(fakes["history"].calls) == 3


def test_single_sub_query_passes_answer_through() -> None:
    aggregator = fake_llm("should not be used")
    comp, _ = build(
        generator=fake_llm(plan_json(("q1", "What is 2 plus 3?", []))), aggregator=aggregator
    )
    out = ask(comp, "What is 2 plus 3?")
    assert out.answer == "math answer to <What is 2 plus 3?>"
    assert aggregator.i == 0  # the aggregator model was never called


def test_generator_fallback_is_recorded() -> None:
    comp, _ = build(generator=fake_llm("no json here", "still none"))
    out = ask(comp, "What is the sum of 2 and 3?")
    assert out.plan.is_fallback and len(out.plan.sub_queries) == 1
    assert "decomposition fell back" in out.fallbacks[0]


def test_failed_expert_is_reported_and_other_answers_kept() -> None:
    math, _ = make_expert("math", fail_times=10)
    medicine, _ = make_expert("medicine")
    history, _ = make_expert("history")
    comp = create_comp_llm(
        [math, medicine, history],
        generator=fake_llm(PLAN),
        router=KeywordEmbeddings(),
        aggregator=ResponseAggregator(llm=fake_llm("partial answer"), check_coverage=False),
    )
    out = ask(comp, "q")
    assert out.results["q1"].status == "failed" and out.results["q2"].status == "ok"
    assert out.results["q3"].status == "skipped"
    assert set(out.errors) == {"q1", "q3"} and out.answer == "partial answer"


def test_stream_yields_progress_then_tokens_then_done() -> None:
    comp, _ = build()
    events = list(comp.stream("q"))
    types = [e["type"] for e in events]
    assert types[0] == "plan" and types[-1] == "done"
    assert types.count("routed") == 3
    assert types.count("subquery_start") == 3 and types.count("subquery_answer") == 3
    assert types.index("routed") < types.index("subquery_start")
    assert max(i for i, t in enumerate(types) if t == "subquery_answer") < types.index("token")
    tokens = "".join(e["content"] for e in events if e["type"] == "token")
    assert tokens == "Final: 5, aspirin, 10."
    assert events[-1]["data"].answer == tokens


async def test_async_entry_points() -> None:
    comp, _ = build(delay=0.01)
    out = await comp.ainvoke({"query": "q"})
    assert out["answer"] == "Final: 5, aspirin, 10."
    types = [e["type"] async for e in comp.astream("q")]
    assert types[0] == "plan" and types[-1] == "done"


def test_batch_and_abatch_run_independent_queries() -> None:
    comp, _ = build()
    outs = comp.batch(["first?", {"query": "second?"}])
    assert [o["query"] for o in outs] == ["first?", "second?"]


async def test_abatch() -> None:
    comp, _ = build()
    outs = await comp.abatch(["first?", "second?"])
    assert [o["query"] for o in outs] == ["first?", "second?"]


async def test_astream_events_reports_stages_sub_queries_and_tokens() -> None:
    comp, _ = build()
    starts, custom, tokens = [], [], []
    async for event in comp.astream_events("q", version="v2"):
        if event["event"] == "on_chain_start":
            starts.append((event["name"], event.get("tags", [])))
        elif event["event"] == "on_custom_event":
            custom.append(event["data"]["type"])
        elif event["event"] == "on_chat_model_stream" and "complm:aggregate" in event["tags"]:
            tokens.append(event["data"]["chunk"].content)
    names = [n for n, _ in starts]
    for stage in ("CompLLM", "SubQueryGenerator", "EmbeddingRouter", "QueryExecutor"):
        assert stage in names
    assert "ResponseAggregator" in names
    assert {"q1", "q2", "q3", "expert:math", "expert:medicine"} <= set(names)
    assert custom[0] == "plan" and custom[-1] == "done"
    assert "".join(tokens) == "Final: 5, aspirin, 10."


class RunRecorder(BaseCallbackHandler):
    """Records every chain and chat-model run with its parent, tags and metadata."""

    def __init__(self) -> None:
        self.runs: dict[UUID, dict[str, Any]] = {}

    def _record(self, run_id: UUID, default: str, **kw: Any) -> None:
        self.runs[run_id] = {
            "name": kw.get("name") or default,
            "parent": kw.get("parent_run_id"),
            "tags": kw.get("tags") or [],
            "metadata": kw.get("metadata") or {},
        }

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self._record(run_id, "", **kw)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kw: Any):
        self._record(run_id, "chat_model", **kw)

    def ancestors(self, run_id: UUID) -> list[str]:
        names = []
        parent = self.runs[run_id]["parent"]
        while parent in self.runs:
            names.append(self.runs[parent]["name"])
            parent = self.runs[parent]["parent"]
        return names


def test_tracing_named_child_runs_tagged_with_sub_query_and_expert() -> None:
    comp, _ = build()
    recorder = RunRecorder()
    comp.invoke("q", {"callbacks": [recorder]})
    by_name: dict[str, list[UUID]] = {}
    for run_id, run in recorder.runs.items():
        by_name.setdefault(run["name"], []).append(run_id)
    for stage in ("SubQueryGenerator", "EmbeddingRouter", "QueryExecutor", "ResponseAggregator"):
        assert "CompLLM" in recorder.ancestors(by_name[stage][0]), stage
    expert_runs = [r for r in recorder.runs.values() if r["name"].startswith("expert:")]
    assert len(expert_runs) == 3
    tagged = {
        (r["metadata"]["complm_sub_query_id"], r["metadata"]["complm_expert"]) for r in expert_runs
    }
    assert tagged == {("q1", "math"), ("q2", "medicine"), ("q3", "math")}
    assert all(
        f"complm:sub_query:{r['metadata']['complm_sub_query_id']}" in r["tags"]
        and f"complm:expert:{r['metadata']['complm_expert']}" in r["tags"]
        for r in expert_runs
    )
    q3_expert = next(
        k
        for k, r in recorder.runs.items()
        if r["metadata"].get("complm_sub_query_id") == "q3" and r["name"] == "expert:math"
    )
    assert {"q3", "QueryExecutor", "CompLLM"} <= set(recorder.ancestors(q3_expert))


def test_parallel_sub_queries_overlap_through_the_whole_pipeline() -> None:
    # Read from the recorded intervals, not from wall time: a loaded CI machine stretches
    # the run but not the order of what ran.
    comp, fakes = build(delay=0.3)
    out = ask(comp, "q")
    q1, q2, q3 = (out.results[k] for k in ("q1", "q2", "q3"))
    assert q1.started_at < q2.ended_at and q2.started_at < q1.ended_at
    assert q3.started_at >= max(q1.ended_at, q2.ended_at)
    assert len(fakes["math"].calls) == 2


def test_max_concurrency_and_sequential_mode_give_same_answers() -> None:
    parallel, _ = build()
    sequential, _ = build(mode="sequential", max_concurrency=1)
    assert {k: r.answer for k, r in ask(parallel, "q").results.items()} == {
        k: r.answer for k, r in ask(sequential, "q").results.items()
    }
