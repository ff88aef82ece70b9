"""Answer and plan metrics on hand-made cases (no data needed)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from langchain_complm.evaluation.metrics import (
    contains_answer,
    exact_match,
    extract_answer_number,
    extract_choice,
    extract_numbers,
    match_sub_queries,
    mentioned_options,
    normalize_answer,
    score_item,
    score_item_plan,
    score_part,
    score_plan,
    token_f1,
)
from langchain_complm.evaluation.multiexpertqa import Item, Part
from langchain_complm.plan import Plan, RoutingDecision, SubQuery

OPTIONS = {
    "A": "increases but less than doubles",
    "B": "doubles",
    "C": "more than doubles",
    "D": "depends on factors not stated",
}
CHOICE = Part(
    id="q1",
    question="When the kinetic energy of a body doubles, its momentum",
    answer="increases but less than doubles",
    answer_type="choice",
    options=OPTIONS,
    answer_letter="A",
    domain="physics",
    source="mmlu",
    source_id="mmlu/conceptual_physics/test:1",
)
NUMBER = Part(
    id="q2",
    question="How much did the house sell for?",
    answer="1250",
    answer_type="number",
    domain="math",
    source="gsm8k",
    source_id="gsm8k/test:7",
)
TEXT = Part(
    id="q1",
    question="Who was president when Citibank was founded?",
    answer="james madison",
    answer_type="text",
    domain="general",
    source="bamboogle",
    source_id="bamboogle:0",
)


def _item(parts: tuple[Part, ...], plan: Plan | None, kind: str = "parallel") -> Item:
    return Item(
        id="x",
        dataset="multiexpertqa-all",
        split="test",
        kind=kind,  # type: ignore[arg-type]
        question="compound",
        parts=parts,
        answer="gold",
        gold_plan=plan,
        hops=2 if plan is None else 1,
    )


def _plan(*sub_queries: tuple[str, str, tuple[str, ...]], experts: dict | None = None) -> Plan:
    experts = experts or {}
    return Plan(
        query="q",
        sub_queries=tuple(
            SubQuery(
                id=sq_id,
                question=question,
                depends_on=deps,
                route=RoutingDecision(
                    sub_query_id=sq_id,
                    question=question,
                    expert=experts[sq_id],
                    score=0.9,
                    scores={},
                )
                if sq_id in experts
                else None,
            )
            for sq_id, question, deps in sub_queries
        ),
    )


# --- text answers ---------------------------------------------------------------------------


def test_normalization_exact_match_and_f1() -> None:
    assert normalize_answer("  The  Eiffel-Tower! ") == "eiffeltower"
    assert exact_match("The answer.", "answer") == 1.0
    assert exact_match("answers", "answer") == 0.0
    assert token_f1("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0
    assert token_f1("", "paris") == 0.0
    assert token_f1("london", "paris") == 0.0


def test_contains_answer_needs_whole_tokens() -> None:
    assert contains_answer("It was James Madison, in 1812.", "james madison")
    assert not contains_answer("Madisonville", "madison")
    assert not contains_answer("anything", "")
    assert not contains_answer("", "paris")


# --- multiple choice ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(C) because energy grows with v squared", "C"),
        ("A) increases", "A"),
        ("D.", "D"),
        ("The answer is C.", "C"),
        ("Answer: (D)", "D"),
        ("the correct option is b", None),  # lower-case letters are words, not choices
        ("I would pick (A), since p = sqrt(2mE).", "A"),
        ("It more than doubles.", "C"),  # option text; "doubles" inside it does not count
        ("It doubles.", "B"),
        ("A body at rest has no momentum.", None),  # a leading article is not a choice
        ("Either (A) or (B).", None),
        ("", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text, OPTIONS) == letter


def test_mentioned_options_prefers_the_longest_mention() -> None:
    assert mentioned_options("more than doubles", OPTIONS) == {"C"}
    assert mentioned_options("it doubles, or more than doubles", OPTIONS) == {"B", "C"}
    assert mentioned_options("no idea", OPTIONS) == set()


# --- numbers --------------------------------------------------------------------------------


def test_numbers_with_commas_signs_and_enumerators() -> None:
    assert extract_numbers("He paid $1,250.00 and got 3-4 back") == [
        Decimal("1250.00"),
        Decimal("3"),
        Decimal("4"),
    ]
    assert extract_numbers("(1) 18\n2. -9\nQuestion 3: 7") == [18, -9, 7]
    assert extract_numbers("") == []


def test_stated_answer_number() -> None:
    assert extract_answer_number("16-3-4 = 9 eggs, 9*2 = 18.\n#### 18") == 18
    assert extract_answer_number("The answer is 1,250, after 3 steps.") == 1250
    assert extract_answer_number("so \\boxed{42}") == 42
    assert extract_answer_number("She makes 18 dollars in 2 days") == 2  # the last number
    assert extract_answer_number("no numbers") is None


# --- part and item scores -------------------------------------------------------------------


def test_score_part_against_its_own_prediction() -> None:
    assert score_part(CHOICE, "A").correct
    assert score_part(CHOICE, "A").extracted == "A"
    assert not score_part(CHOICE, "It doubles").correct
    assert score_part(NUMBER, "The house sold for $1,250.").correct
    assert score_part(NUMBER, "1250.00").correct
    assert not score_part(NUMBER, "1,250 minus 50 is 1200").correct
    text = score_part(TEXT, "James Madison")
    assert text.correct and text.exact_match == 1.0 and text.f1 == 1.0
    empty = score_part(NUMBER, "")
    assert not empty.correct and empty.extracted is None and empty.f1 == 0.0


def test_score_part_against_a_final_answer_text() -> None:
    final = "(1) Its momentum increases but less than doubles. (2) The house sold for $1,250."
    assert score_part(CHOICE, final, final_answer=True).correct
    assert score_part(NUMBER, final, final_answer=True).correct
    # Naming two options of the part is not an answer.
    hedged = "It doubles or increases but less than doubles."
    assert not score_part(CHOICE, hedged, final_answer=True).correct
    # Letters count only when no option is named in words.
    assert score_part(CHOICE, "1. (A)\n2. 1250", final_answer=True).correct
    assert not score_part(CHOICE, "1. (B)", final_answer=True).correct
    # An enumerator is not the number 1.
    one = NUMBER.model_copy(update={"answer": "1"})
    assert not score_part(one, "(1) something else", final_answer=True).correct
    assert not score_part(NUMBER, "", final_answer=True).correct


def test_score_item_all_parts_from_predictions_or_final_text() -> None:
    item = _item((CHOICE, NUMBER), None)
    both = score_item(item, {"q1": "A", "q2": "1250"})
    assert both.all_correct and both.part_accuracy == 1.0
    missing = score_item(item, {"q1": "A"})
    assert not missing.all_correct and missing.part_accuracy == 0.5
    final = score_item(item, "q1: A) increases but less than doubles\nq2: 1,250")
    assert final.all_correct
    assert not score_item(item, "").all_correct


def test_a_letter_in_a_multi_part_answer_counts_only_in_its_parts_segment() -> None:
    second = CHOICE.model_copy(
        update={"id": "q2", "options": {"A": "red", "B": "blue"}, "answer_letter": "B"}
    )
    item = _item((CHOICE, second), None)
    # "B)" cites the second part's option: the first part (gold A) is not answered...
    assert [p.correct for p in score_item(item, "A) blue").parts] == [False, True]
    # ...nor is any part by letters that cannot be attributed to it.
    assert [p.correct for p in score_item(item, "A) and B)").parts] == [False, False]
    # An enumerated answer attributes each letter to its part.
    assert score_item(item, "(1) A) (2) B)").all_correct
    assert [p.correct for p in score_item(item, "1. B)\n2. A)").parts] == [False, False]
    # One part: a letter is its answer.
    assert score_item(_item((CHOICE,), None), "The answer is A).").all_correct


def test_chain_items_score_only_final_parts_against_final_text() -> None:
    problem = NUMBER.model_copy(update={"id": "q1"})
    follow_up = NUMBER.model_copy(
        update={
            "id": "q2",
            "question": "A previous step found the result {q1}. Now add 5.",
            "answer": "1255",
            "source": "synthetic",
            "depends_on": ("q1",),
        }
    )
    item = _item((problem, follow_up), None, kind="chain")
    assert item.final_parts == (follow_up,)
    scored = score_item(item, "The final result is 1255.")
    assert scored.all_correct and [p.part_id for p in scored.parts] == ["q2"]
    per_part = score_item(item, {"q1": "1250", "q2": "1260"})
    assert [p.correct for p in per_part.parts] == [True, False]


# --- plans ----------------------------------------------------------------------------------

GOLD = _plan(
    ("q1", "Who directed the film Jaws?", ()),
    ("q2", "In which year was {q1} born?", ("q1",)),
    ("q3", "What is the boiling point of water in Celsius?", ()),
)
DOMAINS = {"q1": "general", "q2": "general", "q3": "physics"}
EXPERTS = {"general": "generalist", "physics": "physicist"}


def test_identical_plan_scores_perfectly() -> None:
    score = score_plan(GOLD, GOLD)
    assert score.count_match and score.count_error == 0
    assert score.sub_query_f1 == 1.0 and score.edge_f1 == 1.0
    assert score.routing_accuracy is None  # no domains given


def test_matching_survives_reordering_and_renamed_placeholders() -> None:
    predicted = _plan(
        ("a", "What is the boiling point of water, in degrees Celsius?", ()),
        ("b", "Who was the director of Jaws?", ()),
        ("c", "What year was {b} born in?", ("b",)),
    )
    matches = {m.predicted_id: m.gold_id for m in match_sub_queries(predicted, GOLD)}
    assert matches == {"a": "q3", "b": "q1", "c": "q2"}
    score = score_plan(predicted, GOLD)
    assert score.sub_query_precision == score.sub_query_recall == 1.0
    assert score.edge_precision == score.edge_recall == 1.0


def test_braces_that_name_no_dependency_are_compared_as_text() -> None:
    # Only placeholders (braces naming a dependency, the plan's rule) are ignored.
    gold = _plan(("q1", "What does print(f'{total}') show?", ()))
    same = _plan(("a", "What does print(f'{total}') show?", ()))
    other = _plan(("a", "What does print(f'{count}') show?", ()))
    assert match_sub_queries(same, gold)[0].f1 == 1.0
    assert match_sub_queries(other, gold)[0].f1 < 1.0


def test_missing_edges_extra_sub_queries_and_count_error() -> None:
    predicted = _plan(
        ("q1", "Who directed the film Jaws?", ()),
        ("q2", "In which year was the director of Jaws born?", ()),  # no dependency
        ("q3", "What is the boiling point of water in Celsius?", ()),
        ("q4", "Why is the sky blue?", ("q3",)),  # unmatched, with a spurious edge
    )
    score = score_plan(predicted, GOLD)
    assert score.count_error == 1 and score.count_match is False
    assert score.sub_query_precision == 0.75 and score.sub_query_recall == 1.0
    assert score.sub_query_f1 == pytest.approx(6 / 7)
    assert score.edge_precision == 0.0 and score.edge_recall == 0.0 and score.edge_f1 == 0.0


def test_edge_scores_when_no_side_has_edges() -> None:
    gold = _plan(("q1", "What is two plus two?", ()), ("q2", "Name a prime number.", ()))
    assert score_plan(gold, gold).edge_f1 == 1.0
    chained = _plan(("q1", "What is two plus two?", ()), ("q2", "Name {q1} primes.", ("q1",)))
    score = score_plan(chained, gold)
    assert score.edge_precision == 0.0 and score.edge_recall == 1.0 and score.edge_f1 == 0.0
    flat = score_plan(gold, chained)
    assert flat.edge_precision == 1.0 and flat.edge_recall == 0.0 and flat.edge_f1 == 0.0


def test_unrelated_sub_queries_do_not_match() -> None:
    predicted = _plan(("x", "Tell me a joke about penguins.", ()))
    score = score_plan(predicted, GOLD)
    assert score.matches == ()
    assert score.sub_query_precision == 0.0 and score.sub_query_f1 == 0.0


def test_routing_accuracy_over_matched_sub_queries() -> None:
    routed = _plan(
        *((sq.id, sq.question, sq.depends_on) for sq in GOLD.sub_queries),
        experts={"q1": "generalist", "q2": "physicist"},  # q2 wrong, q3 unrouted
    )
    score = score_plan(routed, GOLD, gold_domains=DOMAINS, domain_experts=EXPERTS)
    assert score.routing_accuracy == pytest.approx(1 / 3)
    # Domains without an expert are not judged.
    only_physics = score_plan(
        routed, GOLD, gold_domains=DOMAINS, domain_experts={"physics": "physicist"}
    )
    assert only_physics.routing_accuracy == 0.0
    assert (
        score_plan(routed, GOLD, gold_domains=DOMAINS, domain_experts={}).routing_accuracy is None
    )


def test_item_plan_scores_use_parts_or_only_the_hop_count() -> None:
    gold = _plan(("q1", CHOICE.prompt, ()), ("q2", NUMBER.question, ()))
    item = _item((CHOICE, NUMBER), gold)
    routed = _plan(
        ("q1", CHOICE.prompt, ()),
        ("q2", NUMBER.question, ()),
        experts={"q1": "physicist", "q2": "mathematician"},
    )
    experts = {"physics": "physicist", "math": "mathematician"}
    assert score_item_plan(item, routed, domain_experts=experts).routing_accuracy == 1.0
    multihop = _item((TEXT,), None, kind="multihop")
    three = _plan(("q1", "a", ()), ("q2", "b", ()), ("q3", "c", ()))
    score = score_item_plan(multihop, three)
    assert score.n_gold == 2 and score.count_error == 1 and score.count_match is False
    assert score.sub_query_f1 is None and score.edge_f1 is None
    unknown = score_item_plan(multihop.model_copy(update={"hops": None}), three)
    assert unknown.count_error is None and unknown.count_match is None
