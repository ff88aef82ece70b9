"""Two-step routing: categories, then an expert of the category by a selection policy; the
generalist for uncertain categories; both steps on every decision; in the pipeline."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fakes import KEYWORDS, KeywordEmbeddings, RecordingExpert, fake_llm, plan_json
from langchain_core.runnables import RunnableLambda

from langchain_complm import CompLLMOutput, Expert, ExpertProfile, Plan, SubQuery, create_comp_llm
from langchain_complm.concurrency import ExpertLoad
from langchain_complm.plan import ExpertChoice
from langchain_complm.route import (
    BudgetPolicy,
    Category,
    LeastLoadedPolicy,
    SelectionPolicy,
    TwoStepRouter,
)

QUESTIONS = {
    "math": "What is the sum when you add 3 plus 4?",
    "medicine": "Which drug can treat the symptom of this disease?",
    "history": "Which king started the war that ended the empire?",
}
SIZES = {"small": (100, 1.0), "large": (1_000, 10.0)}


def categories(threshold: float | None = None) -> list[Category]:
    experts = {
        "math": ("math-small", "math-large"),
        "medicine": ("medicine-small", "medicine-large"),
        "history": ("history",),
    }
    return [
        Category(
            name=name,
            description=f"Questions about {name}: " + ", ".join(words),
            examples=tuple(f"A {w} question" for w in words[:3]),
            experts=experts[name],
            threshold=threshold,
        )
        for name, words in KEYWORDS.items()
    ]


def experts(**declared: Any) -> list[ExpertProfile]:
    out = []
    for domain in ("math", "medicine"):
        for size, (parameters, cost) in SIZES.items():
            fields = {"parameters": parameters, "cost": cost} | declared
            out.append(ExpertProfile(name=f"{domain}-{size}", **fields))
    out += [ExpertProfile(name="history"), ExpertProfile(name="general")]
    return out


def router(embeddings: KeywordEmbeddings, **kwargs: Any) -> TwoStepRouter:
    kwargs.setdefault("experts", experts())
    kwargs.setdefault("categories", categories())
    return TwoStepRouter(embeddings=embeddings, **kwargs)


# --- step one and the generalist ------------------------------------------------------------


def test_both_steps_are_recorded_on_every_decision(embeddings: KeywordEmbeddings) -> None:
    decisions = router(embeddings, fallback_expert="general").route(list(QUESTIONS.values()))
    assert [d.category.name for d in decisions if d.category] == list(QUESTIONS)
    assert [d.expert for d in decisions] == ["math-large", "medicine-large", "history"]
    for decision in decisions:
        assert decision.category is not None and decision.selection is not None
        assert list(decision.scores) == list(KEYWORDS)
        assert decision.score == decision.category.score == max(decision.scores.values())
        assert decision.category.uncertain is False and decision.fallback is False
        assert decision.strategy == "centroid"
        assert decision.routed_to == decision.category.name
    math = decisions[0].selection
    assert math is not None
    assert (math.policy, math.measure, math.within_budget) == ("budget", "parameters", True)
    assert math.candidates == {"math-small": 100.0, "math-large": 1000.0}
    assert "largest" in math.reason


def test_an_uncertain_category_goes_to_the_generalist(embeddings: KeywordEmbeddings) -> None:
    two_step = router(embeddings, categories=categories(threshold=0.65), fallback_expert="general")
    unclear, clear = two_step.route(["Tell me a joke about cats", QUESTIONS["math"]])
    assert unclear.expert == "general" and unclear.fallback is True
    assert unclear.category is not None and unclear.category.uncertain is True
    assert unclear.category.threshold == 0.65 and unclear.category.score < 0.65
    assert unclear.selection is not None and unclear.selection.policy == "generalist"
    assert unclear.routed_to == "general"
    assert (clear.expert, clear.fallback) == ("math-large", False)


def test_the_global_threshold_applies_to_categories_without_one(
    embeddings: KeywordEmbeddings,
) -> None:
    cats = categories()
    cats[0] = cats[0].model_copy(update={"threshold": 0.0})
    two_step = router(embeddings, categories=cats, threshold=1.01, fallback_expert="general")
    math, medicine = two_step.route([QUESTIONS["math"], QUESTIONS["medicine"]])
    assert (math.expert, math.fallback) == ("math-large", False)
    assert (medicine.expert, medicine.fallback) == ("general", True)


# --- step two: selection policies -----------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expert", "within"),
    [
        (BudgetPolicy(), "math-large", True),
        (BudgetPolicy(max_parameters=500), "math-small", True),
        (BudgetPolicy(max_parameters=5_000), "math-large", True),
        (BudgetPolicy(max_parameters=5_000, prefer="smallest"), "math-small", True),
        (BudgetPolicy(max_parameters=50), "math-small", False),
        (BudgetPolicy(max_cost=5.0), "math-small", True),
    ],
    ids=["no-budget", "small-budget", "big-budget", "smallest", "none-fits", "cost"],
)
def test_budget_policy_picks_within_the_category(
    policy: BudgetPolicy, expert: str, within: bool, embeddings: KeywordEmbeddings
) -> None:
    (decision,) = router(embeddings, policy=policy).route([QUESTIONS["math"]])
    assert decision.expert == expert
    assert decision.selection is not None and decision.selection.within_budget is within


def test_budget_policy_sizes_by_cost_or_order_when_parameters_are_unknown(
    embeddings: KeywordEmbeddings,
) -> None:
    (by_cost,) = router(embeddings, experts=experts(parameters=None)).route([QUESTIONS["math"]])
    assert by_cost.expert == "math-large"
    assert by_cost.selection is not None and by_cost.selection.measure == "cost"
    unsized = experts(parameters=None, cost=None)
    (by_order,) = router(embeddings, experts=unsized).route([QUESTIONS["medicine"]])
    assert by_order.expert == "medicine-small"  # the category's first
    assert by_order.selection is not None and by_order.selection.measure == "order"


def test_a_budget_needs_the_sizes_it_limits(embeddings: KeywordEmbeddings) -> None:
    with pytest.raises(ValueError, match="a parameters budget needs the parameters of every"):
        router(embeddings, experts=experts(parameters=None), policy=BudgetPolicy(max_parameters=9))


def test_least_loaded_spreads_one_plan_and_avoids_busy_experts(
    embeddings: KeywordEmbeddings,
) -> None:
    two_step = router(embeddings, policy=LeastLoadedPolicy())
    first, second, third = two_step.route([QUESTIONS["math"]] * 3)
    # Ties go to the smaller expert; each pick counts as load for the next.
    assert [first.expert, second.expert, third.expert] == ["math-small", "math-large", "math-small"]
    assert second.selection is not None
    assert second.selection.candidates == {"math-small": 1.0, "math-large": 0.0}
    with two_step.load.track("math-small"), two_step.load.track("math-small"):
        (busy,) = two_step.route([QUESTIONS["math"]])
        assert busy.expert == "math-large"
    assert two_step.load["math-small"] == 0


def test_policies_by_kind_and_a_custom_policy(embeddings: KeywordEmbeddings) -> None:
    class Last(SelectionPolicy):
        kind: str = "last"

        def select(self, candidates: Any, in_flight: Any) -> tuple[str, ExpertChoice]:
            name = candidates[-1].name
            return name, ExpertChoice(
                policy="last", measure="order", candidates={name: 0.0}, reason="last"
            )

    (decision,) = router(embeddings, policy=Last()).route([QUESTIONS["medicine"]])
    assert decision.expert == "medicine-large" and decision.selection.policy == "last"
    assert isinstance(router(embeddings, policy="least_loaded").policy, LeastLoadedPolicy)
    budget = router(embeddings, policy={"kind": "budget", "max_cost": 2}).policy
    assert isinstance(budget, BudgetPolicy) and budget.max_cost == 2
    with pytest.raises(ValueError, match="unknown selection policy 'random'"):
        router(embeddings, policy="random")


# --- validation, fitting, calibration, evaluation -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": []}, "needs at least one category"),
        ({"categories": [*categories(), categories()[0]]}, "duplicate category names: math"),
        ({"experts": experts()[1:]}, "category 'math': unknown expert 'math-small'"),
        ({"fallback_expert": "nobody"}, "fallback_expert: unknown expert 'nobody'"),
        ({"threshold": 0.3}, "a routing threshold needs a fallback_expert"),
        ({"categories": categories(threshold=0.3)}, "a routing threshold needs a fallback"),
        ({"experts": []}, "TwoStepRouter needs at least one expert"),
    ],
    ids=["none", "duplicate", "unknown-expert", "unknown-fallback", "global", "own", "no-experts"],
)
def test_construction_errors(
    kwargs: dict[str, Any], message: str, embeddings: KeywordEmbeddings
) -> None:
    with pytest.raises(ValueError, match=message):
        router(embeddings, **kwargs)


def test_category_needs_experts_and_a_name() -> None:
    with pytest.raises(ValueError, match="at least 1 item"):
        Category(name="math", experts=())
    with pytest.raises(ValueError, match="category name must not be empty"):
        Category(name=" ", experts=("a",))


def test_fit_calibrate_and_evaluate_use_category_labels(embeddings: KeywordEmbeddings) -> None:
    two_step = router(embeddings, strategy="knn", fallback_expert="general")
    two_step.fit(["Did the patient, a patient king, rest?"], ["medicine"])
    assert two_step.route(["Did the patient, a patient king, rest?"])[0].category.name == (
        "medicine"
    )
    texts = [*QUESTIONS.values(), "Tell me a joke about cats"]
    labels = [*QUESTIONS, "general"]
    thresholds = two_step.calibrate(texts, labels)
    assert set(thresholds) == set(KEYWORDS)
    assert {c.name: c.threshold for c in two_step.categories} == thresholds
    result = two_step.evaluate(texts, labels)
    assert result.accuracy == 1.0 and result.labels[-1] == "general"
    with pytest.raises(ValueError, match="labels that are not routes: math-small"):
        two_step.fit(["x"], ["math-small"])


def test_route_gold_still_selects_within_the_category(embeddings: KeywordEmbeddings) -> None:
    two_step = router(
        embeddings,
        policy=BudgetPolicy(max_parameters=500),
        threshold=2.0,
        fallback_expert="general",
    )
    (decision,) = two_step.route_gold(["whatever"], ["medicine"])
    assert decision.expert == "medicine-small" and decision.strategy == "gold"
    assert decision.fallback is False and embeddings.query_calls == []


# --- in the pipeline ------------------------------------------------------------------------


def test_the_pipeline_runs_the_chosen_expert_and_counts_its_load(
    embeddings: KeywordEmbeddings,
) -> None:
    load_seen: dict[str, int] = {}
    holder: dict[str, TwoStepRouter] = {}

    def answering(name: str) -> Expert:
        fake = RecordingExpert(name)

        def call(messages: Any) -> str:
            load_seen[name] = holder["router"].load[name]
            return fake.invoke_sync(messages)

        return Expert(name=name, llm=RunnableLambda(call, name=name))

    names = [e.name for e in experts()]
    two_step = router(embeddings, experts=[answering(n) for n in names], policy=LeastLoadedPolicy())
    holder["router"] = two_step
    comp = create_comp_llm(
        two_step.experts,
        generator=fake_llm(
            plan_json(("q1", QUESTIONS["math"], []), ("q2", QUESTIONS["math"] + " again", []))
        ),
        router=two_step,
        aggregator=fake_llm("final"),
    )
    out = CompLLMOutput.model_validate(comp.invoke("two sums"))
    assert [d.expert for d in out.routing] == ["math-small", "math-large"]
    assert {r.expert for r in out.results.values()} == {"math-small", "math-large"}
    assert load_seen == {"math-small": 1, "math-large": 1}  # counted while running
    assert two_step.load["math-small"] == two_step.load["math-large"] == 0


def test_expert_load_counts_across_threads() -> None:
    load = ExpertLoad()
    inside = threading.Barrier(5)
    done = threading.Event()

    def work() -> None:
        with load.track("a"):
            inside.wait()
            done.wait(5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    inside.wait()
    assert load["a"] == 4 and load["b"] == 0 and "'a': 4" in repr(load)
    done.set()
    for t in threads:
        t.join(5)
    assert load["a"] == 0


def test_routed_plan_keeps_both_steps_through_json(embeddings: KeywordEmbeddings) -> None:
    plan = Plan(query="q", sub_queries=(SubQuery(id="q1", question=QUESTIONS["history"]),))
    routed = router(embeddings).invoke(plan)
    again = Plan.model_validate_json(routed.model_dump_json())
    assert again == routed and again.sub_queries[0].route.category.name == "history"


def test_plan_drawing_names_the_category(embeddings: KeywordEmbeddings) -> None:
    two_step = router(embeddings, categories=categories(threshold=0.65), fallback_expert="general")
    plan = Plan(
        query="q",
        sub_queries=(
            SubQuery(id="q1", question=QUESTIONS["math"]),
            SubQuery(id="q2", question="Tell me a joke about cats"),
        ),
    )
    routed = two_step.invoke(plan)
    top = routed.by_id["q2"].route.category.name
    assert routed.to_text().splitlines() == [
        f"q1: {QUESTIONS['math']}  [math-large {routed.by_id['q1'].score:.2f} via math]",
        f"q2: Tell me a joke about cats  [general {routed.by_id['q2'].score:.2f} uncertain {top}]",
    ]
