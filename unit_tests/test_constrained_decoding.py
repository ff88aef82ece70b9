"""Grammar-constrained decoding of ChatLocalHuggingFace, on a tiny random-weight Llama.

A random model writes gibberish, so any valid JSON it writes comes from the grammar; the
schemas keep strings short so that every reply completes within the token budget.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("llguidance")

from pydantic import BaseModel, Field

from langchain_complm.decompose.generator import (
    PlanOutput,
    SubQueryGenerator,
    supports_structured_output,
)
from langchain_complm.models.huggingface import ChatLocalHuggingFace
from langchain_complm.models.testing import tiny_llama

PROMPTS = ["hello", "What is 2+3?", "Who wrote Hamlet?", "Name a prime.", "Why?", "Go on."]

SHORT = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 6},
        "confident": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["answer", "confident", "n"],
    "additionalProperties": False,
}


class Verdict(BaseModel):
    label: str = Field(json_schema_extra={"enum": ["yes", "no", "maybe"]})
    score: int = Field(json_schema_extra={"minimum": 0, "maximum": 9})


@pytest.fixture(scope="module")
def llm(tokenizer: Any) -> ChatLocalHuggingFace:
    return ChatLocalHuggingFace.from_model(
        tiny_llama(tokenizer, seed=1), tokenizer, model_id="tiny", max_new_tokens=48
    )


def _valid(text: str) -> dict[str, Any]:
    data = json.loads(text)
    assert list(data) == ["answer", "confident", "n"]  # schema order, nothing else
    assert isinstance(data["answer"], str) and len(data["answer"]) <= 6
    assert isinstance(data["confident"], bool)
    assert isinstance(data["n"], int) and 0 <= data["n"] <= 99
    return data


def test_free_decoding_of_the_random_model_is_not_json(llm: ChatLocalHuggingFace) -> None:
    for reply in llm.batch(PROMPTS):
        with pytest.raises(json.JSONDecodeError):
            json.loads(reply.text)


def test_every_reply_follows_the_schema_in_a_batch(llm: ChatLocalHuggingFace) -> None:
    replies = llm.bind(json_schema=SHORT).batch(PROMPTS)
    for reply in replies:
        _valid(reply.text)
        assert reply.response_metadata["finish_reason"] == "stop"  # ended by the grammar
    # Rows of one generate follow their own grammar state (how the batch splits depends on
    # when the calls arrive, so only that one was shared is checked).
    assert max(r.response_metadata["batch_size"] for r in replies) > 1


def test_a_field_schema_applies_to_every_call(llm: ChatLocalHuggingFace) -> None:
    constrained = llm.model_copy(update={"json_schema": SHORT})
    _valid(constrained.invoke("hello").text)


def test_constrained_and_free_requests_in_one_batch_keep_their_own_settings(
    llm: ChatLocalHuggingFace,
) -> None:
    constrained = llm.bind(json_schema=SHORT)
    free_reference = llm.invoke("hello").text
    replies = [constrained.invoke("hello"), llm.invoke("hello")]
    _valid(replies[0].text)
    assert replies[1].text == free_reference


def test_with_structured_output_parses_into_the_model(llm: ChatLocalHuggingFace) -> None:
    structured = llm.with_structured_output(Verdict)
    for verdict in structured.batch(PROMPTS[:3]):
        assert isinstance(verdict, Verdict)
        assert verdict.label in {"yes", "no", "maybe"} and 0 <= verdict.score <= 9


def test_with_structured_output_include_raw_and_dict_schemas(llm: ChatLocalHuggingFace) -> None:
    out = llm.with_structured_output(SHORT, include_raw=True).invoke("hello")
    assert out["parsing_error"] is None
    assert out["parsed"] == _valid(out["raw"].text)


def test_a_reply_cut_off_is_reported_not_hidden(llm: ChatLocalHuggingFace) -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    short = llm.model_copy(update={"max_new_tokens": 5})
    out = short.with_structured_output(schema, include_raw=True).invoke("hello")
    assert out["raw"].response_metadata["finish_reason"] == "length"
    assert out["raw"].text.startswith('{"text":"')


def test_bad_schemas_and_methods_fail_before_generating(llm: ChatLocalHuggingFace) -> None:
    with pytest.raises(ValueError, match="cannot constrain decoding"):
        llm.with_structured_output({"type": "object", "properties": {"x": {"type": "nope"}}})
    with pytest.raises(ValueError, match="method must be"):
        llm.with_structured_output(Verdict, method="function_calling")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported arguments"):
        llm.with_structured_output(Verdict, strict=True)


def test_the_generator_uses_constrained_decoding_on_local_models(
    llm: ChatLocalHuggingFace,
) -> None:
    assert supports_structured_output(llm)
    generator = SubQueryGenerator(llm=llm.model_copy(update={"max_new_tokens": 24}))
    reply = generator.reply_model().invoke(generator.messages("Who wrote Hamlet?"))
    # Cut off by the token budget (a random model never ends a string) but a prefix of
    # the plan grammar from its first character.
    assert reply["raw"].text.startswith('{"sub_queries":[{"id":"q')
    plan = generator.invoke("Who wrote Hamlet?")
    assert plan.is_fallback  # a cut-off reply that never repeats is not a plan
    assert PlanOutput.model_json_schema()["properties"]["sub_queries"]["minItems"] == 1


def _accepts(tokenizer: Any, schema: dict[str, Any], text: str) -> bool:
    import llguidance
    import llguidance.hf

    from langchain_complm.models._grammar import compile_schema, schema_text

    matcher = llguidance.LLMatcher(
        llguidance.hf.from_tokenizer(tokenizer), compile_schema(schema_text(schema)), log_level=0
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return matcher.consume_tokens(ids) and matcher.is_accepting()


def _plan(*steps: tuple[str, str, list[str]]) -> str:
    return json.dumps(
        {"sub_queries": [{"id": i, "question": q, "depends_on": d} for i, q, d in steps]},
        separators=(",", ":"),
    )


def test_the_plan_grammar_admits_only_valid_dags(tokenizer: Any) -> None:
    from langchain_complm.decompose.generator import plan_json_schema

    schema = plan_json_schema(3)
    good = _plan(
        ("q1", 'Who wrote "Hamlet"?', []),
        ("q2", "Where was {q1} born? (f'{name}' is code)", ["q1"]),
        ("q3", "Compare {q1} and {q2}.", ["q1", "q2"]),
    )
    assert _accepts(tokenizer, schema, good)
    for bad in (
        _plan(("q1", "A {q1}?", [])),  # names itself
        _plan(("q1", "A?", []), ("q2", "B?", ["q2"])),  # depends on itself
        _plan(("q1", "A {q2}?", []), ("q2", "B?", [])),  # a placeholder ahead
        _plan(("q2", "A?", [])),  # ids run q1, q2, ...
        _plan(*((f"q{i}", "A?", []) for i in range(1, 5))),  # over the cap
        '{"sub_queries":[]}',
    ):
        assert not _accepts(tokenizer, schema, bad), bad


def test_the_trained_generator_decodes_with_the_plan_grammar(llm: ChatLocalHuggingFace) -> None:
    from langchain_complm.decompose.generator import plan_json_schema
    from langchain_complm.decompose.trained import trained_generator

    generator = trained_generator(llm.model_copy(update={"max_new_tokens": 30}), max_sub_queries=4)
    assert generator.plan_schema == plan_json_schema(4)
    reply = generator.reply_model().invoke(generator.messages("Who wrote Hamlet?"))
    assert reply["raw"].text.startswith('{"sub_queries":[{"id":"q1","question":"')
    assert trained_generator(llm, constrained=False).plan_schema is None
