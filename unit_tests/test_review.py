"""Plan review: a run pauses after routing with the routed plan; the reviewer approves, edits
or replaces it with ``Command(resume=...)``; an invalid answer is a clear error and the run
keeps waiting."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import (
    KeywordEmbeddings,
    fake_llm,
    literal_aggregator,
    literal_generator,
    make_expert,
    plan_json,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from langchain_complm import CompLLMOutput
from langchain_complm.errors import PlanReviewError
from langchain_complm.pipeline import PLAN_REVIEW, create_comp_llm

PLAN = plan_json(
    ("q1", "What is the sum of 2 and 3?", []),
    ("q2", "Which drug treats this disease?", []),
)


def build() -> tuple[Any, dict[str, Any]]:
    experts, fakes = {}, {}
    for name in ("math", "medicine", "history"):
        experts[name], fakes[name] = make_expert(name)
    comp = create_comp_llm(
        list(experts.values()),
        generator=literal_generator(fake_llm(PLAN)),
        router=KeywordEmbeddings(),
        aggregator=literal_aggregator(fake_llm("final")),
        review_plan=True,
        checkpointer=InMemorySaver(),
    )
    return comp, fakes


THREAD = {"configurable": {"thread_id": "review"}}


def paused(comp: Any) -> dict[str, Any]:
    out = comp.invoke("What is 2+3, and which drug?", THREAD)
    (pending,) = out["__interrupt__"]
    return pending.value  # type: ignore[no-any-return]


def resume(comp: Any, answer: Any) -> CompLLMOutput:
    return CompLLMOutput.model_validate(comp.invoke(Command(resume=answer), THREAD))


def test_the_run_pauses_with_the_routed_plan_before_any_expert() -> None:
    comp, fakes = build()
    request = paused(comp)
    assert request["type"] == PLAN_REVIEW
    assert [sq["route"]["expert"] for sq in request["plan"]["sub_queries"]] == ["math", "medicine"]
    assert "q1: What is the sum of 2 and 3?" in request["text"]
    assert set(request["experts"]) == {"math", "medicine", "history"}
    assert fakes["math"].calls == [] and fakes["medicine"].calls == []
    out = resume(comp, "approve")
    assert out.answer == "final" and len(fakes["math"].calls) == 1


@pytest.mark.parametrize(
    ("answer", "check"),
    [
        (
            {"action": "edit", "sub_queries": {"q2": {"expert": "history"}}},
            lambda out: out.results["q2"].expert == "history",
        ),
        (
            {"action": "edit", "sub_queries": {"q2": {"question": "What is {q1} plus 1?"}}},
            # The question changed; its parent added below would be missing: see the next case.
            None,
        ),
        (
            {
                "action": "edit",
                "sub_queries": {"q2": {"question": "What is {q1} plus 1?", "depends_on": ["q1"]}},
            },
            lambda out: (
                out.results["q2"].prompt.endswith(
                    "What is math answer to <What is the sum of 2 and 3?> plus 1?"
                )
                and out.results["q2"].expert == "medicine"
            ),
        ),
        (
            {
                "action": "replace",
                "plan": {"sub_queries": [{"id": "x", "question": "The war of the king?"}]},
            },
            lambda out: list(out.results) == ["x"] and out.results["x"].expert == "history",
        ),
    ],
)
def test_edits_and_replacements(answer: Any, check: Any) -> None:
    comp, _ = build()
    paused(comp)
    if check is None:
        with pytest.raises(PlanReviewError, match="placeholder"):
            resume(comp, answer)
        return
    out = resume(comp, answer)
    assert check(out)
    assert out.query == "What is 2+3, and which drug?"


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ("maybe", "'approve' or a dict with an 'action'"),
        ({"action": "shrug"}, "unknown plan review action 'shrug'"),
        ({"action": "edit", "sub_queries": {"q9": {"expert": "math"}}}, "no sub-query 'q9'"),
        ({"action": "edit", "sub_queries": {"q1": {"expert": "law"}}}, "unknown expert 'law'"),
        ({"action": "edit", "sub_queries": {"q1": {"colour": "red"}}}, "give a dict of"),
        (
            {
                "action": "edit",
                "sub_queries": {"q1": {"depends_on": ["q2"]}, "q2": {"depends_on": ["q1"]}},
            },
            "dependency cycle",
        ),
        ({"action": "replace", "plan": {"sub_queries": "nope"}}, "not a plan"),
    ],
)
def test_an_invalid_answer_is_a_clear_error_and_the_run_still_waits(
    answer: Any, match: str
) -> None:
    comp, fakes = build()
    paused(comp)
    with pytest.raises(PlanReviewError, match=match):
        resume(comp, answer)
    assert fakes["math"].calls == []
    assert comp.get_state(THREAD).interrupts  # still waiting for a valid answer
    assert resume(comp, "approve").answer == "final"


def test_a_parent_graph_resumes_the_review_and_an_invalid_answer_is_asked_again() -> None:
    # Resumed through a parent graph (this one is its node), the answer reaches the review
    # node without passing this graph's boundary: the node asks again, with the error.
    from langchain_core.messages import HumanMessage
    from langgraph.graph import START, MessagesState, StateGraph

    experts, fakes = zip(*(make_expert(n) for n in ("math", "medicine", "history")), strict=True)
    comp = create_comp_llm(
        list(experts),
        generator=literal_generator(fake_llm(PLAN)),
        router=KeywordEmbeddings(),
        aggregator=literal_aggregator(fake_llm("final")),
        review_plan=True,
    )
    parent = (
        StateGraph(MessagesState)
        .add_node("complm", comp)
        .add_edge(START, "complm")
        .compile(checkpointer=InMemorySaver())
    )
    out = parent.invoke({"messages": [HumanMessage("What is 2+3, and which drug?")]}, THREAD)
    assert out["__interrupt__"][0].value["type"] == PLAN_REVIEW
    out = parent.invoke(Command(resume="maybe"), THREAD)
    (pending,) = out["__interrupt__"]
    assert "'approve' or a dict" in pending.value["error"]
    assert fakes[0].calls == []
    out = parent.invoke(Command(resume={"action": "approve"}), THREAD)
    assert out["messages"][-1].content == "final"


async def test_review_under_ainvoke() -> None:
    comp, _ = build()
    out = await comp.ainvoke("What is 2+3, and which drug?", THREAD)
    assert out["__interrupt__"][0].value["type"] == PLAN_REVIEW
    with pytest.raises(PlanReviewError):
        await comp.ainvoke(Command(resume={"action": "nope"}), THREAD)
    answer = {"action": "edit", "sub_queries": {"q1": {"expert": "history"}}}
    out = CompLLMOutput.model_validate(await comp.ainvoke(Command(resume=answer), THREAD))
    assert out.results["q1"].expert == "history"
