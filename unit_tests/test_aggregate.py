"""The Response Aggregator addresses every part: enumerated, or synthesized and checked."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import KeywordEmbeddings, fake_llm, make_expert, plan_json
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from langchain_complm import create_comp_llm
from langchain_complm.aggregate import (
    AggregationInput,
    ResponseAggregator,
    final_results,
    holds_answer,
)
from langchain_complm.decompose.generator import SubQueryGenerator
from langchain_complm.execute.results import SubQueryResult

QUERY = "What is 15% of 80, and what are the symptoms of iron-deficiency anemia?"


class SizedFake(FakeListChatModel):
    """A fake chat model that reports its size, as local models do."""

    num_parameters: int = 135_000_000


def result(
    sq_id: str, question: str, answer: str | None, depends_on: tuple[str, ...] = ()
) -> SubQueryResult:
    status = "ok" if answer is not None else "failed"
    return SubQueryResult(
        id=sq_id,
        question=question,
        depends_on=depends_on,
        expert="e",
        prompt=question if answer is not None else None,
        answer=answer,
        status=status,
        error=None if answer is not None else "expert down",
    )


PARALLEL = [
    result("q1", "What is 15% of 80?", "15% of 80 is 12."),
    result("q2", "What are the symptoms of iron-deficiency anemia?", "Fatigue and pale skin."),
]


async def aggregate(aggregator: ResponseAggregator, results: list[Any], use_async: bool) -> str:
    data = AggregationInput(query=QUERY, results=results)
    message = await aggregator.ainvoke(data) if use_async else aggregator.invoke(data)
    return message.text


both = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


@both
async def test_a_small_model_enumerates_every_part_without_a_call(use_async: bool) -> None:
    llm = SizedFake(responses=[])  # any call would fail: the fake has no response
    aggregator = ResponseAggregator(llm=llm)
    assert aggregator.resolved_mode() == "enumerate"
    assert not aggregator.calls_model(PARALLEL)
    answer = await aggregate(aggregator, PARALLEL, use_async)
    assert answer == "1. 15% of 80 is 12.\n\n2. Fatigue and pale skin."


@both
async def test_a_chain_gives_its_final_answer_with_the_steps(use_async: bool) -> None:
    chain = [
        result("q1", "Who directed Jaws?", "Steven Spielberg."),
        result("q2", "Where was {q1} born?", "In Cincinnati, Ohio.", ("q1",)),
    ]
    answer = await aggregate(ResponseAggregator(llm=SizedFake(responses=[])), chain, use_async)
    assert answer == "In Cincinnati, Ohio.\n(Who directed Jaws? Steven Spielberg.)"
    assert [r.id for r in final_results(chain)] == ["q2"]


@both
async def test_a_failed_part_is_answered_by_the_model_from_its_question(use_async: bool) -> None:
    results = [PARALLEL[0], result("q2", "What are the symptoms of anemia?", None)]
    llm = SizedFake(responses=["Tiredness."])
    aggregator = ResponseAggregator(llm=llm)
    assert aggregator.calls_model(results)
    answer = await aggregate(aggregator, results, use_async)
    assert answer == "1. 15% of 80 is 12.\n\n2. Tiredness."


def test_a_part_waiting_for_a_failed_one_is_asked_as_the_whole_query() -> None:
    results = [
        result("q1", "Who directed Jaws?", None),
        SubQueryResult(
            id="q2", question="Where was {q1} born?", depends_on=("q1",), status="skipped"
        ),
    ]
    asked: list[str] = []

    class Recording(SizedFake):
        def _stream(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
            asked.append(messages[-1].text)
            yield from super()._stream(messages, *args, **kwargs)

    answer = ResponseAggregator(llm=Recording(responses=["Cincinnati."])).invoke(
        AggregationInput(query="Where was the director of Jaws born?", results=results)
    )
    assert asked == ["Where was the director of Jaws born?"]
    assert answer.text == "Cincinnati."


@pytest.mark.parametrize(
    ("size", "mode"),
    [(135_000_000, "enumerate"), (7_000_000_000, "synthesize"), (None, "synthesize")],
)
def test_auto_mode_follows_the_model_size(size: int | None, mode: str) -> None:
    llm = fake_llm("x") if size is None else SizedFake(responses=["x"], num_parameters=size)
    assert ResponseAggregator(llm=llm).resolved_mode() == mode
    assert ResponseAggregator(llm=llm, mode="enumerate").resolved_mode() == "enumerate"


@both
async def test_a_synthesis_that_drops_a_part_gets_it_appended(use_async: bool) -> None:
    llm = fake_llm("Iron-deficiency anemia causes fatigue and pale skin.")
    answer = await aggregate(ResponseAggregator(llm=llm), PARALLEL, use_async)
    assert answer == (
        "Iron-deficiency anemia causes fatigue and pale skin.\n\n"
        "- What is 15% of 80? 15% of 80 is 12."
    )


@both
async def test_a_synthesis_that_holds_every_part_is_kept(use_async: bool) -> None:
    llm = fake_llm("It is 12; the symptoms are fatigue and pale skin.")
    answer = await aggregate(ResponseAggregator(llm=llm), PARALLEL, use_async)
    assert answer == "It is 12; the symptoms are fatigue and pale skin."
    unchecked = ResponseAggregator(llm=fake_llm("About anemia only."), check_coverage=False)
    assert await aggregate(unchecked, PARALLEL, use_async) == "About anemia only."


def test_holds_answer_reads_numbers_then_words() -> None:
    assert holds_answer("The result is 12.", "15% of 80 is 12.")
    assert not holds_answer("The result is 13.", "15% of 80 is 12.")
    assert holds_answer("Mostly tiredness and pale skin.", "Pale skin and fatigue. Also more.")
    assert not holds_answer("Something unrelated.", "Pale skin and fatigue.")


def test_the_streamed_tokens_are_the_enumerated_answer() -> None:
    math, _ = make_expert("math")
    medicine, _ = make_expert("medicine")
    plan = plan_json(("q1", "What is 15% of 80?", []), ("q2", "Which drug treats anemia?", []))
    comp = create_comp_llm(
        [math, medicine],
        generator=SubQueryGenerator(llm=fake_llm(plan), repair=False),
        router=KeywordEmbeddings(),
        aggregator=ResponseAggregator(llm=SizedFake(responses=[])),
    )
    events = list(comp.stream("What is 15% of 80, and which drug treats anemia?"))
    tokens = "".join(e["content"] for e in events if e["type"] == "token")
    done = next(e["data"] for e in events if e["type"] == "done")
    assert tokens == done.answer
    assert done.answer.startswith("1. math answer") and "\n\n2. medicine answer" in done.answer
