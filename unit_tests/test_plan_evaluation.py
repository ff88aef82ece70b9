"""Held-out compound questions, multi-hop kinds by phrasing and the plan-shape checks."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from langchain_complm.decompose.repair import repair_plan
from langchain_complm.evaluation.multiexpertqa import split_sources
from langchain_complm.evaluation.plans import (
    FRESH_HELDOUT_FILE,
    PlanExample,
    comparison_items,
    heldout_examples,
    multihop_examples,
    multihop_kind,
    plan_shape_ok,
)
from langchain_complm.evaluation.sources import resolve_data_dir
from langchain_complm.plan import Plan, SubQuery
from langchain_complm.training.data import build_training_pairs
from langchain_complm.training.evaluate import rescore_replies, score_reply


def _has_data() -> bool:
    try:
        return resolve_data_dir().is_dir()
    except FileNotFoundError:
        return False


needs_data = pytest.mark.skipif(not _has_data(), reason="public benchmark data is not available")


def plan(query: str, *steps: tuple[str, list[str]]) -> Plan:
    return Plan(
        query=query,
        sub_queries=tuple(
            SubQuery(id=f"q{i}", question=q, depends_on=tuple(d))
            for i, (q, d) in enumerate(steps, 1)
        ),
    ).validate_dag()


def test_the_heldout_set_has_every_kind_and_valid_gold_plans() -> None:
    examples = heldout_examples()
    assert len(examples) >= 100
    assert Counter(e.kind for e in examples) == {
        "reference": 33,
        "parallel": 25,
        "chain": 22,
        "comparison": 19,
        "single": 15,
        "bridge": 12,
    }
    assert len({e.query for e in examples}) == len(examples)
    for example in examples:
        assert example.gold is not None
        assert plan_shape_ok(example.gold, example.kind, example.gold), example.query
        assert repair_plan(example.gold) == example.gold, example.query  # gold needs no repair


def test_the_fresh_heldout_set_has_every_kind_and_valid_gold_plans() -> None:
    examples = heldout_examples(FRESH_HELDOUT_FILE)
    assert Counter(e.kind for e in examples) == {
        "reference": 12,
        "chain": 12,
        "parallel": 10,
        "comparison": 10,
        "bridge": 10,
        "single": 8,
    }
    queries = {e.query for e in examples}
    assert len(queries) == len(examples)
    assert not queries & {e.query for e in heldout_examples()}
    for example in examples:
        assert example.gold is not None
        assert plan_shape_ok(example.gold, example.kind, example.gold), example.query


@needs_data
def test_no_heldout_question_is_a_training_question() -> None:
    training = {p.query for p in build_training_pairs(3000, seed=0)}
    heldout = heldout_examples() + heldout_examples(FRESH_HELDOUT_FILE)
    assert not training & {e.query for e in heldout}


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Who was born first, Liam Cunningham or Michael Fassbender?", "comparison"),
        ("Were Scott Derrickson and Ed Wood of the same nationality?", "comparison"),
        ("Which film has the director born later, Amadeus or The Shining?", "bridge"),
        ("Whose director was born first, Gladiator or Avatar?", "bridge"),
        ("What is the place of birth of the director of film Jaws?", "chain"),
        ("Who founded the company that distributed the film UHF?", "chain"),
        ("Where is Ulrich Walter's employer headquartered?", "chain"),
        ("What is 2+2?", None),
    ],
)
def test_multihop_kinds_are_read_from_the_phrasing(question: str, kind: str | None) -> None:
    assert multihop_kind(question) == kind


def test_comparison_items_are_the_two_named_things() -> None:
    assert comparison_items("Which is longer, the Amazon River or the Mississippi River?") == (
        "Amazon River",
        "Mississippi River",
    )
    assert comparison_items("Are Hanafuda and Okey both card games?") == ("Hanafuda", "Okey")


CHAIN_Q = "What is the place of birth of the director of film Jaws?"
COMPARISON_Q = "Who was born first, Liam Cunningham or Michael Fassbender?"
BRIDGE_Q = "Which film has the director born later, Amadeus or The Shining?"


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (
            "chain",
            plan(CHAIN_Q, ("Who directed Jaws?", []), ("Where was {q1} born?", ["q1"])),
            plan(CHAIN_Q, ("Who directed Jaws?", [])),  # cut to one hop
        ),
        (
            "comparison",
            plan(
                COMPARISON_Q,
                ("When was Liam Cunningham born?", []),
                ("When was Michael Fassbender born?", []),
                ("Which is earlier: {q1} or {q2}?", ["q1", "q2"]),
            ),
            plan(  # both looked up in one sub-query
                COMPARISON_Q,
                ("When were Liam Cunningham and Michael Fassbender born?", []),
                ("When was Michael Fassbender born?", []),
                ("Which is earlier: {q1} or {q2}?", ["q1", "q2"]),
            ),
        ),
        (
            "bridge",
            plan(
                BRIDGE_Q,
                ("Who directed Amadeus?", []),
                ("Who directed The Shining?", []),
                ("When was {q1} born?", ["q1"]),
                ("When was {q2} born?", ["q2"]),
                ("Which is later: {q3} or {q4}?", ["q3", "q4"]),
            ),
            plan(  # a comparison of the films, not of their directors
                BRIDGE_Q,
                ("When was Amadeus released?", []),
                ("When was The Shining released?", []),
                ("Which is later: {q1} or {q2}?", ["q1", "q2"]),
            ),
        ),
    ],
)
def test_each_kind_has_its_shape(kind: str, good: Plan, bad: Plan) -> None:
    assert plan_shape_ok(good, kind)
    assert not plan_shape_ok(bad, kind)
    assert not plan_shape_ok(Plan.single(good.query), kind)


def test_other_kinds_compare_with_the_gold_graph() -> None:
    gold = plan("A? B?", ("A?", []), ("B?", []))
    assert plan_shape_ok(plan("A? B?", ("X?", []), ("Y?", [])), "parallel", gold)
    assert not plan_shape_ok(plan("A? B?", ("X?", []), ("Y {q1}?", ["q1"])), "parallel", gold)
    assert not plan_shape_ok(gold, "parallel")  # no gold: nothing to compare with


def test_a_multihop_reply_is_scored_on_its_shape_only() -> None:
    example = PlanExample(query=CHAIN_Q, gold=None, kind="chain", source="test")
    reply = json.dumps(
        {"sub_queries": [{"id": "q1", "question": "Who directed Jaws?", "depends_on": []}]}
    )
    repaired = score_reply(reply, example)
    assert repaired["shape"] == 1.0 and repaired["repairs"]  # repair added the next hop
    raw = score_reply(reply, example, repair=False)
    assert raw["shape"] == 0.0 and raw["json_valid"] == 1.0
    assert "edge_f1" not in raw
    report = rescore_replies({CHAIN_Q: reply}, [example], repair=False)
    assert report.metrics == {"json_valid": 1.0, "shape": 0.0}


@needs_data
def test_multihop_examples_come_from_the_test_split_only() -> None:
    examples = multihop_examples(20)
    assert Counter(e.kind for e in examples) == {"chain": 20, "comparison": 20}
    train = {r.question for r in split_sources("general", "train")}
    assert not train & {e.query for e in examples}


@needs_data
def test_the_dev_multihop_sample_is_a_second_unseen_one() -> None:
    from langchain_complm.training.evaluate import eval_examples

    dev = eval_examples("multihop-dev", 20)
    assert Counter(e.kind for e in dev) == {"chain": 20, "comparison": 20}
    seen = {r.question for r in split_sources("general", "train")} | {
        e.query for e in eval_examples("multihop", 20)
    }
    assert not seen & {e.query for e in dev}
