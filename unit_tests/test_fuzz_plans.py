"""Property-based fuzzing of the plan parser and of the Sub-query Generator over a fake model.

Replies are generated JSON-ish text, and valid plans mutated (cycles, dangling and duplicate
ids, huge counts, deep nesting, unicode, null bytes, long strings, stray placeholders) and
written out every way a model might (JSON, Python literals, doubled braces, fences, prose,
cut off, looping). The only outcomes allowed:

- ``parse_plan``: a ``Plan`` or a ``ValueError``; a plan either passes ``validate_dag``,
  and then satisfies the DAG invariants and routes and compiles, or raises
  ``PlanValidationError``;
- ``SubQueryGenerator``: a valid, routable plan, or the documented fallback (the whole query
  as one sub-query, with a ``fallback_reason``); it never raises.

Each case must also finish within :data:`SECONDS_PER_CASE`. CI runs the derandomized "ci"
profile (a few thousand cases); ``pytest --hypothesis-profile=fuzz`` explores further.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fakes import KeywordEmbeddings, fake_llm, make_expert
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_complm import Plan, PlanValidationError
from langchain_complm.decompose import PlanStreamParser, SubQueryGenerator, parse_plan
from langchain_complm.decompose._parser import MAX_REPLY_CHARS
from langchain_complm.execute import QueryExecutor, SubQueryResult
from langchain_complm.execute._schedule import Schedule
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, braced_names, invalid_text
from langchain_complm.route import EmbeddingRouter

# The profile (conftest.py: "ci", or --hypothesis-profile=fuzz) sets the total; each test
# takes its share.
EXAMPLES = settings.default.max_examples

SECONDS_PER_CASE = 2.0
"""Parsing is linear in a reply of at most MAX_REPLY_CHARS: milliseconds, even under load."""

QUERY = "What is 15% of 80, and who wrote f'{name}' in Hamlet?"


class StrictEmbeddings(KeywordEmbeddings):
    """Fails like a real tokenizer on text that is not valid Unicode (lone surrogates)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        for text in texts:
            text.encode("utf-8")
        return super().embed_documents(texts)


EXPERTS = [make_expert(name)[0] for name in ("math", "medicine", "history")]
ROUTER = EmbeddingRouter(experts=EXPERTS, embeddings=StrictEmbeddings())
EXECUTOR = QueryExecutor(experts=EXPERTS)


# --- strategies -------------------------------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "{q1}",
        "{q2}",
        "{1}",
        "{name}",
        "{{q1}}",
        "{",
        "}",
        '"',
        "'",
        "\\",
        "\n",
        "\x00",
        "\ud800",
        "\udfff",
        "\U0001f600",
        "é",
        "```",
        ", ",
        ": ",
        "true",
        "None",
        "\\ud800",
    ]
)
TEXT = st.lists(st.one_of(st.text(max_size=12), ODD_TEXT), max_size=8).map("".join)
LONG_TEXT = st.integers(1, 20_000).map(lambda n: "x" * n)
IDS = st.one_of(
    st.sampled_from(["q1", "q2", "q3", "q4", "q5", "a_b", "B-2", "results", "Q1", " q2 "]),
    st.sampled_from(["", "1q", "q 1", "{q1}", "q.1", "__start__", "q1|x", "q:1"]),
    st.integers(-3, 12),
    st.floats(allow_nan=True),
    st.text(max_size=6),
)
DEPS = st.one_of(st.none(), IDS, st.lists(IDS, max_size=4), st.lists(st.lists(IDS), max_size=2))
QUESTION = st.one_of(TEXT, LONG_TEXT, st.none(), st.integers(), st.lists(TEXT, max_size=2))


@st.composite
def items(draw: Any) -> Any:
    """One sub-query as a model might write it (or something that is not one)."""
    kind = draw(st.sampled_from(["object"] * 6 + ["aliases", "string", "scalar"]))
    if kind == "string":
        return draw(TEXT)
    if kind == "scalar":
        return draw(st.one_of(st.integers(), st.none(), st.booleans(), st.lists(TEXT)))
    question_key, deps_key = "question", "depends_on"
    if kind == "aliases":
        question_key = draw(st.sampled_from(["text", "query", "sub_query", "subquery"]))
        deps_key = draw(st.sampled_from(["dependencies", "deps", "parents"]))
    item: dict[str, Any] = {}
    if draw(st.booleans()) or kind == "object":
        item["id"] = draw(IDS)
    item[question_key] = draw(QUESTION)
    if draw(st.booleans()):
        item[deps_key] = draw(DEPS)
    return item


def _valid_items(n: int) -> list[dict[str, Any]]:
    """A chain of ``n`` sub-queries with placeholders: valid for n <= the cap."""
    return [
        {
            "id": f"q{i}",
            "question": f"Step {i} after {{q{i - 1}}}?" if i > 1 else "Start?",
            "depends_on": [f"q{i - 1}"] if i > 1 else [],
        }
        for i in range(1, n + 1)
    ]


