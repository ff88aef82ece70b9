"""Plan: DAG validation, graph helpers, rendering, drawings and serialization."""

from __future__ import annotations

import itertools
import re

import pytest
from pydantic import ValidationError

from langchain_complm import Plan, PlanValidationError, RoutingDecision, SubQuery
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, invalid_text


def sq(sq_id: str, question: str | None = None, *deps: str) -> SubQuery:
    return SubQuery(id=sq_id, question=question or f"question {sq_id}?", depends_on=deps)


def plan(*sub_queries: SubQuery, query: str = "the query") -> Plan:
    return Plan(query=query, sub_queries=sub_queries)


def decision(sq_id: str, question: str, expert: str, score: float) -> RoutingDecision:
    return RoutingDecision(
        sub_query_id=sq_id,
        question=question,
        expert=expert,
        score=score,
        scores={expert: score, "other": score / 2},
    )


# q1 -> q2, q1 -> q3, (q2, q3) -> q4; q5 independent.
DIAMOND = plan(
    sq("q1"),
    sq("q2", "Use {q1}.", "q1"),
    sq("q3", None, "q1"),
    sq("q4", "Combine {q2} and {q3}.", "q2", "q3"),
    sq("q5"),
)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_plan", "message"),
    [
        pytest.param(plan(), "no sub-queries", id="empty"),
        pytest.param(plan(sq("1q")), "invalid sub-query id '1q'", id="id-starts-with-digit"),
        pytest.param(plan(sq("")), "invalid sub-query id ''", id="id-empty"),
        pytest.param(plan(sq("q 1")), "invalid sub-query id 'q 1'", id="id-with-space"),
        pytest.param(plan(sq("q.1")), "invalid sub-query id 'q.1'", id="id-with-dot"),
        pytest.param(plan(sq("{q1}")), "invalid sub-query id '{q1}'", id="id-with-braces"),
        pytest.param(plan(sq("q1"), sq("q2"), sq("q1")), "duplicate sub-query id 'q1'", id="dup"),
        pytest.param(
            plan(sq("q1"), sq("q2", None, "q9")),
            "sub-query 'q2' depends on unknown sub-query 'q9'",
            id="unknown-dependency",
        ),
        pytest.param(
            plan(sq("q1"), sq("q2", None, "q2")), "sub-query 'q2' depends on itself", id="self"
        ),
        pytest.param(
            plan(sq("q1"), sq("q2", "What about {q1}?")),
            "sub-query 'q2' uses placeholder {q1} but does not depend on 'q1'",
            id="placeholder-without-dependency",
        ),
        pytest.param(
            plan(sq("q1"), sq("q2"), sq("q3", "{q1} vs {q2}", "q1")),
            "sub-query 'q3' uses placeholder {q2} but does not depend on 'q2'",
            id="second-placeholder-without-dependency",
        ),
        pytest.param(
            plan(sq("q1"), SubQuery(id="q2", question="   ")),
            "sub-query 'q2' has an empty question",
            id="blank-question",
        ),
        pytest.param(
            plan(SubQuery(id="q1", question="")),
            "sub-query 'q1' has an empty question",
            id="empty-question",
        ),
    ],
)
def test_validate_dag_rejects_with_a_message_naming_the_problem(
    bad_plan: Plan, message: str
) -> None:
    with pytest.raises(PlanValidationError) as info:
        bad_plan.validate_dag()
    assert message in str(info.value)


def test_plan_validation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        plan().validate_dag()


def test_default_cap_on_sub_queries() -> None:
    at_cap = plan(*(sq(f"q{i}") for i in range(1, DEFAULT_MAX_SUB_QUERIES + 1)))
    assert at_cap.validate_dag() is at_cap
    over = plan(*(sq(f"q{i}") for i in range(1, DEFAULT_MAX_SUB_QUERIES + 2)))
    with pytest.raises(PlanValidationError, match=r"more than the cap of 8"):
        over.validate_dag()


