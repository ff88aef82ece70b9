"""The generator's shape router: features, fitting, saving, and the generator handing each
question to its shape's model (sync, async, batched evaluation, a failing router)."""

from __future__ import annotations

import asyncio
import json
import logging
from itertools import pairwise
from pathlib import Path

import pytest
from fakes import KeywordEmbeddings, needs_data, plan_json, recording_llm
from langchain_core.runnables import RunnableLambda

from langchain_complm.decompose import SubQueryGenerator
from langchain_complm.decompose.shapes import ShapeRouter, phrasing_counts, phrasing_features
from langchain_complm.evaluation.plans import PlanExample
from langchain_complm.plan import Plan
from langchain_complm.training.data import TrainingPair, target_to_plan
from langchain_complm.training.evaluate import evaluate_generator
from langchain_complm.training.shapes import MULTIHOP_KINDS, fit_shape_router

FILMS = ["Amadeus", "Casablanca", "Vertigo", "Jaws", "Alien", "Psycho", "Heat", "Rocky"]
TOPICS = ["the sum of 3 and 4", "a symptom of flu", "the capital of Peru", "a prime number"]


def _pair(query: str, kind: str) -> TrainingPair:
    return TrainingPair(query=query, target=plan_json(("q1", query, [])), kind=kind)


def _pairs() -> list[TrainingPair]:
    multihop = [
        _pair(f"Where was the director of the film {film} born?", "multihop_chain")
        for film in FILMS
    ] + [
        _pair(f"Which film came out first, {a} or {b}?", "multihop_comparison")
        for a, b in pairwise(FILMS)
    ]
    compound = [
        _pair(f"What is {a}, and what is {b}?", "template_parallel")
        for a in TOPICS
        for b in TOPICS
        if a != b
    ]
    return multihop + compound


@pytest.fixture(scope="module")
def router() -> ShapeRouter:
    return fit_shape_router(_pairs(), KeywordEmbeddings(), min_count=2)


def test_phrasing_counts_words_pairs_and_separators() -> None:
    counts = phrasing_counts("Who won? Who lost; and why")
    assert counts["who"] == 2 and counts["?"] == 1 and counts[";"] == 1
    assert counts["who won"] == 1 and counts["won ?"] == 1 and counts["and why"] == 1


def test_phrasing_features_are_unit_length_over_known_grams() -> None:
    features = phrasing_features("the film the film unknown", {"the": 1.0, "film": 2.0})
    assert set(features) == {"the", "film"}
    assert sum(v * v for v in features.values()) == pytest.approx(1.0)
    assert features["film"] == pytest.approx(2 * features["the"])
    assert phrasing_features("nothing known", {"the": 1.0}) == {}


def test_fitted_router_names_the_shapes_of_new_questions(router: ShapeRouter) -> None:
    # Films and topics it was not fitted on: the phrasing decides.
    assert router.invoke("Where was the director of the film Titanic born?") == "multihop"
    assert router.invoke("Which film came out first, Titanic or Fargo?") == "multihop"
    assert router.invoke("What is the boiling point of water, and what is a noun?") == "compound"
    assert router.batch(["Which film came out first, Up or Cars?"]) == ["multihop"]


def test_the_threshold_lives_on_the_route(router: ShapeRouter) -> None:
    question = "Where was the director of the film Titanic born?"
    score = router.score(question, KeywordEmbeddings().embed_query(question))
    assert router.model_copy(update={"threshold": score}).invoke(question) == "multihop"
    above = min(0.999, score + (1 - score) / 2)
    assert router.model_copy(update={"threshold": above}).invoke(question) == "compound"