@st.composite
def plan_objects(draw: Any) -> Any:
    """A decomposition as data: valid plans, mutated ones, and other JSON."""
    shape = draw(st.sampled_from(["valid", "mutated", "random", "huge", "wrapped", "other"]))
    if shape == "valid":
        listed = _valid_items(draw(st.integers(1, DEFAULT_MAX_SUB_QUERIES)))
    elif shape == "mutated":
        listed = _valid_items(draw(st.integers(1, 6)))
        for _ in range(draw(st.integers(1, 4))):
            target = draw(st.sampled_from(listed))
            field = draw(st.sampled_from(["id", "question", "depends_on"]))
            # Cycles, dangling and duplicate ids, stray placeholders, odd values.
            target[field] = draw(
                {"id": IDS, "question": QUESTION, "depends_on": DEPS}[field]
                | st.sampled_from([["q1"], ["q2", "q9"], [target.get("id")], "q3"])
            )
        if draw(st.booleans()):
            listed.append(dict(draw(st.sampled_from(listed))))  # a repeat
    elif shape == "random":
        listed = draw(st.lists(items(), max_size=10))
    elif shape == "huge":
        listed = _valid_items(draw(st.integers(9, 3000)))
    elif shape == "wrapped":
        return {"plan": {"sub_queries": _valid_items(2)}}
    else:
        return draw(st.one_of(st.none(), st.integers(), TEXT, st.dictionaries(TEXT, TEXT)))
    key = draw(st.sampled_from(["sub_queries"] * 4 + ["steps", "queries", "subquestions", None]))
    return listed if key is None else {key: listed}


@st.composite
def replies(draw: Any) -> str:
    """A reply: a plan object written out one of the ways models write, then mangled."""
    data = draw(plan_objects())
    style = draw(st.sampled_from(["json", "json", "ascii", "indent", "python", "doubled"]))
    try:
        if style == "python":
            text = repr(data)
        else:
            text = json.dumps(
                data, ensure_ascii=style == "ascii", indent=2 if style == "indent" else None
            )
    except ValueError:  # NaN ids are fine in Python, not in strict JSON dumps
        text = repr(data)
    if style == "doubled":
        text = text.replace("{", "{{").replace("}", "}}")
    for mangle in draw(st.lists(st.sampled_from(MANGLES), max_size=3)):
        text = mangle(draw, text)
    return text


def _fence(draw: Any, text: str) -> str:
    return f"```json\n{text}\n```"


def _prose(draw: Any, text: str) -> str:
    return f"{draw(TEXT)} Here is the plan: {text} {draw(TEXT)}"


def _cut(draw: Any, text: str) -> str:
    return text[: draw(st.integers(0, len(text)))]


def _loop(draw: Any, text: str) -> str:
    start = text.find("{", 1)
    return text if start < 0 else text + text[start:] * draw(st.integers(1, 20))


def _trailing_commas(draw: Any, text: str) -> str:
    return text.replace("]", ",]").replace("}", ",}")


def _insert(draw: Any, text: str) -> str:
    at = draw(st.integers(0, len(text)))
    return (
        text[:at]
        + draw(st.sampled_from(['"', "'", "{", "}", "[", "]", ",", ":", "\\"]))
        + (text[at:])
    )


def _delete(draw: Any, text: str) -> str:
    at = draw(st.integers(0, max(0, len(text) - 1)))
    return text[:at] + text[at + 1 :]


MANGLES = [_fence, _prose, _cut, _loop, _trailing_commas, _insert, _delete]

NESTED = st.one_of(
    st.integers(1, 5000).map(lambda k: "[" * k + "]" * k),
    st.integers(1, 5000).map(lambda k: '{"sub_queries": ' + "[" * k + '"a?"' + "]" * k + "}"),
    st.integers(1, 5000).map(lambda k: '{"a": ' * k + "1" + "}" * k),
    st.integers(1, 3000).map(lambda k: "{{" * k + "}}" * k),
    st.integers(1, 30_000).map(
        lambda k: '{"sub_queries": [{"id": ' + "9" * k + ', "question": "a"}]}'
    ),
)
JSON_TOKENS = [*"{}[]\":,' \n\\", "sub_queries", "question", "id", "depends_on", "q1", "true"]
JSONISH = st.lists(
    st.one_of(
        st.sampled_from([*JSON_TOKENS, "None", "{{", "}}", "```json"]),
        ODD_TEXT,
        st.text(max_size=4),
    ),
    max_size=60,
).map("".join)


# --- properties -------------------------------------------------------------------------------


