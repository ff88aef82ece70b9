"""Accuracy benchmark harness: every system on a few items with fake models, parameter
accounting, resumable runs, scores and the report files. No model is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import KeywordEmbeddings, make_expert, plan_json
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from langchain_complm import Expert
from langchain_complm.aggregate import ResponseAggregator
from langchain_complm.benchmarks.runner import (
    load_predictions,
    predictions_path,
    run_benchmark,
    run_system,
    summarize,
)
from langchain_complm.benchmarks.systems import (
    SYSTEM_NAMES,
    CompLLMSystem,
    Components,
    Prediction,
    System,
    build_systems,
    domain_expert_map,
    drop_dependencies,
    load_components,
    route_gold_plan,
)
from langchain_complm.config import CompLLMConfig, ModelSpec
from langchain_complm.decompose.generator import SubQueryGenerator
from langchain_complm.evaluation import Item, build_dataset
from langchain_complm.plan import Plan, SubQuery
from langchain_complm.route.router import EmbeddingRouter

EXPERT_SIZE = 1_000
AGGREGATOR_SIZE = 5_000
ROUTER_SIZE = 300


class SizedChat(FakeListChatModel):
    """A fake chat model that cycles through its responses and declares a size."""

    num_parameters: int = EXPERT_SIZE


class SizedEmbeddings(KeywordEmbeddings):
    num_parameters = ROUTER_SIZE


@pytest.fixture(scope="module")
def items_p() -> list[Item]:
    return build_dataset("multiexpertqa-p", "test", 3, seed=0)


@pytest.fixture(scope="module")
def items_all() -> list[Item]:
    # The first items of this seed cover the parallel, chain and multihop kinds.
    items = build_dataset("multiexpertqa-all", "test", 12, seed=0)
    by_kind = {item.kind: item for item in items}
    assert set(by_kind) == {"parallel", "chain", "multihop"}
    return list(by_kind.values())


def make_components(generator_reply: str | None = None) -> Components:
    """Experts for every benchmark domain; the math one shares its model with the aggregator
    (one model, counted once)."""
    shared = SizedChat(responses=["Final: 16 and A) real"], num_parameters=AGGREGATOR_SIZE)
    experts = []
    for name in ("math", "medicine", "science", "law", "computer_science", "history", "general"):
        llm = shared if name == "math" else SizedChat(responses=[f"{name} says (A)"])
        experts.append(Expert(name=name, description=f"{name} questions", llm=llm))
    reply = generator_reply or plan_json(
        ("q1", "What is the sum asked first?", []),
        ("q2", "Multiply {q1} by two", ["q1"]),
    )
    generator = SubQueryGenerator(
        llm=SizedChat(responses=[reply], num_parameters=2_000),
        structured_output=False,
        repair=False,  # the fake plan is not about the items' questions
    )
    return Components(
        experts=experts,
        generator=generator,
        router=EmbeddingRouter(experts=experts, embeddings=SizedEmbeddings()),
        # A synthesizing aggregator with no coverage check: these tests count parameters
        # and read the fake model's answer as it is.
        aggregator=ResponseAggregator(llm=shared, mode="synthesize", check_coverage=False),
        chat_models=[("shared", shared)],
    )


def test_every_system_answers_every_item_kind(items_all: list[Item]) -> None:
    components = make_components()
    systems = build_systems(SYSTEM_NAMES, components)
    assert [s.name for s in systems] == [
        "complm",
        "complm-sequential",
        "monolithic:shared",
        "route-only",
        "no-context",
        "oracle",
        "gold-routing",
    ]
    for system in systems:
        for item in items_all:
            prediction = system.predict(item)
            assert prediction.item_id == item.id and prediction.system == system.name
            assert prediction.answer.strip()
            assert prediction.latency > 0
            assert prediction.error is None
            if system.name.startswith("monolithic"):
                assert prediction.plan is None and prediction.part_answers is None
            else:
                assert prediction.plan is not None
                assert all(sq.expert for sq in prediction.plan.sub_queries)
            # Survives the JSONL round trip.
            assert Prediction.model_validate_json(prediction.model_dump_json()) == prediction


def test_monolithic_one_system_per_distinct_model() -> None:
    components = make_components()
    components.chat_models = [("a", SizedChat(responses=["x"])), ("b", SizedChat(responses=["y"]))]
    names = [s.name for s in build_systems(["monolithic"], components)]
    assert names == ["monolithic:a", "monolithic:b"]
    with pytest.raises(ValueError, match="unknown system"):
        build_systems(["nope"], components)


def test_load_components_shares_the_default_model_and_lists_it_once() -> None:
    config = CompLLMConfig(
        models={"default": ModelSpec(), "big": ModelSpec()}, generator="big", aggregator="default"
    )
    made: list[str] = []

    def factory(name: str, spec: ModelSpec) -> SizedChat:
        made.append(name)
        return SizedChat(responses=["ok"], num_parameters=10 if name == "default" else 99)

    components = load_components(
        config, decomposer="llm", model_factory=factory, embeddings=SizedEmbeddings()
    )
    assert sorted(made) == ["big", "default"]  # one load per named model
    assert [label for label, _ in components.chat_models] == ["big", "default"]
    complm = build_systems(["complm"], components)[0]
    # generator "big" (99) + every expert and the aggregator on "default" (10) + router.
    assert complm.total_parameters == 99 + 10 + ROUTER_SIZE
    structural = load_components(
        config, decomposer="structural", model_factory=factory, embeddings=SizedEmbeddings()
    )
    assert made.count("big") == 1  # the rule-based decomposer needs no generator model
    assert build_systems(["complm"], structural)[0].total_parameters == 10 + ROUTER_SIZE


def test_parameter_accounting_counts_shared_models_once(items_p: list[Item]) -> None:
    components = make_components()
    experts = 6 * EXPERT_SIZE + AGGREGATOR_SIZE  # math shares the aggregator's model
    complm, route_only, oracle = build_systems(["complm", "route-only", "oracle"], components)
    assert complm.total_parameters == 2_000 + experts + ROUTER_SIZE
    assert oracle.total_parameters == experts + ROUTER_SIZE  # no generator
    assert route_only.total_parameters == experts + ROUTER_SIZE
    prediction = route_only.predict(items_p[0])
    assert prediction.active_parameters in {ROUTER_SIZE + EXPERT_SIZE, ROUTER_SIZE + 5_000}
    assert len(prediction.active_models) == 2
    prediction = oracle.predict(items_p[0])
    called = {sq.expert for sq in prediction.plan.sub_queries}  # type: ignore[union-attr]
    expected = ROUTER_SIZE + AGGREGATOR_SIZE + sum(EXPERT_SIZE for e in called if e != "math")
    assert prediction.active_parameters == expected
    assert "aggregator" in prediction.active_models
    # A small aggregator enumerates the answers without calling its model.
    components.aggregator = ResponseAggregator(llm=components.aggregator.llm)
    assert components.aggregator.resolved_mode() == "enumerate"
    (oracle,) = build_systems(["oracle"], components)
    prediction = oracle.predict(items_p[0])
    math_called = AGGREGATOR_SIZE if "math" in called else 0  # the aggregator's model
    assert prediction.active_parameters == expected - AGGREGATOR_SIZE + math_called
    assert "aggregator" not in prediction.active_models


def test_oracle_uses_the_gold_plan_and_maps_part_answers(items_p: list[Item]) -> None:
    oracle = CompLLMSystem(make_components(), "oracle", plan_source="gold")
    item = items_p[0]
    prediction = oracle.predict(item)
    assert prediction.plan is not None
    assert [sq.id for sq in prediction.plan.sub_queries] == [p.id for p in item.parts]
    assert prediction.part_answers is not None
    assert set(prediction.part_answers) == {p.id for p in item.parts}
    assert "decompose" in prediction.timings and "aggregate" in prediction.timings


def test_gold_routing_sends_every_part_to_its_domain_expert(items_all: list[Item]) -> None:
    components = make_components()
    # A threshold nothing reaches: the router alone would send everything to general.
    components.router = EmbeddingRouter(
        experts=components.experts,
        embeddings=SizedEmbeddings(),
        threshold=1.01,
        fallback_expert="general",
    )
    oracle, gold = build_systems(["oracle", "gold-routing"], components)
    expected = components.domain_experts
    for item in items_all:
        routed = gold.predict(item)
        assert routed.plan is not None
        decisions = {sq.id: sq.route for sq in routed.plan.sub_queries}
        assert {i: d.expert for i, d in decisions.items() if d} == {
            p.id: expected[p.domain] for p in item.parts if p.id in decisions
        }
        assert all(d and d.strategy == "gold" and not d.fallback for d in decisions.values())
        assert "router" not in routed.active_models
        by_router = oracle.predict(item)
        assert by_router.plan is not None and "router" in by_router.active_models
        assert {sq.expert for sq in by_router.plan.sub_queries} == {"general"}
    with pytest.raises(ValueError, match="gold routing needs the gold plan"):
        CompLLMSystem(components, "x", gold_routing=True)


def test_gold_routing_leaves_parts_without_a_route_to_the_router(items_p: list[Item]) -> None:
    components = make_components()
    item = items_p[0]
    assert item.gold_plan is not None
    only = {item.parts[0].domain: "history"}
    routed = route_gold_plan(components.router, item.gold_plan, item, only)
    first, *rest = routed.sub_queries
    assert first.route is not None and (first.expert, first.route.strategy) == ("history", "gold")
    assert rest and all(sq.route is not None and sq.route.strategy == "centroid" for sq in rest)


def test_no_context_drops_dependencies_and_placeholders() -> None:
    plan = Plan(
        query="x",
        sub_queries=(
            SubQuery(id="q1", question="How many eggs?"),
            SubQuery(id="q2", question="Double {q1}.", depends_on=("q1",)),
            SubQuery(id="q3", question="Add {q2} to {q1}.", depends_on=("q1", "q2")),
        ),
    ).validate_dag()
    flat = drop_dependencies(plan).validate_dag()
    assert [sq.depends_on for sq in flat.sub_queries] == [(), (), ()]
    assert flat.by_id["q2"].question == 'Double the answer to "How many eggs?".'
    assert flat.by_id["q3"].question == (
        'Add the answer to "Double the answer to "How many eggs?"." to the answer to '
        '"How many eggs?".'
    )
    assert flat.width == 3


def test_no_context_system_sends_no_parent_answer(items_p: list[Item]) -> None:
    recorded = make_components()
    recorded.experts = [make_expert(e.name)[0] for e in recorded.experts]
    recorded.router = EmbeddingRouter(experts=recorded.experts, embeddings=KeywordEmbeddings())
    complm, no_context = build_systems(["complm", "no-context"], recorded)
    with_context = complm.predict(items_p[0])
    without = no_context.predict(items_p[0])
    # A fake expert answers with the last line of its prompt.
    assert with_context.sub_answers is not None and without.sub_answers is not None
    parent_answer = with_context.sub_answers["q1"]
    assert parent_answer.split(" answer to ")[0] in with_context.sub_answers["q2"]
    assert (
        'Multiply the answer to "What is the sum asked first?" by two'
        in (without.sub_answers["q2"])
    )
    assert " answer to <" not in without.sub_answers["q2"].split(" answer to ", 1)[1]
    # The recorded plan is the generator's, dependency included (for the plan metrics).
    assert without.plan is not None and without.plan.by_id["q2"].depends_on == ("q1",)


def test_domain_expert_map_uses_science_for_physics() -> None:
    names = ["math", "medicine", "science", "law", "computer_science", "history", "general"]
    mapping = domain_expert_map(names)
    assert mapping["physics"] == "science"
    assert mapping["computer_science"] == "computer_science"
    assert domain_expert_map(["math", "general"])["law"] == "general"
    assert "law" not in domain_expert_map(["math"])


class Interrupting(System):
    """Wraps a system and raises KeyboardInterrupt at the k-th call."""

    def __init__(self, inner: System, stop_at: int | None) -> None:
        self.inner, self.stop_at, self.calls = inner, stop_at, 0
        self.name = inner.name

    @property
    def models(self) -> list[Any]:
        return self.inner.models

    def _predict(self, item: Item) -> Prediction:
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.inner._predict(item)


def test_run_is_resumable_after_an_interrupt(tmp_path: Path, items_all: list[Item]) -> None:
    inner = build_systems(["oracle"], make_components())[0]
    first = Interrupting(inner, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_system(first, items_all, tmp_path, progress=False)
    path = predictions_path(tmp_path, "oracle")
    assert len(path.read_text().splitlines()) == 2  # the two finished items were kept
    second = Interrupting(inner, stop_at=None)
    done = run_system(second, items_all, tmp_path, progress=False)
    assert second.calls == len(items_all) - 2  # finished items were skipped
    lines = path.read_text().splitlines()
    ids = [json.loads(line)["item_id"] for line in lines]
    assert sorted(ids) == sorted(item.id for item in items_all)  # no duplicates, all done
    assert list(done) == [item.id for item in items_all]
    third = Interrupting(inner, stop_at=None)
    run_system(third, items_all, tmp_path, progress=False)
    assert third.calls == 0


def test_a_line_cut_short_is_skipped_and_redone(tmp_path: Path, items_p: list[Item]) -> None:
    system = build_systems(["route-only"], make_components())[0]
    run_system(system, items_p[:2], tmp_path, progress=False)
    path = predictions_path(tmp_path, system.name)
    text = path.read_text()
    path.write_text(text + text.splitlines()[0][:40])  # a crash mid-write
    assert set(load_predictions(path)) == {items_p[0].id, items_p[1].id}
    done = run_system(system, items_p, tmp_path, progress=False)
    assert list(done) == [item.id for item in items_p]
    assert set(load_predictions(path)) == {item.id for item in items_p}


def test_errors_are_recorded_or_raised(tmp_path: Path, items_p: list[Item]) -> None:
    class Broken(Interrupting):
        def _predict(self, item: Item) -> Prediction:
            raise RuntimeError("model crashed")

    inner = build_systems(["complm"], make_components())[0]
    done = run_system(Broken(inner, None), items_p[:2], tmp_path, progress=False)
    assert all(p.error == "RuntimeError: model crashed" for p in done.values())
    summary = summarize("complm", items_p[:2], done)
    assert summary.errors == 2 and summary.accuracy == 0.0
    with pytest.raises(RuntimeError):
        run_system(Broken(inner, None), items_p, tmp_path, progress=False, on_error="raise")


def test_scores_and_report_files(tmp_path: Path, items_all: list[Item]) -> None:
    components = make_components()
    systems = build_systems(SYSTEM_NAMES, components)
    summaries = run_benchmark(
        systems, items_all, tmp_path, domain_experts=components.domain_experts, progress=False
    )
    assert [s.system for s in summaries] == [s.name for s in systems]
    for summary in summaries:
        assert summary.n == len(items_all) and summary.errors == 0
        assert summary.accuracy is not None and 0 <= summary.accuracy <= 1
        assert summary.total_parameters is not None and summary.latency_mean is not None
        assert summary.f1 is not None  # the multihop item has a free-text answer
        assert sum(summary.domain_counts.values()) >= len(items_all)
    oracle = summaries[-1]
    assert oracle.plan_f1 == 1.0 and oracle.edge_f1 == 1.0  # the gold plan itself
    assert oracle.routing is not None and oracle.sub_acc is not None
    assert summaries[2].plan_f1 is None  # monolithic: no plan
    md = (tmp_path / "results.md").read_text()
    assert "| oracle |" in md and "accuracy %" in md and "by domain" in md
    png = tmp_path / "accuracy_vs_parameters.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "results.json").read_text())
    assert [row["system"] for row in data] == [s.system for s in summaries]


def test_a_correct_answer_scores(items_p: list[Item]) -> None:
    item = items_p[1]  # two parts: a GSM8K number and a multiple-choice physics question
    gold = "\n".join(part.gold_text for part in item.parts)
    prediction = Prediction(
        item_id=item.id,
        system="x",
        answer=gold,
        latency=1.0,
        part_answers={p.id: p.gold_text for p in item.parts},
    )
    summary = summarize("x", [item], {item.id: prediction})
    assert summary.accuracy == 1.0 and summary.part_acc == 1.0 and summary.sub_acc == 1.0
    wrong = prediction.model_copy(update={"answer": "no idea", "part_answers": {}})
    summary = summarize("x", [item], {item.id: wrong})
    assert summary.accuracy == 0.0 and summary.sub_acc == 0.0
