"""Tests for the deterministic StructuralSubQueryGenerator."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig

from langchain_complm.decompose.structural import StructuralSubQueryGenerator, split_query
from langchain_complm.evaluation.adversarial import adversarial_queries
from langchain_complm.pipeline import DEFAULT_MAX_QUERY_CHARS
from langchain_complm.plan import Plan

SPLITS = [
    (
        "Answer the following. Question 1: What is DNA? Question 2: Who wrote Faust?",
        ["What is DNA?", "Who wrote Faust?"],
    ),
    (
        "Could you help me with two things?\nFirst: What is a CPU?\nSecond: What causes rain?",
        ["What is a CPU?", "What causes rain?"],
    ),
    (
        # A long part brings its own referents: its pronouns do not point back.
        "Please answer both:\n(1) Jaime places eggs on the tray. Each tray can hold 24 eggs. "
        "If he has 64 eggs and 2 trays, how many eggs won't he be able to place?\n"
        "(2) What is the capital of France?",
        [
            "Jaime places eggs on the tray. Each tray can hold 24 eggs. If he has 64 eggs and "
            "2 trays, how many eggs won't he be able to place?",
            "What is the capital of France?",
        ],
    ),
    ("What is 2+2, and who wrote Hamlet?", ["What is 2+2?", "Who wrote Hamlet?"]),
    ("What is 2+2?, and who wrote Hamlet?", ["What is 2+2?", "Who wrote Hamlet?"]),
    (
        "I have two questions. What is the capital of France? Who painted the Mona Lisa?",
        ["What is the capital of France?", "Who painted the Mona Lisa?"],
    ),
    (
        "Please answer both: (1) what is photosynthesis (2) how do vaccines work",
        ["What is photosynthesis?", "How do vaccines work?"],
    ),
    (
        "1. What is DNA? 2. What is RNA? 3. Who discovered penicillin?",
        ["What is DNA?", "What is RNA?", "Who discovered penicillin?"],
    ),
    ("a) what is gravity b) what is magnetism", ["What is gravity?", "What is magnetism?"]),
    (
        "First, what is the boiling point of water? Second, who wrote Faust? Finally, what is 7*8?",
        ["What is the boiling point of water?", "Who wrote Faust?", "What is 7*8?"],
    ),
    (
        "What is the speed of light; and how far is the Moon?",
        ["What is the speed of light?", "How far is the Moon?"],
    ),
    (
        "What is inflation and also who founded Microsoft?",
        ["What is inflation?", "Who founded Microsoft?"],
    ),
    ("What is 2+2. Also, who wrote Hamlet?", ["What is 2+2?", "Who wrote Hamlet?"]),
    (
        "What is 2+2? A. 3 B. 4 What is 3+3? A. 5 B. 6",
        ["What is 2+2? A. 3 B. 4", "What is 3+3? A. 5 B. 6"],
    ),
    (
        "What is 2+2?\nA. 3\nB. 4\nWhat is 3+3?\nA. 5\nB. 6",
        ["What is 2+2? A. 3 B. 4", "What is 3+3? A. 5 B. 6"],
    ),
    (
        "What did Dr. Smith say about the U.S. Army? Who is J. K. Rowling?",
        ["What did Dr. Smith say about the U.S. Army?", "Who is J. K. Rowling?"],
    ),
    (
        "How much is 3.5 times 2? What is the capital of Peru? Thanks!",
        ["How much is 3.5 times 2?", "What is the capital of Peru?"],
    ),
    (
        "Tell me (1) the capital of France and (2) the capital of Spain.",
        ["Tell me the capital of France", "Tell me the capital of Spain"],
    ),
    (
        "What is the capital of France, and what is the population of Spain?",
        ["What is the capital of France?", "What is the population of Spain?"],
    ),
]

NO_SPLITS = [
    "What are the causes and symptoms of anemia?",
    "Which is larger, 3 or 5?",
    "Explain photosynthesis. What is 2+2?",  # the leading sentence is content, not preamble
    "Compare Python and Java, and explain which is faster.",
    "What is 3.5 plus 1.5?",
    "Which of these is a mammal? A. Shark B. Dolphin C. Trout",
    # An enumeration inside an option line is the option's.
    "How can customary law relate to treaties?\nA) Treaties only codify it\nB) It cannot be "
    "in treaties\nC) Treaties may 1) codify it, 2) crystallise it, 3) make it emerge",
    "",
]


@pytest.mark.parametrize(("query", "expected"), SPLITS)
def test_splits(query: str, expected: list[str]) -> None:
    plan = StructuralSubQueryGenerator().invoke(query)
    assert [sq.question for sq in plan.sub_queries] == expected
    assert [sq.id for sq in plan.sub_queries] == [f"q{i}" for i in range(1, len(expected) + 1)]
    assert all(sq.depends_on == () for sq in plan.sub_queries)
    assert plan.query == query
    assert plan.fallback_reason is None


@pytest.mark.parametrize("query", [q for q in NO_SPLITS if q])
def test_no_structure_is_a_single_plan_without_fallback(query: str) -> None:
    plan = StructuralSubQueryGenerator().invoke(query)
    assert plan == Plan.single(query)
    assert not plan.is_fallback


def test_parts_that_refer_back_are_linked_by_repair() -> None:
    query = "Who directed Jaws? When was he born?"
    linked = StructuralSubQueryGenerator().invoke(query)
    assert [(sq.question, sq.depends_on) for sq in linked.sub_queries] == [
        ("Who directed Jaws?", ()),
        ("When was {q1} born?", ("q1",)),
    ]
    assert linked.repairs
    # Without repair the parts would not be self-contained: the query is answered whole.
    assert StructuralSubQueryGenerator(repair=False).invoke(query) == Plan.single(query)
    assert split_query(query) == []
    assert split_query(query, allow_references=True) == [
        "Who directed Jaws?",
        "When was he born?",
    ]


def test_split_query_returns_empty_without_structure() -> None:
    for query in NO_SPLITS:
        assert split_query(query) == []


def test_max_sub_queries_cap() -> None:
    query = "(1) what is A (2) what is B (3) what is C"
    assert len(StructuralSubQueryGenerator(max_sub_queries=3).invoke(query).sub_queries) == 3
    plan = StructuralSubQueryGenerator(max_sub_queries=2).invoke(query)
    assert plan == Plan.single(query)
    assert plan.fallback_reason is None


def test_max_sub_queries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StructuralSubQueryGenerator(max_sub_queries=0)


# Linear work on a query of the maximum length takes milliseconds; the catastrophic patterns
# this guards against took seconds on 190 characters and did not end on 280.
SECONDS_PER_QUERY = 2.0


@pytest.mark.parametrize("kind", sorted(adversarial_queries(100)))
def test_adversarial_queries_of_the_maximum_length_split_in_linear_time(kind: str) -> None:
    query = adversarial_queries(DEFAULT_MAX_QUERY_CHARS)[kind]
    started = time.perf_counter()
    StructuralSubQueryGenerator().invoke(query)
    assert time.perf_counter() - started < SECONDS_PER_QUERY


def test_whitespace_runs_split_like_single_spaces() -> None:
    query = "What is 2+2?\n\n\n \t\nWho wrote\t\t  Hamlet?  \r\n"
    assert split_query(query) == ["What is 2+2?", "Who wrote Hamlet?"]


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: list[dict[str, Any]] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.chains.append({"name": kwargs.get("name"), "parent": parent_run_id})


@pytest.mark.parametrize("use_async", [False, True])
async def test_named_run_and_ainvoke(use_async: bool) -> None:
    recorder = RunRecorder()
    config: RunnableConfig = {"callbacks": [recorder]}
    generator = StructuralSubQueryGenerator()
    query = "What is 2+2, and who wrote Hamlet?"
    if use_async:
        plan = await generator.ainvoke(query, config)
    else:
        plan = generator.invoke(query, config)
    assert len(plan.sub_queries) == 2
    assert [c["name"] for c in recorder.chains] == ["StructuralSubQueryGenerator"]
    assert recorder.chains[0]["parent"] is None


def test_batch_and_name() -> None:
    generator = StructuralSubQueryGenerator()
    assert generator.get_name() == "StructuralSubQueryGenerator"
    plans = generator.batch(["What is 2+2, and who wrote Hamlet?", "Which is larger, 3 or 5?"])
    assert [len(p.sub_queries) for p in plans] == [2, 1]