def test_saved_router_scores_the_same(router: ShapeRouter, tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    router.save(path, "embedded:minilm")
    data = json.loads(path.read_text())
    assert data["embeddings"] == "embedded:minilm" and data["route"] == "multihop"
    loaded = ShapeRouter.from_file(path, KeywordEmbeddings())
    for pair in _pairs():
        vector = KeywordEmbeddings().embed_query(pair.query)
        assert loaded.score(pair.query, vector) == pytest.approx(
            router.score(pair.query, vector), abs=1e-4
        )


def test_fitting_needs_both_shapes() -> None:
    only = [p for p in _pairs() if p.kind in MULTIHOP_KINDS]
    with pytest.raises(ValueError, match="both shapes"):
        fit_shape_router(only, KeywordEmbeddings())


def test_bad_router_files_and_embeddings_are_named(router: ShapeRouter, tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match=r"other\.json: not a shape router"):
        ShapeRouter.from_file(path, KeywordEmbeddings())
    with pytest.raises(ValueError, match=r"fitted on \d+-dimensional embeddings.* 3 dim"):
        router.score("Who?", [0.1, 0.2, 0.3])


COMPOUND = "What is 2+2, and who wrote Hamlet?"
MULTIHOP = "Where was the director of Amadeus born?"
CHAIN = plan_json(("q1", "Who directed Amadeus?", []), ("q2", "Where was {q1} born?", ["q1"]))
PARALLEL = plan_json(("q1", "What is 2+2?", []), ("q2", "Who wrote Hamlet?", []))


def _shapes(question: str) -> str:
    return "multihop" if "director" in question else "compound"


def _generator(**overrides: object) -> tuple[SubQueryGenerator, object, object]:
    compound, multihop = recording_llm(PARALLEL), recording_llm(CHAIN)
    options: dict[str, object] = {
        "llm": compound,
        "shape_router": RunnableLambda(_shapes),
        "shape_llms": {"multihop": multihop},
        "repair": False,
    }
    return SubQueryGenerator(**(options | overrides)), compound, multihop


def _questions(plan: Plan) -> list[str]:
    return [sq.question for sq in plan.sub_queries]


def test_each_shape_is_planned_by_its_model() -> None:
    generator, compound, multihop = _generator()
    assert _questions(generator.invoke(MULTIHOP)) == [
        "Who directed Amadeus?",
        "Where was {q1} born?",
    ]
    assert _questions(generator.invoke(COMPOUND)) == ["What is 2+2?", "Who wrote Hamlet?"]
    assert len(multihop.prompts) == 1 and MULTIHOP in multihop.prompts[0][-1].content  # type: ignore[attr-defined]
    assert len(compound.prompts) == 1 and COMPOUND in compound.prompts[0][-1].content  # type: ignore[attr-defined]


def test_async_calls_route_on_the_event_loop() -> None:
    seen: list[str] = []

    async def shapes(question: str) -> str:
        seen.append(question)
        return _shapes(question)

    generator, _, _ = _generator(shape_router=RunnableLambda(_shapes, afunc=shapes))

    async def both() -> list[Plan]:
        return await asyncio.gather(generator.ainvoke(MULTIHOP), generator.ainvoke(COMPOUND))

    chain, parallel = asyncio.run(both())
    assert len(chain.sub_queries) == 2 and chain.sub_queries[1].depends_on == ("q1",)
    assert not any(sq.depends_on for sq in parallel.sub_queries)
    assert sorted(seen) == sorted([MULTIHOP, COMPOUND])


def test_a_shape_without_a_model_and_a_failing_router_fall_to_llm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    generator, compound, multihop = _generator(shape_router=RunnableLambda(lambda q: "bridge"))
    assert len(generator.invoke(MULTIHOP).sub_queries) == 2
    assert len(compound.prompts) == 1 and not multihop.prompts  # type: ignore[attr-defined]

    def broken(question: str) -> str:
        raise RuntimeError("embedding server down")

    generator, compound, multihop = _generator(shape_router=RunnableLambda(broken))
    with caplog.at_level(logging.WARNING):
        plan = generator.invoke(MULTIHOP)
    assert plan.fallback_reason is None and len(compound.prompts) == 1  # type: ignore[attr-defined]
    assert "shape router failed" in caplog.text and "embedding server down" in caplog.text


def test_evaluation_batches_each_shape_with_its_model() -> None:
    generator, compound, multihop = _generator()
    gold_chain = target_to_plan(CHAIN, MULTIHOP)
    gold_parallel = target_to_plan(PARALLEL, COMPOUND)
    examples = [
        PlanExample(query=MULTIHOP, kind="chain", gold=gold_chain),
        PlanExample(query=COMPOUND, kind="parallel", gold=gold_parallel),
    ]
    report = evaluate_generator(generator, examples, batch_size=8, repair=False)
    assert [row["question_shape"] for row in report.rows] == ["multihop", "compound"]
    assert [row["count_match"] for row in report.rows] == [1.0, 1.0]
    assert len(compound.prompts) == 1 and len(multihop.prompts) == 1  # type: ignore[attr-defined]


@needs_data
def test_train_shape_router_command_fits_on_training_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_complm import cli
    from langchain_complm.models import embedded

    asked: list[str] = []

    def embeddings_for(name: str) -> KeywordEmbeddings:
        asked.append(name)
        return KeywordEmbeddings()

    monkeypatch.setattr(embedded, "embeddings_for", embeddings_for)
    out = tmp_path / "router.json"
    code = cli.main(["train-shape-router", "--out", str(out), "--n-train", "120", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert asked == ["embedded:minilm"] and "grams" in captured.out
    router = ShapeRouter.from_file(out, KeywordEmbeddings())
    assert json.loads(out.read_text())["embeddings"] == "embedded:minilm"
    assert router.invoke("Which came out first, the film Jaws or the film Alien?") == "multihop"