def test_configurable_cap_on_sub_queries() -> None:
    three = plan(sq("q1"), sq("q2"), sq("q3"))
    with pytest.raises(PlanValidationError) as info:
        three.validate_dag(max_sub_queries=2)
    assert "plan has 3 sub-queries, more than the cap of 2" in str(info.value)
    assert three.validate_dag(max_sub_queries=3) is three
    many = plan(*(sq(f"q{i}") for i in range(1, 21)))
    assert many.validate_dag(max_sub_queries=None) is many
    assert many.validate_dag(max_sub_queries=20) is many


def _cycle_in(message: str) -> list[str]:
    match = re.fullmatch(r"dependency cycle: (.+)", message)
    assert match, message
    return match.group(1).split(" -> ")


def _assert_is_cycle(the_plan: Plan, cycle: list[str], members: set[str]) -> None:
    assert cycle[0] == cycle[-1]
    assert set(cycle) == members
    assert len(cycle) == len(members) + 1
    for node, dep in itertools.pairwise(cycle):
        assert dep in the_plan.by_id[node].depends_on, (node, dep)


@pytest.mark.parametrize(
    ("cyclic", "members"),
    [
        pytest.param(plan(sq("q1", None, "q2"), sq("q2", None, "q1")), {"q1", "q2"}, id="two"),
        pytest.param(
            plan(sq("q1", None, "q3"), sq("q2", None, "q1"), sq("q3", None, "q2")),
            {"q1", "q2", "q3"},
            id="three",
        ),
        pytest.param(
            plan(sq("q1"), sq("q2", None, "q1", "q3"), sq("q3", None, "q2"), sq("q4", None, "q2")),
            {"q2", "q3"},
            id="cycle-not-through-the-root",
        ),
    ],
)
def test_cycles_are_rejected_and_listed(cyclic: Plan, members: set[str]) -> None:
    with pytest.raises(PlanValidationError) as info:
        cyclic.validate_dag()
    _assert_is_cycle(cyclic, _cycle_in(str(info.value)), members)


def test_two_node_cycle_message() -> None:
    with pytest.raises(PlanValidationError, match=r"^dependency cycle: q1 -> q2 -> q1$"):
        plan(sq("q1", None, "q2"), sq("q2", None, "q1")).validate_dag()


@pytest.mark.parametrize(
    "valid",
    [
        pytest.param(DIAMOND, id="diamond"),
        pytest.param(plan(sq("q1")), id="single"),
        pytest.param(plan(sq("q2", "From {q1}", "q1"), sq("q1")), id="dependency-listed-later"),
        pytest.param(plan(sq("a"), sq("B_2", None, "a"), sq("c-3", "{B_2}", "B_2")), id="ids"),
        pytest.param(plan(sq("q1"), sq("q2", "No placeholder", "q1")), id="dep-no-placeholder"),
    ],
)
def test_valid_plans_pass_and_return_the_plan(valid: Plan) -> None:
    assert valid.validate_dag() is valid


def test_braces_that_name_no_dependency_are_text() -> None:
    # Code, templates and math in a question; the sub-query's own id cannot be a parent.
    for text in ("What does f'{name}' print?", "Solve {x} + 1 = 3", "Is {q1} a set?"):
        p = plan(sq("q1", text))
        assert p.validate_dag() is p
        assert p.sub_queries[0].placeholders == []
        assert p.sub_queries[0].render({"q1": "x", "name": "y"}) == text
    mixed = sq("q2", "Given {q1}, what does '{name}'.format(name=1) print?", "q1")
    assert mixed.placeholders == ["q1"]
    assert (
        mixed.render({"q1": "A", "name": "B"})
        == "Given A, what does '{name}'.format(name=1) print?"
    )
    assert Plan.single("What does f'{name}' print?").validate_dag()


def test_lone_surrogates_are_rejected_with_their_position() -> None:
    with pytest.raises(
        PlanValidationError,
        match=r"question of sub-query 'q1' has a lone surrogate \(U\+D800\) at position 2",
    ):
        plan(sq("q1", "ab\ud800c")).validate_dag()
    assert invalid_text("a proper pair: \U0001f600") is None


CHAIN = 3000


