"""Sub-query Generator: tolerant parsing, retry with the error, fallback, structured output."""

from __future__ import annotations

import contextlib
import json
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from fakes import fake_llm, plan_json, streaming_llm
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from pydantic import Field, ValidationError

from langchain_complm import Plan, PlanValidationError, SubQuery
from langchain_complm.decompose import PlanStreamParser, SubQueryGenerator, parse_plan
from langchain_complm.decompose._parser import MAX_REPLY_CHARS
from langchain_complm.decompose.generator import PlanOutput, supports_structured_output
from langchain_complm.evaluation.adversarial import adversarial_replies

QUERY = "Who directed Jaws, and in which year was that director born?"
VALID = plan_json(
    ("q1", "Who directed the film Jaws?", []),
    ("q2", "In which year was {q1} born?", ["q1"]),
)
CYCLIC = plan_json(("q1", "A {q2}?", ["q2"]), ("q2", "B {q1}?", ["q1"]))


def shape(plan: Plan) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(s.id, s.question, s.depends_on) for s in plan.sub_queries]


VALID_SHAPE = [
    ("q1", "Who directed the film Jaws?", ()),
    ("q2", "In which year was {q1} born?", ("q1",)),
]


# --- fakes ----------------------------------------------------------------------------------


class RecordingChatModel(FakeListChatModel):
    """FakeListChatModel that records the messages of every call (sync and async)."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def _call(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> str:
        self.received.append(list(messages))
        return super()._call(messages, *args, **kwargs)


class FailingChatModel(RecordingChatModel):
    """A chat model that fails to run (not a bad output)."""

    def _call(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> str:
        self.received.append(list(messages))
        raise RuntimeError("model server is down")


class StructuredChatModel(RecordingChatModel):
    """A chat model with tool calling: ``with_structured_output`` returns the queued outputs
    (``PlanOutput`` or exceptions to raise) and records the messages it received."""

    outputs: list[Any] = Field(default_factory=list)
    schemas: list[Any] = Field(default_factory=list)
    structured_received: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:  # type: ignore[override]
        return self

    def with_structured_output(  # type: ignore[override]
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Any:
        self.schemas.append(schema)

        def answer(messages: list[BaseMessage]) -> Any:
            self.structured_received.append(list(messages))
            out = self.outputs.pop(0)
            # As LangChain's chat models do: a parser error is reported beside the raw
            # (tool-call) reply; any other error is raised.
            if include_raw and isinstance(out, OutputParserException):
                return {"raw": AIMessage(content=""), "parsed": None, "parsing_error": out}
            if isinstance(out, Exception):
                raise out
            if include_raw:
                return {"raw": AIMessage(content=""), "parsed": out, "parsing_error": None}
            return out

        return RunnableLambda(answer)


def plan_output(*items: tuple[str, str, list[str]]) -> PlanOutput:
    return PlanOutput.model_validate(json.loads(plan_json(*items)))


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: list[dict[str, Any]] = []
        self.chat_model_parents: list[UUID | None] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.chains.append({"name": kwargs.get("name"), "run_id": run_id, "parent": parent_run_id})

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.chat_model_parents.append(parent_run_id)


async def run(generator: Runnable[str, Plan], query: str, use_async: bool, **kw: Any) -> Plan:
    if use_async:
        return await generator.ainvoke(query, **kw)
    return generator.invoke(query, **kw)


both = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


# --- parse_plan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(VALID, id="plain"),
        pytest.param(f"```json\n{VALID}\n```", id="json-fence"),
        pytest.param(f"```\n{VALID}\n```", id="bare-fence"),
        pytest.param(f"Here is the plan:\n```JSON\n{VALID}\n```\nDone.", id="fence-in-prose"),
        pytest.param(f"Sure! Here is the decomposition:\n{VALID}\nHope it helps.", id="prose"),
        pytest.param(
            '{"sub_queries": [{"id": "q1", "question": "Who directed the film Jaws?", '
            '"depends_on": [],}, {"id": "q2", "question": "In which year was {q1} born?", '
            '"depends_on": ["q1",],},],}',
            id="trailing-commas",
        ),
        pytest.param(
            "{'sub_queries': [{'id': 'q1', 'question': 'Who directed the film Jaws?', "
            "'depends_on': []}, {'id': 'q2', 'question': 'In which year was {q1} born?', "
            "'depends_on': ['q1']}]}",
            id="single-quotes",
        ),
        pytest.param(
            "{'sub_queries': [{'id': 'q1', 'question': 'Who directed the film Jaws?', "
            "'depends_on': None, 'final': false}, {'id': 'q2', 'question': "
            "'In which year was {q1} born?', 'depends_on': ['q1'], 'final': true},]}",
            id="python-literals-and-json-keywords",
        ),
        pytest.param(
            json.dumps(json.loads(VALID)["sub_queries"]),
            id="bare-list",
        ),
        pytest.param(
            "Plan:\n" + json.dumps(json.loads(VALID), indent=2) + "\n",
            id="indented",
        ),
    ],
)
def test_parse_plan_tolerates_noise(text: str) -> None:
    plan = parse_plan(text, QUERY)
    assert plan.query == QUERY
    assert shape(plan) == VALID_SHAPE
    assert plan.validate_dag() is plan


def test_parse_plan_keeps_apostrophes_in_python_literals() -> None:
    plan = parse_plan("""[{'id': 'q1', 'question': "What's 2+2?", 'depends_on': []}]""", "x")
    assert shape(plan) == [("q1", "What's 2+2?", ())]


@pytest.mark.parametrize(
    "list_key", ["sub_queries", "subqueries", "sub_questions", "subquestions", "queries", "steps"]
)
def test_parse_plan_list_key_aliases(list_key: str) -> None:
    text = json.dumps({list_key: json.loads(VALID)["sub_queries"]})
    assert shape(parse_plan(text, QUERY)) == VALID_SHAPE


@pytest.mark.parametrize("question_key", ["question", "text", "query", "sub_query", "subquery"])
@pytest.mark.parametrize("deps_key", ["depends_on", "dependencies", "deps", "parents"])
def test_parse_plan_item_key_aliases(question_key: str, deps_key: str) -> None:
    text = json.dumps(
        {
            "sub_queries": [
                {"id": "q1", question_key: "Who directed the film Jaws?", deps_key: []},
                {"id": "q2", question_key: "In which year was {q1} born?", deps_key: ["q1"]},
            ]
        }
    )
    assert shape(parse_plan(text, QUERY)) == VALID_SHAPE


def test_parse_plan_numeric_ids_and_placeholders() -> None:
    text = json.dumps(
        {
            "sub_queries": [
                {"id": 1, "question": "Who directed Jaws?", "depends_on": []},
                {"id": "2", "question": "When was {1} born?", "depends_on": [1]},
                {"id": " 3 ", "question": "Compare {1} and {2}", "depends_on": ["1", 2]},
            ]
        }
    )
    plan = parse_plan(text, QUERY)
    assert shape(plan) == [
        ("q1", "Who directed Jaws?", ()),
        ("q2", "When was {q1} born?", ("q1",)),
        ("q3", "Compare {q1} and {q2}", ("q1", "q2")),
    ]
    assert plan.validate_dag() is plan


def test_parse_plan_missing_ids_are_positions_and_strings_are_questions() -> None:
    plan = parse_plan('["What is 2+2?", {"question": "Who wrote Hamlet?"}]', "q")
    assert shape(plan) == [("q1", "What is 2+2?", ()), ("q2", "Who wrote Hamlet?", ())]


def test_parse_plan_single_dependency_string_and_null_dependencies() -> None:
    text = json.dumps(
        {
            "steps": [
                {"id": "q1", "text": "A?", "dependencies": None},
                {"id": "q2", "text": "B {q1}?", "dependencies": "q1"},
            ]
        }
    )
    assert shape(parse_plan(text, "q")) == [("q1", "A?", ()), ("q2", "B {q1}?", ("q1",))]


def test_parse_plan_repairs_quotes_and_line_breaks_copied_into_questions() -> None:
    # What a small trained generator writes when a question holds quotes and line breaks.
    text = (
        '{"sub_queries":[{"id":"q1","question":"Jackie grew 3" over the summer and is 2" '
        'shorter than Anne. Jo said "hi", then left.\nHow tall?","depends_on":[]},'
        '{"id":"q2","question":"Is the term \\"void\\" legal?","depends_on":[]}]}'
    )
    plan = parse_plan(text, "q")
    assert [sq.question for sq in plan.sub_queries] == [
        'Jackie grew 3" over the summer and is 2" shorter than Anne. Jo said "hi", then left.'
        "\nHow tall?",
        'Is the term "void" legal?',
    ]


def test_parse_plan_drops_a_self_dependency_and_repeated_parents() -> None:
    text = (
        '{"sub_queries":[{"id":"q1","question":"a","depends_on":[]},'
        '{"id":"q2","question":"b {q1}","depends_on":["q1","q2","q1"]}]}'
    )
    plan = parse_plan(text, "q").validate_dag()
    assert plan.by_id["q2"].depends_on == ("q1",)


def test_parse_plan_closes_a_string_ended_by_the_wrong_quote_before_the_next_key() -> None:
    # The copied question ends in ' and the model closed the string with it.
    text = (
        '{"sub_queries":[{"id":"q1","question":"Which quote fits?\\nA) women.\', '
        '"depends_on":[]},{"id":"q2","question":"B?","depends_on":[]}]}'
    )
    plan = parse_plan(text, "q").validate_dag()
    assert [(sq.id, sq.question) for sq in plan.sub_queries] == [
        ("q1", "Which quote fits?\nA) women.'"),
        ("q2", "B?"),
    ]


def test_parse_plan_restores_the_opening_quote_of_the_next_key() -> None:
    text = (
        '{"sub_queries":[{"id":"q1","question":"D) it returns false.",depends_on":[]},'
        '{"id":"q2","question":"B?",depends_on":["q1"]}]}'
    )
    assert shape(parse_plan(text, "q").validate_dag()) == [
        ("q1", "D) it returns false.", ()),
        ("q2", "B?", ("q1",)),
    ]


def test_parse_plan_drops_a_repeated_sub_query_and_repoints_its_dependents() -> None:
    text = json.dumps(
        {
            "sub_queries": [
                {"id": "q1", "question": "Who wrote  Hamlet?", "depends_on": []},
                {"id": "q2", "question": "Who wrote Hamlet?", "depends_on": []},
                {"id": "q3", "question": "When was {q2} born?", "depends_on": ["q2"]},
            ]
        }
    )
    plan = parse_plan(text, "q").validate_dag()
    assert shape(plan) == [
        ("q1", "Who wrote  Hamlet?", ()),
        ("q3", "When was {q1} born?", ("q1",)),
    ]


LOOP = '{"id":"q%d","question":"Passage.\\nWhich method?","depends_on":[]}'


def test_parse_plan_keeps_a_cut_off_reply_up_to_where_it_started_repeating() -> None:
    # A small model that repeats a long question until the token limit.
    text = '{"sub_queries":[' + ",".join(LOOP % i for i in (1, 2, 3)) + ',{"id":"q4","quest'
    assert shape(parse_plan(text, "q")) == [("q1", "Passage.\nWhich method?", ())]


def test_parse_plan_rejects_a_cut_off_reply_that_did_not_repeat() -> None:
    text = '{"sub_queries":[' + LOOP % 1 + ',{"id":"q2","question":"Another que'
    with pytest.raises(ValueError, match="ends before its JSON plan"):
        parse_plan(text, "q")


def test_parse_plan_does_not_validate() -> None:
    plan = parse_plan(CYCLIC, "q")
    assert [s.id for s in plan.sub_queries] == ["q1", "q2"]
    with pytest.raises(PlanValidationError, match="cycle"):
        plan.validate_dag()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("I cannot split this question.", "no JSON object found", id="no-json"),
        pytest.param("", "no JSON object found", id="empty"),
        pytest.param('{"sub_queries": [', "ends before its JSON plan", id="unterminated"),
        pytest.param('{"sub_queries": [}', "invalid JSON", id="garbage"),
        pytest.param('{"answer": "42"}', '"sub_queries" list', id="no-list"),
        pytest.param('{"sub_queries": "q1"}', '"sub_queries" list', id="list-not-a-list"),
        pytest.param('{"sub_queries": [42]}', "sub-query 1 is not an object", id="item-number"),
        pytest.param(
            '{"sub_queries": [{"id": "q1", "question": "ok"}, {"id": "q2"}]}',
            'sub-query 2 has no "question" text',
            id="item-without-question",
        ),
        pytest.param(
            '[{"id": "q1", "question": 5}]',
            'sub-query 1 has no "question" text',
            id="question-not-text",
        ),
    ],
)
def test_parse_plan_raises_a_clear_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_plan(text, "q")
    assert message in str(info.value)


def test_python_literal_fallback_keeps_question_text() -> None:
    text = "{'sub_queries': [{'id': 'q1', 'question': 'Is it true that null is false?'}]}"
    assert parse_plan(text, "q").sub_queries[0].question == "Is it true that null is false?"


def test_prose_with_brackets_before_the_json() -> None:
    text = f"Sure [plan below]:\n{VALID}"
    assert shape(parse_plan(text, QUERY)) == VALID_SHAPE


def test_braces_that_name_no_dependency_stay_as_written() -> None:
    text = json.dumps(
        {
            "sub_queries": [
                {"id": 1, "question": "What does '{0}'.format(5) print?"},
                {"id": 2, "question": "Given {1}, is f'{name}' valid?", "depends_on": [1]},
            ]
        }
    )
    assert shape(parse_plan(text, "q").validate_dag()) == [
        ("q1", "What does '{0}'.format(5) print?", ()),
        ("q2", "Given {q1}, is f'{name}' valid?", ("q1",)),
    ]


def test_python_literals_are_read_without_eval() -> None:
    text = "[{'id': 'q1', 'question': 'Is \\x41 \"A\"?', 'depends_on': (), 'ok': True}]"
    assert shape(parse_plan(text, "q")) == [("q1", 'Is A "A"?', ())]


def test_a_plan_after_other_json_and_a_list_broken_after_it() -> None:
    assert shape(parse_plan(f'{{"note": "first"}} then {VALID}', QUERY)) == VALID_SHAPE
    broken_after = VALID[:-1] + ', "note": }'
    assert shape(parse_plan(broken_after, QUERY)) == VALID_SHAPE


def test_only_the_first_max_reply_chars_are_read() -> None:
    assert shape(parse_plan(VALID + " junk" * MAX_REPLY_CHARS, QUERY)) == VALID_SHAPE
    with pytest.raises(ValueError, match=f"only the first {MAX_REPLY_CHARS} characters"):
        parse_plan(" " * MAX_REPLY_CHARS + VALID, QUERY)


def test_a_huge_python_literal_reply_costs_bounded_memory() -> None:
    # ast.literal_eval of model output took about 480 bytes per byte of reply.
    reply = "{'sub_queries': [" + "{'id': 'q1', 'question': 'What?'}, " * 250_000 + "]}"
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            parse_plan(reply, "q")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MAX_REPLY_CHARS


# Linear work on a reply of the maximum length takes tens of milliseconds; the quadratic
# parser took 52 s on 32 KB.
SECONDS_PER_REPLY = 2.0


@pytest.mark.parametrize("kind", sorted(adversarial_replies(1000)))
def test_adversarial_replies_of_the_maximum_length_parse_in_linear_time(kind: str) -> None:
    reply = adversarial_replies(MAX_REPLY_CHARS)[kind]
    started = time.perf_counter()
    with contextlib.suppress(ValueError):
        parse_plan(reply, "q")
    assert time.perf_counter() - started < SECONDS_PER_REPLY


# --- PlanStreamParser ------------------------------------------------------------------------

THREE = plan_json(
    ("q1", "Who wrote Hamlet?", []),
    ("q2", "When was {q1} born?", ["q1"]),
    ("q3", "What is 15% of 80?", []),
)


def streamed(text: str, size: int = 1, max_sub_queries: int = 8) -> list[tuple[int, SubQuery]]:
    """(characters fed, sub-query) for each sub-query the parser hands out."""
    parser = PlanStreamParser("q", max_sub_queries)
    out = []
    for start in range(0, len(text), size):
        out += [(start + size, sq) for sq in parser.feed(text[start : start + size])]
    return out


@pytest.mark.parametrize("size", [1, 2, 7, 100_000])
@pytest.mark.parametrize(
    "text",
    [
        pytest.param(THREE, id="plain"),
        pytest.param(f"Here is the plan:\n```json\n{THREE}\n```", id="fence-in-prose"),
        pytest.param(json.dumps(json.loads(THREE), indent=2), id="indented"),
        pytest.param(THREE.replace("}, {", "},{").replace("]}", ",]}"), id="trailing-comma"),
        pytest.param(THREE.replace('"', "'"), id="single-quotes"),
        pytest.param(
            '{"sub_queries": [{"id": 1, "question": "Say \\"hi\\" in {x} ]", "deps": []},'
            ' "What is {1}?", {"id": "q3", "question": "Is {q1} a {q2}?", "depends_on": [1, "2"]}'
            "]}",
            id="aliases-escapes-and-strings",
        ),
    ],
)
def test_a_streamed_reply_hands_out_what_parse_plan_reads(text: str, size: int) -> None:
    assert [sq for _, sq in streamed(text, size)] == list(parse_plan(text, "q").sub_queries)


def test_each_sub_query_comes_out_once_its_item_closes() -> None:
    ends = [i + 1 for i, char in enumerate(THREE[:-1]) if char == "}" and THREE[i + 1] in ",]"]
    assert [(fed, sq.id) for fed, sq in streamed(THREE)] == list(
        zip(ends, ["q1", "q2", "q3"], strict=True)
    )


def test_a_sub_query_comes_out_after_a_parent_written_after_it() -> None:
    text = plan_json(("q2", "When was {q1} born?", ["q1"]), ("q1", "Who wrote Hamlet?", []))
    (fed_1, first), (fed_2, second) = streamed(text)
    assert (first.id, second.id) == ("q1", "q2") and fed_1 == fed_2
    assert [sq.id for _, sq in streamed(plan_json(("q1", "A {q9}?", ["q9"])))] == []


def test_a_repeated_sub_query_is_dropped_and_its_dependents_point_to_the_first() -> None:
    text = plan_json(("q1", "A?", []), ("q2", "A?", []), ("q3", "B {q2}?", ["q2"]))
    assert [(sq.id, sq.question, sq.depends_on) for _, sq in streamed(text)] == [
        ("q1", "A?", ()),
        ("q3", "B {q1}?", ("q1",)),
    ]


@pytest.mark.parametrize(
    ("late", "reason"),
    [
        ('{"id": "q1", "question": "Again?", "depends_on": []}', "duplicate sub-query id"),
        ('{"id": "q2", "question": "  ", "depends_on": []}', "empty question"),
        ('{"id": "q2", "depends_on": []}', 'has no "question" text'),
        ('{"id": "q2", "question": "\\ud800?", "depends_on": []}', "surrogate"),
        ('{"id": "q 2", "question": "B?", "depends_on": []}', "invalid sub-query id"),
        ("42", "is not an object"),
        ('{"id": "q2", "question": "B?", "depends_on": [}', "invalid JSON"),
    ],
)
def test_an_invalid_item_stops_the_stream(late: str, reason: str) -> None:
    text = '{"sub_queries": [{"id": "q1", "question": "A?"}, ' + late + ', {"question": "C?"}]}'
    parser = PlanStreamParser("q")
    out = [sq for char in text for sq in parser.feed(char)]
    assert [sq.id for sq in out] == ["q1"]
    assert parser.stopped is not None and reason in parser.stopped
    assert parser.sub_queries == tuple(out)


def test_the_cap_on_sub_queries_stops_the_stream() -> None:
    text = plan_json(*((f"q{i}", f"Question {i}?", []) for i in range(1, 5)))
    assert [sq.id for _, sq in streamed(text, max_sub_queries=3)] == ["q1", "q2", "q3"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(json.dumps(json.loads(THREE)["sub_queries"]), id="bare-list"),
        pytest.param("I cannot split this question.", id="prose"),
        pytest.param("x" * (MAX_REPLY_CHARS + 10) + THREE, id="past-the-reading-limit"),
    ],
)
def test_a_reply_without_a_readable_list_gives_nothing_early(text: str) -> None:
    assert streamed(text, size=997) == []


@pytest.mark.parametrize("kind", sorted(adversarial_replies(1000)))
def test_adversarial_replies_stream_in_linear_time(kind: str) -> None:
    reply = adversarial_replies(MAX_REPLY_CHARS)[kind]
    started = time.perf_counter()
    streamed(reply, size=4)
    assert time.perf_counter() - started < SECONDS_PER_REPLY


# --- SubQueryGenerator: prompt path ---------------------------------------------------------


@both
async def test_valid_reply_gives_the_plan(use_async: bool) -> None:
    llm = RecordingChatModel(responses=[VALID])
    generator = SubQueryGenerator(llm=llm, max_sub_queries=5)
    plan = await run(generator, QUERY, use_async)
    assert shape(plan) == VALID_SHAPE
    assert plan.query == QUERY
    assert not plan.is_fallback
    assert len(llm.received) == 1
    system, human = llm.received[0]
    assert isinstance(system, SystemMessage) and isinstance(human, HumanMessage)
    assert "At most 5 sub-questions" in system.text
    assert human.text == f"Question: {QUERY}"


def test_fake_list_chat_model_uses_the_prompt_path() -> None:
    assert not supports_structured_output(fake_llm(VALID))
    assert supports_structured_output(StructuredChatModel(responses=["unused"]))
    plan = SubQueryGenerator(llm=fake_llm(f"```json\n{VALID}\n```")).invoke(QUERY)
    assert shape(plan) == VALID_SHAPE


@both
async def test_invalid_reply_is_retried_with_the_error(use_async: bool) -> None:
    llm = RecordingChatModel(responses=["Sorry, I cannot do JSON.", VALID])
    plan = await run(SubQueryGenerator(llm=llm), QUERY, use_async)
    assert shape(plan) == VALID_SHAPE
    assert not plan.is_fallback
    assert len(llm.received) == 2
    first, second = llm.received
    assert second[: len(first)] == first
    shown_reply, retry = second[len(first) :]
    assert isinstance(shown_reply, AIMessage)
    assert shown_reply.text == "Sorry, I cannot do JSON."
    assert isinstance(retry, HumanMessage)
    assert "Your reply could not be used" in retry.text
    assert "no JSON object found in the reply" in retry.text


@both
async def test_invalid_twice_falls_back_to_a_single_sub_query(use_async: bool) -> None:
    llm = RecordingChatModel(responses=["no json", "still no json", VALID])
    plan = await run(SubQueryGenerator(llm=llm), QUERY, use_async)
    assert len(llm.received) == 2  # one retry only
    assert plan.is_fallback
    assert plan.fallback_reason is not None
    assert plan.fallback_reason.startswith("ValueError: ")
    assert "no JSON object found" in plan.fallback_reason
    assert shape(plan) == [("q1", QUERY, ())]
    assert plan.query == QUERY


@both
async def test_plan_over_the_cap_is_invalid_and_retried(use_async: bool) -> None:
    three = plan_json(("q1", "A?", []), ("q2", "B?", []), ("q3", "C?", []))
    two = plan_json(("q1", "A?", []), ("q2", "B?", []))
    llm = RecordingChatModel(responses=[three, two])
    generator = SubQueryGenerator(llm=llm, max_sub_queries=2)
    plan = await run(generator, "A, B and C?", use_async)
    assert shape(plan) == [("q1", "A?", ()), ("q2", "B?", ())]
    assert "At most 2 sub-questions" in llm.received[0][0].text
    assert "more than the cap of 2" in llm.received[1][-1].text

    over_twice = RecordingChatModel(responses=[three, three])
    fallback = await run(SubQueryGenerator(llm=over_twice, max_sub_queries=2), "Q", use_async)
    assert fallback.is_fallback
    assert fallback.fallback_reason is not None
    assert fallback.fallback_reason.startswith("PlanValidationError: ")
    assert "cap of 2" in fallback.fallback_reason


def test_default_cap_accepts_three_sub_queries() -> None:
    three = plan_json(("q1", "A?", []), ("q2", "B?", []), ("q3", "C?", []))
    assert len(SubQueryGenerator(llm=fake_llm(three)).invoke("Q").sub_queries) == 3


def test_max_sub_queries_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        SubQueryGenerator(llm=fake_llm(VALID), max_sub_queries=0)


@both
async def test_cyclic_plan_is_retried(use_async: bool) -> None:
    llm = RecordingChatModel(responses=[CYCLIC, VALID])
    plan = await run(SubQueryGenerator(llm=llm), QUERY, use_async)
    assert shape(plan) == VALID_SHAPE
    shown_reply, retry = llm.received[1][-2:]
    assert isinstance(shown_reply, AIMessage) and shown_reply.text == CYCLIC
    assert "dependency cycle: q1 -> q2 -> q1" in retry.text


@both
async def test_unknown_dependency_twice_falls_back(use_async: bool) -> None:
    bad = plan_json(("q1", "A?", ["q7"]))
    llm = RecordingChatModel(responses=[bad])
    plan = await run(SubQueryGenerator(llm=llm), "Q", use_async)
    assert len(llm.received) == 2
    assert plan.is_fallback
    assert "unknown sub-query 'q7'" in (plan.fallback_reason or "")


@both
async def test_model_that_raises_falls_back_without_retry(use_async: bool) -> None:
    llm = FailingChatModel(responses=[VALID])
    plan = await run(SubQueryGenerator(llm=llm), QUERY, use_async)
    assert len(llm.received) == 1
    assert plan.is_fallback
    assert plan.fallback_reason == "RuntimeError: model server is down"
    assert shape(plan) == [("q1", QUERY, ())]


def test_long_errors_are_shortened_in_the_fallback_reason() -> None:
    long_reply = "x" * 2000
    llm = RecordingChatModel(responses=["[" + long_reply, "[" + long_reply])
    plan = SubQueryGenerator(llm=llm).invoke("Q")
    assert plan.is_fallback
    assert len(plan.fallback_reason or "") < 400


def test_custom_prompt_and_retry_message_are_used() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("human", "DECOMPOSE<{query}> cap={max_sub_queries}")]
    )
    llm = RecordingChatModel(responses=["nope", VALID])
    generator = SubQueryGenerator(
        llm=llm, prompt=prompt, retry_message="FIX IT: {error}", max_sub_queries=4
    )
    plan = generator.invoke("my query")
    assert shape(plan) == VALID_SHAPE
    assert [m.text for m in llm.received[0]] == ["DECOMPOSE<my query> cap=4"]
    assert [m.text for m in llm.received[1]] == [
        "DECOMPOSE<my query> cap=4",
        "nope",
        "FIX IT: no JSON object found in the reply",
    ]


# --- SubQueryGenerator: structured-output path ----------------------------------------------


@both
async def test_structured_output_is_used_when_supported(use_async: bool) -> None:
    llm = StructuredChatModel(
        responses=["this text reply must not be used"],
        outputs=[plan_output(("q1", "A?", []), ("q2", "B {q1}?", ["q1"]))],
    )
    plan = await run(SubQueryGenerator(llm=llm), "Q", use_async)
    assert shape(plan) == [("q1", "A?", ()), ("q2", "B {q1}?", ("q1",))]
    assert llm.schemas == [PlanOutput]
    assert llm.received == []  # the plain text path was not used
    assert len(llm.structured_received) == 1
    assert llm.structured_received[0][-1].text == "Question: Q"


@both
async def test_structured_output_false_forces_the_prompt_path(use_async: bool) -> None:
    llm = StructuredChatModel(responses=[VALID], outputs=[plan_output(("q1", "unused", []))])
    plan = await run(SubQueryGenerator(llm=llm, structured_output=False), QUERY, use_async)
    assert shape(plan) == VALID_SHAPE
    assert llm.schemas == []
    assert len(llm.received) == 1


@both
async def test_structured_output_true_forces_the_structured_path(use_async: bool) -> None:
    llm = StructuredChatModel(responses=[VALID], outputs=[plan_output(("q1", "Forced?", []))])
    generator = SubQueryGenerator(llm=llm, structured_output=True, repair=False)
    plan = await run(generator, QUERY, use_async)
    assert shape(plan) == [("q1", "Forced?", ())]
    assert llm.received == []


@both
async def test_structured_invalid_plan_is_retried_with_the_error(use_async: bool) -> None:
    cyclic = plan_output(("q1", "A {q2}?", ["q2"]), ("q2", "B {q1}?", ["q1"]))
    llm = StructuredChatModel(
        responses=["unused"], outputs=[cyclic, plan_output(("q1", "Fixed?", []))]
    )
    plan = await run(SubQueryGenerator(llm=llm), "Q", use_async)
    assert shape(plan) == [("q1", "Fixed?", ())]
    assert len(llm.structured_received) == 2
    shown_reply, retry = llm.structured_received[1][-2:]
    assert isinstance(shown_reply, AIMessage)
    assert PlanOutput.model_validate_json(shown_reply.text) == cyclic
    assert "dependency cycle" in retry.text


@both
async def test_structured_parser_errors_are_retried_then_fall_back(use_async: bool) -> None:
    llm = StructuredChatModel(
        responses=["unused"],
        outputs=[OutputParserException("bad tool call"), OutputParserException("bad again")],
    )
    plan = await run(SubQueryGenerator(llm=llm), "Q", use_async)
    assert len(llm.structured_received) == 2
    # No reply to show: the retry holds the prompt and the error only.
    assert [type(m) for m in llm.structured_received[1]] == [
        SystemMessage,
        HumanMessage,
        HumanMessage,
    ]
    assert "bad tool call" in llm.structured_received[1][-1].text
    assert plan.is_fallback
    assert (plan.fallback_reason or "").startswith("OutputParserException: bad again")


def test_structured_runtime_error_is_not_retried() -> None:
    llm = StructuredChatModel(responses=["unused"], outputs=[RuntimeError("quota"), None])
    plan = SubQueryGenerator(llm=llm).invoke("Q")
    assert len(llm.structured_received) == 1
    assert plan.fallback_reason == "RuntimeError: quota"


# --- callbacks ------------------------------------------------------------------------------


@both
async def test_generator_run_is_a_named_chain_with_the_model_as_child(use_async: bool) -> None:
    recorder = RunRecorder()
    llm = RecordingChatModel(responses=["no json", VALID])
    config: RunnableConfig = {"callbacks": [recorder]}
    await run(SubQueryGenerator(llm=llm), QUERY, use_async, config=config)
    generator_runs = [c for c in recorder.chains if c["name"] == "SubQueryGenerator"]
    assert len(generator_runs) == 1
    assert generator_runs[0]["parent"] is None
    # Both model calls (first try and retry) are children of the generator run.
    assert recorder.chat_model_parents == [generator_runs[0]["run_id"]] * 2


@both
async def test_generator_run_is_a_child_of_the_calling_run(use_async: bool) -> None:
    generator = SubQueryGenerator(llm=fake_llm(VALID))

    def outer(query: str, config: RunnableConfig) -> Plan:
        return generator.invoke(query, config)

    async def aouter(query: str, config: RunnableConfig) -> Plan:
        return await generator.ainvoke(query, config)

    recorder = RunRecorder()
    pipeline = RunnableLambda(outer, afunc=aouter, name="pipeline")
    plan = await run(pipeline, QUERY, use_async, config={"callbacks": [recorder]})
    assert shape(plan) == VALID_SHAPE
    by_name = {c["name"]: c for c in recorder.chains}
    assert by_name["SubQueryGenerator"]["parent"] == by_name["pipeline"]["run_id"]


# --- SubQueryGenerator: streamed replies ------------------------------------------------------


async def stream_plan(
    generator: SubQueryGenerator, query: str, use_async: bool
) -> tuple[Plan, list[tuple[float, SubQuery]]]:
    out: list[tuple[float, SubQuery]] = []

    def on_sub_query(sq: SubQuery) -> None:
        out.append((time.time(), sq))

    if use_async:
        plan = await generator.astream_plan(query, on_sub_query)
    else:
        plan = generator.stream_plan(query, on_sub_query)
    return plan, out


@both
async def test_stream_plan_hands_out_sub_queries_while_the_model_writes(use_async: bool) -> None:
    llm = streaming_llm(THREE, delay=0.1)
    plan, out = await stream_plan(SubQueryGenerator(llm=llm), QUERY, use_async)
    assert plan == SubQueryGenerator(llm=fake_llm(THREE)).invoke(QUERY)
    assert [sq for _, sq in out] == list(plan.sub_queries)
    (first, _), (last, _) = out[0], out[-1]
    assert llm.ended[0] - first > 0.25 and last < llm.ended[0]


@both
async def test_a_late_invalid_part_is_retried_without_streaming(use_async: bool) -> None:
    late = plan_json(("q1", "Who wrote Hamlet?", []), ("q2", "When was {q9} born?", ["q9"]))
    llm = streaming_llm(late, THREE)
    plan, out = await stream_plan(SubQueryGenerator(llm=llm), QUERY, use_async)
    assert [sq.id for _, sq in out] == ["q1"]
    assert [sq.id for sq in plan.sub_queries] == ["q1", "q2", "q3"] and not plan.is_fallback


@both
async def test_stream_plan_falls_back_as_invoke_does(use_async: bool) -> None:
    llm = streaming_llm(plan_json(("q1", "A?", []), ("q1", "B?", [])), "no json either")
    plan, out = await stream_plan(SubQueryGenerator(llm=llm), QUERY, use_async)
    assert [sq.question for _, sq in out] == ["A?"]
    assert plan.is_fallback and [sq.question for sq in plan.sub_queries] == [QUERY]


def test_structured_output_does_not_stream() -> None:
    items = [(i, q, list(d)) for i, q, d in VALID_SHAPE]
    llm = StructuredChatModel(responses=["unused"], outputs=[plan_output(*items)])
    out: list[SubQuery] = []
    plan = SubQueryGenerator(llm=llm).stream_plan(QUERY, out.append)
    assert shape(plan) == VALID_SHAPE and out == []
