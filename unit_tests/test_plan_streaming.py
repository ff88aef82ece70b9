"""Plan streaming: sub-queries start while the generator still writes the plan, the whole
plan still decides what runs, and answers equal those of decompose-then-execute."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fakes import (
    KeywordEmbeddings,
    StreamingChat,
    fake_llm,
    literal_aggregator,
    make_expert,
    plan_json,
    streaming_llm,
)
from langgraph.checkpoint.memory import InMemorySaver

from langchain_complm import CompLLMOutput, FailurePolicy, Plan, SubQuery, create_comp_llm
from langchain_complm.decompose import StructuralSubQueryGenerator
from langchain_complm.errors import SubQueryExecutionError
from langchain_complm.execute import DROPPED

QUESTION = "What is 2+3, which drug treats it, and which war came first?"
PLAN = plan_json(
    ("q1", "What is the sum of 2 and 3?", []),
    ("q2", "Which drug treats {q1} patients?", ["q1"]),
    ("q3", "Which war came first, the Crimean War or the Boer War?", []),
)
PIECE = 0.25
"""Seconds the fake generator takes per sub-query it writes."""

both = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


def build(generator: Any, delay: float = 0.2, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    fakes, experts = {}, []
    for name in ("math", "medicine", "history"):
        expert, fakes[name] = make_expert(name, delay=delay)
        experts.append(expert)
    comp = create_comp_llm(
        experts,
        generator=generator,
        router=KeywordEmbeddings(),
        # The fake model's answer as it is (the coverage check has its own tests).
        aggregator=kwargs.pop("aggregator", literal_aggregator(fake_llm("final answer"))),
        mode=kwargs.pop("mode", "eager"),
        **kwargs,
    )
    return comp, fakes


async def ask(comp: Any, value: Any, use_async: bool, config: Any = None) -> CompLLMOutput:
    if use_async:
        return CompLLMOutput.model_validate(await comp.ainvoke(value, config))
    return CompLLMOutput.model_validate(comp.invoke(value, config))


def shape(plan: Plan) -> list[tuple[str, str, tuple[str, ...], str | None]]:
    return [(sq.id, sq.question, sq.depends_on, sq.expert) for sq in plan.sub_queries]


def calls(fakes: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((c for fake in fakes.values() for c in fake.calls), key=lambda c: c["start"])


@both
async def test_the_first_expert_starts_before_the_plan_ends(use_async: bool) -> None:
    generator = streaming_llm(PLAN, delay=PIECE)
    comp, fakes = build(generator, stream_plan=True)
    out = await ask(comp, QUESTION, use_async)
    (plan_end,) = generator.ended
    started = [c["start"] for c in calls(fakes)]
    # q1 is complete after one piece of four, q2 (its dependent) once q1 is answered.
    assert plan_end - started[0] >= PIECE
    assert len(started) == 3 and started[1] < plan_end
    assert list(out.results) == ["q1", "q2", "q3"] and out.answer == "final answer"
    assert out.timings["decompose"] >= 3 * PIECE
    assert set(out.timings) == {"decompose", "route", "execute", "aggregate", "total"}


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(PLAN, id="chain-and-leaf"),
        pytest.param(plan_json(("q1", "Which war was first?", [])), id="single"),
        pytest.param(
            plan_json(
                ("q2", "Which drug treats {q1}?", ["q1"]),
                ("q1", "What is the sum of 2 and 3?", []),
                ("q3", "Is {q1} or {q2} a number?", ["q1", "q2"]),
            ),
            id="parent-after-child",
        ),
        pytest.param("no plan at all", id="fallback"),
    ],
)
@both
async def test_answers_equal_decompose_then_execute(plan: str, use_async: bool) -> None:
    outputs = []
    for stream_plan in (False, True):
        comp, _ = build(streaming_llm(plan, "still no plan"), stream_plan=stream_plan)
        outputs.append(await ask(comp, QUESTION, use_async))
    plain, streamed = outputs
    # Routed one at a time, float32 scores may differ in their last digit; routes do not.
    assert shape(streamed.plan) == shape(plain.plan)
    assert streamed.plan.fallback_reason == plain.plan.fallback_reason
    for ours, theirs in zip(streamed.plan.sub_queries, plain.plan.sub_queries, strict=True):
        assert ours.route and theirs.route
        assert ours.route.scores == pytest.approx(theirs.route.scores)
    assert streamed.answer == plain.answer
    assert {k: (r.prompt, r.answer, r.status) for k, r in streamed.results.items()} == {
        k: (r.prompt, r.answer, r.status) for k, r in plain.results.items()
    }


LATE_INVALID = plan_json(
    ("q1", "What is the sum of 2 and 3?", []),
    ("q3", "Which war came first, the Crimean War or the Boer War?", []),
    ("q2", "Which drug treats {q9} patients?", ["q9"]),
)


@both
async def test_a_late_invalid_part_keeps_the_work_started(use_async: bool) -> None:
    # The whole reply is invalid (q2 depends on an unknown q9): the generator retries, and
    # the retry's plan keeps q1 and q3 as streamed, so their answers are used, not redone.
    generator = streaming_llm(LATE_INVALID, PLAN, delay=PIECE)
    comp, fakes = build(generator, stream_plan=True)
    out = await ask(comp, QUESTION, use_async)
    first_reply_end = generator.ended[0]
    assert [c["prompt"].splitlines()[-1] for c in calls(fakes)] == [
        "What is the sum of 2 and 3?",
        "Which war came first, the Crimean War or the Boer War?",
        "Question: Which drug treats math answer to <What is the sum of 2 and 3?> patients?",
    ]
    assert min(c["start"] for c in calls(fakes)) < first_reply_end
    assert [sq.id for sq in out.plan.sub_queries] == ["q1", "q2", "q3"]
    assert all(r.status == "ok" for r in out.results.values())


@both
async def test_a_sub_query_plan_repair_changes_runs_again_as_repaired(use_async: bool) -> None:
    # Repair sees the whole plan: "in that century" refers to q2's answer, so the final q3
    # depends on q2. The q3 streamed before repair ran on its own; its answer is not used.
    implicit = plan_json(
        ("q1", "What is the sum of 2 and 3?", []),
        ("q2", "Which drug treats {q1} patients?", ["q1"]),
        ("q3", "Which war came first in that century?", []),
    )
    comp, fakes = build(streaming_llm(implicit, delay=PIECE), stream_plan=True)
    out = await ask(comp, QUESTION, use_async)
    q3 = out.plan.by_id["q3"]
    assert q3.depends_on == ("q2",) and out.plan.repairs
    prompts = [c["prompt"] for c in calls(fakes)]
    assert prompts.count("Which war came first in that century?") == 1  # the streamed run
    assert out.results["q3"].status == "ok" and out.results["q2"].answer in out.results["q3"].prompt


@both
async def test_a_plan_that_falls_back_drops_what_it_changed(use_async: bool) -> None:
    # Invalid twice: the query is answered whole as q1, a question the streamed q1 was not;
    # the streamed q3 (not in the final plan) is dropped before it starts, or its answer is.
    late = plan_json(
        ("q1", "What is the sum of 2 and 3?", []),
        ("q3", "Which war came first in {q1}?", ["q1"]),
        ("q1", "Which drug treats it?", []),
    )
    generator = streaming_llm(late, "not a plan", delay=PIECE)
    comp, fakes = build(generator, stream_plan=True)
    out = await ask(comp, QUESTION, use_async)
    assert out.plan.is_fallback and list(out.results) == ["q1"]
    assert out.results["q1"].question == QUESTION and out.results["q1"].status == "ok"
    prompts = [c["prompt"] for c in calls(fakes)]
    assert prompts[0] == "What is the sum of 2 and 3?" and prompts[-1] == QUESTION


def test_dropped_sub_queries_that_had_not_started_are_skipped() -> None:
    late = plan_json(
        ("q1", "What is the sum of 2 and 3?", []),
        ("q2", "Which drug treats {q1} patients?", ["q1"]),
        ("q2", "Again?", []),
    )
    events = []
    comp, fakes = build(streaming_llm(late, "not a plan"), delay=1.0, stream_plan=True)
    for event in comp.stream(QUESTION):
        events.append(event)
    skipped = [e for e in events if e["type"] == "subquery_error" and e["sub_query_id"] == "q2"]
    assert [e["error"] for e in skipped] == [DROPPED]
    assert "Which drug treats" not in " ".join(c["prompt"] for c in calls(fakes))


def test_progress_events_show_experts_starting_before_the_plan() -> None:
    comp, _ = build(streaming_llm(PLAN, delay=PIECE), stream_plan=True)
    kinds = [(e["type"], e.get("sub_query_id")) for e in comp.stream(QUESTION)]
    assert kinds.index(("subquery_start", "q1")) < kinds.index(("plan", None))
    assert [k for k in kinds if k[0] == "routed"] == [("routed", f"q{i}") for i in (1, 2, 3)]
    assert kinds[-1] == ("done", None)


@both
async def test_a_given_plan_and_a_generator_that_does_not_stream(use_async: bool) -> None:
    given = Plan(
        query=QUESTION,
        sub_queries=(SubQuery(id="q1", question="What is the sum of 2 and 3?"),),
    )
    generator = streaming_llm(PLAN)
    comp, _ = build(generator, stream_plan=True)
    out = await ask(comp, {"plan": given}, use_async)
    assert generator.i == 0 and list(out.results) == ["q1"]
    comp, _ = build(StructuralSubQueryGenerator(), aggregator=fake_llm("x"), stream_plan=True)
    out = await ask(comp, "What is 2+3, and which drug treats flu?", use_async)
    assert len(out.results) == 2 and all(r.status == "ok" for r in out.results.values())


@both
async def test_sequential_mode_and_max_concurrency(use_async: bool) -> None:
    comp, fakes = build(streaming_llm(PLAN, delay=PIECE), mode="sequential", stream_plan=True)
    out = await ask(comp, QUESTION, use_async, {"max_concurrency": 1})
    spans = [(c["start"], c["end"]) for c in calls(fakes)]
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
    assert len(spans) == 3 and all(r.status == "ok" for r in out.results.values())


@both
async def test_a_failed_run_resumes_without_decomposing_or_answering_again(
    use_async: bool,
) -> None:
    generator = streaming_llm(PLAN, delay=PIECE)
    comp, fakes = build(
        generator,
        stream_plan=True,
        checkpointer=InMemorySaver(),
        failure_policy=FailurePolicy(on_failure="raise"),
    )
    fakes["history"].fail_times = 1
    fakes["history"].delay = 1.0  # q3 fails well after q1 and q2 are answered
    config = {"configurable": {"thread_id": f"resume-{use_async}"}}
    with pytest.raises(SubQueryExecutionError):
        await ask(comp, QUESTION, use_async, config)
    answered = len(calls(fakes))
    out = await ask(comp, None, use_async, config)
    assert generator.i == 1  # the plan came from the checkpoint
    # Only q3 (the failed one) runs again; q1 and q2 keep their saved answers.
    assert [c["prompt"] for c in calls(fakes)[answered:]] == [
        "Which war came first, the Crimean War or the Boer War?"
    ]
    assert all(r.status == "ok" for r in out.results.values())


def test_plan_streaming_needs_eager_or_sequential_mode_and_no_review() -> None:
    with pytest.raises(ValueError, match="use mode='eager'"):
        build(fake_llm(PLAN), mode="superstep", stream_plan=True)
    with pytest.raises(ValueError, match="choose one"):
        build(fake_llm(PLAN), stream_plan=True, review_plan=True)


class Crash(BaseException):
    """Stands for the process dying: not an error the attempt loop handles."""


class CrashingStream(StreamingChat):
    """Dies (the process would) after ``crash_after`` pieces of its first reply."""

    crash_after: int = 0

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for n, chunk in enumerate(super()._stream(*args, **kwargs)):
            self._crash_at(n)
            yield chunk

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        n = 0
        async for chunk in super()._astream(*args, **kwargs):
            self._crash_at(n)
            n += 1
            yield chunk

    def _crash_at(self, n: int) -> None:
        if self.crash_after and n == self.crash_after:
            self.crash_after = 0
            time.sleep(0.3)  # q2 is answered meanwhile
            raise Crash


@both
async def test_a_run_that_crashed_while_streaming_never_pairs_old_answers_with_new_questions(
    use_async: bool,
) -> None:
    # q1 and q2 are answered, then the run dies while the plan is still being written.
    # Resumed, the decomposer writes another plan with the same ids, as a new process would:
    # q2's question is the same, but its parent's is not, so its saved answer is not used.
    second = plan_json(
        ("q1", "What is the sum of 2 and 3, really?", []),
        ("q2", "Which drug treats {q1} patients?", ["q1"]),
        ("q3", "Which war came first, the Crimean War or the Boer War?", []),
    )
    generator = CrashingStream(responses=[PLAN, second], delay=0.05, crash_after=2)
    comp, fakes = build(generator, delay=0.0, stream_plan=True, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": f"crash-{use_async}"}}
    with pytest.raises(Crash):
        await ask(comp, QUESTION, use_async, config)
    assert [c["prompt"].splitlines()[-1][:30] for c in calls(fakes)] == [
        "What is the sum of 2 and 3?",
        "Question: Which drug treats ma",
    ]
    out = await ask(comp, None, use_async, config)
    assert generator.i == 2  # the plan was not complete: decomposed again
    assert shape(out.plan)[0][1] == "What is the sum of 2 and 3, really?"
    assert len(calls(fakes)) == 5  # q1 and q2 again, q3 once
    for sq in out.plan.sub_queries:
        result = out.results[sq.id]
        assert (result.question, result.status) == (sq.question, "ok")
        parents = {p: out.results[p].answer or "" for p in sq.depends_on}
        assert result.prompt and result.prompt.endswith(sq.render(parents))