def test_a_long_chain_listed_in_reverse_needs_no_recursion() -> None:
    chain = plan(
        *(sq(f"q{i}", None, *([f"q{i - 1}"] if i > 1 else [])) for i in range(CHAIN, 0, -1))
    )
    assert chain.validate_dag(max_sub_queries=None) is chain
    assert chain.levels() == [[f"q{i}"] for i in range(1, CHAIN + 1)]
    assert chain.topological_order() == [f"q{i}" for i in range(1, CHAIN + 1)]
    assert chain.critical_path() == ([f"q{i}" for i in range(1, CHAIN + 1)], float(CHAIN))
    assert chain.width == 1
    assert len(chain.to_text().splitlines()) == CHAIN


def test_a_long_cycle_is_reported_without_recursion() -> None:
    ring = plan(*(sq(f"q{i}", None, f"q{i % CHAIN + 1}") for i in range(CHAIN, 0, -1)))
    with pytest.raises(PlanValidationError, match="dependency cycle") as info:
        ring.validate_dag(max_sub_queries=None)
    assert len(_cycle_in(str(info.value))) == CHAIN + 1
    with pytest.raises(PlanValidationError, match="dependency cycle"):
        ring.levels()


def test_levels_of_an_invalid_plan_name_the_problem() -> None:
    with pytest.raises(PlanValidationError, match="unknown sub-query 'q9'"):
        plan(sq("q1"), sq("q2", None, "q9")).levels()


def test_numeric_placeholders_are_not_references() -> None:
    # "{1}" is not an id (ids start with a letter), so it needs no dependency.
    p = plan(sq("q1", "What is {1} in set notation?"))
    assert p.sub_queries[0].placeholders == []
    assert p.validate_dag() is p


# --- graph helpers --------------------------------------------------------------------------


def test_levels_topological_order_and_width() -> None:
    assert DIAMOND.levels() == [["q1", "q5"], ["q2", "q3"], ["q4"]]
    assert DIAMOND.topological_order() == ["q1", "q5", "q2", "q3", "q4"]
    assert DIAMOND.width == 2


def test_levels_use_the_longest_chain() -> None:
    # q3 depends on q1 directly and through q2: it sits on level 2, not 1.
    p = plan(sq("q1"), sq("q2", None, "q1"), sq("q3", None, "q1", "q2")).validate_dag()
    assert p.levels() == [["q1"], ["q2"], ["q3"]]
    assert p.width == 1


def test_topological_order_puts_dependencies_first_whatever_the_listing_order() -> None:
    p = plan(sq("q3", None, "q2"), sq("q2", None, "q1"), sq("q1"), sq("q4")).validate_dag()
    order = p.topological_order()
    assert sorted(order) == ["q1", "q2", "q3", "q4"]
    for item in p.sub_queries:
        for dep in item.depends_on:
            assert order.index(dep) < order.index(item.id)
    assert p.levels() == [["q1", "q4"], ["q2"], ["q3"]]


def test_width_of_independent_sub_queries() -> None:
    p = plan(sq("q1"), sq("q2"), sq("q3"), sq("q4", None, "q1"))
    assert p.width == 3
    assert plan().width == 0
    assert plan().levels() == []


def test_dependents() -> None:
    assert DIAMOND.dependents("q1") == ["q2", "q3"]
    assert DIAMOND.dependents("q2") == ["q4"]
    assert DIAMOND.dependents("q4") == []
    assert DIAMOND.dependents("q5") == []


def test_critical_path_with_unit_costs() -> None:
    path, total = DIAMOND.critical_path()
    assert total == 3.0
    assert len(path) == 3
    assert path[0] == "q1" and path[-1] == "q4" and path[1] in {"q2", "q3"}
    assert plan(sq("q1")).critical_path() == (["q1"], 1.0)