def _check_valid(plan: Plan, max_sub_queries: int) -> None:
    """The DAG invariants, checked independently of ``validate_dag``, and routing."""
    ids = [sq.id for sq in plan.sub_queries]
    assert 1 <= len(ids) <= max_sub_queries
    assert len(set(ids)) == len(ids)
    position = {sq_id: i for i, sq_id in enumerate(plan.topological_order())}
    for sq in plan.sub_queries:
        assert sq.id[0].isascii() and sq.id[0].isalpha()
        assert sq.question.strip() and invalid_text(sq.question) is None
        for dep in sq.depends_on:
            assert dep in position and dep != sq.id
            assert position[dep] < position[sq.id]
        for name in braced_names(sq.question):
            assert name in sq.depends_on or name not in ids or name == sq.id
    routed = ROUTER.invoke(plan)
    assert all(sq.expert in EXECUTOR.experts for sq in routed.sub_queries)
    # And the executor can run it: in every mode its schedule starts each sub-query once,
    # after its dependencies.
    keys = {sq.id: sq.expert for sq in routed.sub_queries}
    for mode in ("superstep", "eager", "sequential"):
        schedule, started = Schedule(routed, mode, None, keys), []
        while not schedule.complete:
            ready = schedule.starts()
            assert ready, f"{mode}: nothing to start, {len(started)} of {len(ids)} done"
            for sq_id, _ in ready:
                started.append(sq_id)
                schedule.finish(sq_id, SubQueryResult(id=sq_id, question="-", status="ok"))
        done = {sq_id: i for i, sq_id in enumerate(started)}
        assert sorted(done) == sorted(ids)
        assert all(done[d] < done[sq.id] for sq in routed.sub_queries for d in sq.depends_on)


def _check_parse(reply: str) -> None:
    started = time.perf_counter()
    try:
        plan = parse_plan(reply, QUERY)
    except ValueError:
        plan = None
    assert time.perf_counter() - started < SECONDS_PER_CASE
    _check_streamed(reply)
    if plan is None:
        return
    assert plan.query == QUERY
    try:
        plan.validate_dag()
    except PlanValidationError:
        return
    _check_valid(plan, DEFAULT_MAX_SUB_QUERIES)


def _check_streamed(reply: str) -> None:
    """Streamed in pieces, a reply hands out sub-queries in linear time, parents first,
    and together they are always a valid plan."""
    parser = PlanStreamParser(QUERY)
    # Small pieces up to past the parser's reading limit, then the rest in one: a looped
    # reply of megabytes in 7-character pieces would time this loop, not the parser.
    small = min(len(reply), 2 * MAX_REPLY_CHARS)
    pieces = [reply[i : min(i + 7, small)] for i in range(0, small, 7)] + [reply[small:]]
    started = time.perf_counter()
    out = [sq for piece in pieces for sq in parser.feed(piece)]
    assert time.perf_counter() - started < SECONDS_PER_CASE
    if out:
        streamed = Plan(query=QUERY, sub_queries=tuple(out)).validate_dag()
        seen: set[str] = set()
        for sq in streamed.sub_queries:
            assert set(sq.depends_on) <= seen
            seen.add(sq.id)


@given(replies())
def test_parse_plan_on_written_out_plans(reply: str) -> None:
    _check_parse(reply)


@settings(max_examples=EXAMPLES // 2)
@given(JSONISH)
def test_parse_plan_on_json_like_text(reply: str) -> None:
    _check_parse(reply)


@settings(max_examples=EXAMPLES // 12)
@given(NESTED)
def test_parse_plan_on_deep_nesting_and_huge_numbers(reply: str) -> None:
    _check_parse(reply)


@settings(max_examples=EXAMPLES * 7 // 12)
@given(
    st.lists(st.one_of(replies(), JSONISH), min_size=1, max_size=2),
    st.integers(1, DEFAULT_MAX_SUB_QUERIES),
    st.one_of(st.just(QUERY), TEXT.filter(lambda q: q.strip() and invalid_text(q) is None)),
)
def test_generator_gives_a_valid_plan_or_the_fallback(
    responses: list[str], cap: int, query: str
) -> None:
    generator = SubQueryGenerator(llm=fake_llm(*responses), max_sub_queries=cap)
    started = time.perf_counter()
    plan = generator.invoke(query)
    assert time.perf_counter() - started < 2 * SECONDS_PER_CASE
    assert plan.query == query
    if plan.is_fallback:
        assert [(sq.id, sq.question, sq.depends_on) for sq in plan.sub_queries] == [
            ("q1", query, ())
        ]
        assert plan.fallback_reason
    assert plan.validate_dag(cap) is plan
    _check_valid(plan, cap)


@pytest.mark.parametrize(
    "reply",
    [
        '{{"sub_queries": [{{"id": "q1", "question": "Who wrote Hamlet?", "depends_on": []}}]}}',
        '{{"sub_queries": [{"id": "q1", "question": "Who wrote Hamlet?", "depends_on": []}]}}',
    ],
    ids=["all-doubled", "outer-doubled"],
)
def test_double_braced_replies_are_parsed(reply: str) -> None:
    plan = parse_plan(reply, QUERY).validate_dag()
    assert [(sq.id, sq.question) for sq in plan.sub_queries] == [("q1", "Who wrote Hamlet?")]