def test_critical_path_with_custom_costs() -> None:
    costs = {"q1": 1.0, "q2": 0.5, "q3": 4.0, "q4": 1.0, "q5": 2.0}
    assert DIAMOND.critical_path(costs) == (["q1", "q3", "q4"], 6.0)
    # A long independent sub-query becomes the critical path on its own.
    assert DIAMOND.critical_path({**costs, "q5": 10.0}) == (["q5"], 10.0)
    # Flip the branch weights: the path follows the expensive branch.
    path, total = DIAMOND.critical_path({**costs, "q2": 7.0})
    assert (path, total) == (["q1", "q2", "q4"], 9.0)


def test_critical_path_missing_costs_count_as_zero() -> None:
    path, total = DIAMOND.critical_path({"q3": 2.5, "q4": 1.0})
    assert total == 3.5
    assert path[-2:] == ["q3", "q4"]


# --- sub-queries ----------------------------------------------------------------------------


def test_placeholders_in_order_of_appearance_without_duplicates() -> None:
    item = sq("q4", "Compare {q2} with {q1}, then {q2} again; {not an id} {3}", "q1", "q2")
    assert item.placeholders == ["q2", "q1"]
    assert sq("q1", "No references here.").placeholders == []
    assert sq("x", "{a_1}{b-2}", "a_1", "b-2").placeholders == ["a_1", "b-2"]


def test_render_substitutes_stripped_answers() -> None:
    item = sq("q3", "Is {q1} older than {q2}? Also {q1}.", "q1", "q2")
    rendered = item.render({"q1": "  Alice\n", "q2": "Bob"})
    assert rendered == "Is Alice older than Bob? Also Alice."


def test_render_keeps_unknown_placeholders_and_does_not_recurse() -> None:
    item = sq("q3", "{q1} and {q2}", "q1", "q2")
    assert item.render({"q1": "x"}) == "x and {q2}"
    # An answer that itself looks like a placeholder is inserted verbatim.
    assert item.render({"q1": "{q2}", "q2": "y"}) == "{q2} and y"
    assert sq("q1", "plain").render({"q1": "ignored"}) == "plain"


def test_routed_sub_query_exposes_expert_and_score() -> None:
    item = sq("q1", "What is 2+2?")
    assert item.expert is None and item.score is None
    routed = item.model_copy(update={"route": decision("q1", "What is 2+2?", "math", 0.75)})
    assert routed.expert == "math"
    assert routed.score == 0.75


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        DIAMOND.sub_queries[0].question = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        DIAMOND.query = "changed"  # type: ignore[misc]


# --- single / fallback ----------------------------------------------------------------------


def test_single_plan() -> None:
    p = Plan.single("What is 2+2?")
    assert p.query == "What is 2+2?"
    assert [(s.id, s.question, s.depends_on) for s in p.sub_queries] == [("q1", "What is 2+2?", ())]
    assert not p.is_fallback
    assert p.fallback_reason is None
    assert p.validate_dag() is p


def test_single_fallback_plan() -> None:
    p = Plan.single("What is 2+2?", fallback_reason="ValueError: no JSON")
    assert p.is_fallback
    assert p.fallback_reason == "ValueError: no JSON"
    assert len(p.sub_queries) == 1
    assert not DIAMOND.is_fallback


# --- drawings -------------------------------------------------------------------------------


def test_mermaid_has_a_node_per_sub_query_and_an_edge_per_dependency() -> None:
    text = DIAMOND.to_mermaid()
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes = [line.strip() for line in lines if "[" in line]
    edges = sorted(line.strip() for line in lines if "-->" in line)
    assert len(nodes) == 5
    for item in DIAMOND.sub_queries:
        assert f'n_{item.id}["{item.id}: {item.question}"]' in nodes
    assert edges == sorted(["n_q1 --> n_q2", "n_q1 --> n_q3", "n_q2 --> n_q4", "n_q3 --> n_q4"])
    assert "<i>" not in text  # not routed: no experts shown


def test_mermaid_escapes_quotes_and_newlines_and_sanitizes_ids() -> None:
    p = plan(sq("q-1", 'Who said "hello"\nfirst?'), sq("q2", "After {q-1}", "q-1"))
    text = p.to_mermaid()
    assert 'n_q_d1["q-1: Who said #quot;hello#quot; first?"]' in text
    assert "n_q_d1 --> n_q2" in text
    body = text.split("\n", 1)[1]
    assert '"hello"' not in body
    assert all(line.count('"') == 2 for line in body.splitlines() if "[" in line)


def test_mermaid_node_ids_are_distinct_for_distinct_sub_query_ids() -> None:
    p = plan(sq("q-1"), sq("q_1")).validate_dag()
    node_ids = [line.split("[", 1)[0].strip() for line in p.to_mermaid().splitlines()[1:]]
    assert len(set(node_ids)) == 2


def test_mermaid_shows_experts_once_routed() -> None:
    p = plan(
        sq("q1", "What is 2+2?").model_copy(
            update={"route": decision("q1", "What is 2+2?", "math", 0.876)}
        ),
        sq("q2", "Which drug for {q1}?", "q1").model_copy(
            update={"route": decision("q2", "Which drug?", 'dr "house"', 0.5)}
        ),
    )
    text = p.to_mermaid()
    assert 'n_q1["q1: What is 2+2?<br/><i>math (0.88)</i>"]' in text
    assert 'n_q2["q2: Which drug for {q1}?<br/><i>dr #quot;house#quot; (0.50)</i>"]' in text
    assert "n_q1 --> n_q2" in text


def test_to_text_indents_by_level_and_lists_dependencies() -> None:
    assert DIAMOND.to_text().splitlines() == [
        "q1: question q1?",
        "q5: question q5?",
        "  q2: Use {q1}.  <- q1",
        "  q3: question q3?  <- q1",
        "    q4: Combine {q2} and {q3}.  <- q2, q3",
    ]


def test_to_text_shows_experts_once_routed() -> None:
    p = plan(
        sq("q1", "What is 2+2?").model_copy(
            update={"route": decision("q1", "What is 2+2?", "math", 0.876)}
        ),
        sq("q2", "Then {q1}?", "q1").model_copy(
            update={"route": decision("q2", "Then?", "history", 0.1)}
        ),
    )
    assert p.to_text().splitlines() == [
        "q1: What is 2+2?  [math 0.88]",
        "  q2: Then {q1}?  [history 0.10]  <- q1",
    ]


# --- serialization --------------------------------------------------------------------------


def test_json_round_trip() -> None:
    routed = plan(
        sq("q1", "What is 2+2?").model_copy(
            update={"route": decision("q1", "What is 2+2?", "math", 0.9)}
        ),
        sq("q2", "Double {q1}", "q1"),
        query="What is twice 2+2?",
    )
    for original in (
        routed,
        DIAMOND,
        Plan.single("q?", fallback_reason="RuntimeError: down"),
    ):
        restored = Plan.model_validate_json(original.model_dump_json())
        assert restored == original
        assert restored.sub_queries == original.sub_queries
        assert restored.fallback_reason == original.fallback_reason
        assert isinstance(restored.sub_queries, tuple)
        assert all(isinstance(s.depends_on, tuple) for s in restored.sub_queries)
        assert restored.to_text() == original.to_text()
    restored = Plan.model_validate_json(routed.model_dump_json())
    assert restored.sub_queries[0].route == routed.sub_queries[0].route
    assert restored.sub_queries[0].expert == "math"
    assert restored.sub_queries[1].route is None


def test_json_round_trip_after_by_id_was_cached() -> None:
    p = plan(sq("q1"), sq("q2", None, "q1")).validate_dag()  # validation reads by_id
    assert p.by_id["q2"].depends_on == ("q1",)
    restored = Plan.model_validate_json(p.model_dump_json())
    assert restored == p
    assert "by_id" not in p.model_dump()


def test_by_id_reflects_sub_queries_of_a_model_copy() -> None:
    # Regression: a cached by_id was carried over by model_copy (how the router annotates).
    p = plan(sq("q1", "old")).validate_dag()  # validation reads by_id
    copy = p.model_copy(update={"sub_queries": (sq("q1", "new"),)})
    assert copy.by_id["q1"].question == "new"
    assert copy.to_text() == "q1: new"
