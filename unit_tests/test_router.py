"""Embedding router: expert choice, score vectors, batching, thresholds, errors, events."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

import pytest
from fakes import KEYWORDS, KeywordEmbeddings, make_expert
from langchain_core.callbacks import BaseCallbackHandler

from langchain_complm import Expert, ExpertProfile, Plan, RoutingDecision, SubQuery
from langchain_complm.events import PROGRESS_EVENT
from langchain_complm.route import EmbeddingRouter, KNNStrategy

NAMES = list(KEYWORDS)  # math, medicine, history

QUESTIONS = {
    "math": "What is the sum when you add 3 plus 4?",
    "medicine": "Which drug can treat the symptom of this disease?",
    "history": "Which king started the war that ended the empire?",
}


def profiles() -> list[ExpertProfile]:
    return [
        ExpertProfile(
            name=name,
            description=f"Questions about {name}: " + ", ".join(words),
            examples=tuple(f"A {w} question" for w in words[:3]),
        )
        for name, words in KEYWORDS.items()
    ]


def experts() -> list[Expert]:
    return [make_expert(name)[0] for name in KEYWORDS]


def profile_texts(items: list[ExpertProfile]) -> list[str]:
    return [t for e in items for t in e.profile_texts()]


def three_part_plan() -> Plan:
    return Plan(
        query="A compound question",
        sub_queries=(
            SubQuery(id="q1", question=QUESTIONS["math"]),
            SubQuery(id="q2", question=QUESTIONS["medicine"]),
            SubQuery(id="q3", question=QUESTIONS["history"] + " {q1}", depends_on=("q1",)),
        ),
    ).validate_dag()


class EventRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.events.append((name, data))


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [profiles, experts], ids=["profiles", "experts"])
def test_questions_route_to_the_matching_expert(make: Any, embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=make(), embeddings=embeddings)
    assert router.expert_names == NAMES
    decisions = router.route(list(QUESTIONS.values()), list(QUESTIONS))
    assert [d.expert for d in decisions] == NAMES
    assert [d.sub_query_id for d in decisions] == NAMES
    assert [d.question for d in decisions] == list(QUESTIONS.values())
    assert not any(d.fallback for d in decisions)


def test_decision_carries_the_full_score_vector(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    for decision in router.route(list(QUESTIONS.values())):
        assert list(decision.scores) == NAMES
        assert decision.score == max(decision.scores.values())
        assert decision.scores[decision.expert] == decision.score
        assert all(-1.0 - 1e-9 <= s <= 1.0 + 1e-9 for s in decision.scores.values())
        # The keyword questions are clearly separated from the other experts.
        others = [s for n, s in decision.scores.items() if n != decision.expert]
        assert decision.score > max(others) + 0.2


def test_route_default_ids_are_positions_and_empty_input(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    assert [d.sub_query_id for d in router.route(["a sum", "a war"])] == ["0", "1"]
    assert router.route([]) == []


def test_profile_is_the_mean_of_description_and_examples(embeddings: KeywordEmbeddings) -> None:
    # Only the examples mention "war": without them the question would tie on every expert.
    router = EmbeddingRouter(
        experts=[
            ExpertProfile(name="a", description="generic", examples=("the war",)),
            ExpertProfile(name="b", description="generic"),
        ],
        embeddings=embeddings,
    )
    assert router.route(["a war story"])[0].expert == "a"
    assert ["generic", "the war", "generic"] in embeddings.calls


def test_profile_without_text_uses_the_name(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(
        experts=[ExpertProfile(name="history"), ExpertProfile(name="math")],
        embeddings=embeddings,
    )
    assert router.route(["the history of math"])[0].expert in {"history", "math"}
    assert ["history", "math"] in embeddings.calls
    assert router.route(["history"])[0].expert == "history"


# --- batching and caching -------------------------------------------------------------------


def test_profiles_embedded_once_as_documents_and_sub_queries_as_queries(
    embeddings: KeywordEmbeddings,
) -> None:
    items = profiles()
    router = EmbeddingRouter(experts=items, embeddings=embeddings)
    plan = three_part_plan()
    for _ in range(3):
        router.invoke(plan)
    assert embeddings.calls == [profile_texts(items)]
    assert embeddings.query_calls == [sq.question for sq in plan.sub_queries] * 3


def test_a_repeated_question_is_embedded_once(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    decisions = router.route([QUESTIONS["math"], QUESTIONS["history"], QUESTIONS["math"]])
    assert [d.expert for d in decisions] == ["math", "history", "math"]
    assert embeddings.query_calls == [QUESTIONS["math"], QUESTIONS["history"]]


def test_concurrent_first_calls_embed_profiles_once() -> None:
    class SlowEmbeddings(KeywordEmbeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            time.sleep(0.05)  # widen the race window
            return super().embed_documents(texts)

    embeddings = SlowEmbeddings()
    items = profiles()
    router = EmbeddingRouter(experts=items, embeddings=embeddings)
    n = 8
    barrier = threading.Barrier(n)
    results: list[list[RoutingDecision]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            results.append(router.route([QUESTIONS["medicine"]]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors
    assert len(results) == n
    assert all(r[0].expert == "medicine" for r in results)
    assert embeddings.calls == [profile_texts(items)]
    assert len(embeddings.query_calls) == n


# --- thresholds -----------------------------------------------------------------------------


def test_global_threshold_sends_low_scores_to_the_fallback(
    embeddings: KeywordEmbeddings,
) -> None:
    router = EmbeddingRouter(
        experts=profiles(), embeddings=embeddings, threshold=0.65, fallback_expert="history"
    )
    unclear, clear = router.route(["Tell me a joke about cats", QUESTIONS["math"]])
    # Keyword-free text is about equally (and weakly) similar to every profile.
    assert max(unclear.scores.values()) < 0.65
    assert unclear.fallback is True
    assert unclear.expert == "history"
    assert unclear.score == unclear.scores["history"]
    assert clear.fallback is False
    assert clear.expert == "math"
    assert clear.score == max(clear.scores.values()) >= 0.65


def test_threshold_above_every_score_sends_everything_to_the_fallback(
    embeddings: KeywordEmbeddings,
) -> None:
    router = EmbeddingRouter(
        experts=profiles(), embeddings=embeddings, threshold=1.01, fallback_expert="medicine"
    )
    decisions = router.route(list(QUESTIONS.values()))
    assert [d.expert for d in decisions] == ["medicine"] * 3
    assert all(d.fallback for d in decisions)
    assert [d.score for d in decisions] == [d.scores["medicine"] for d in decisions]


def test_per_expert_thresholds(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(
        experts=profiles(),
        embeddings=embeddings,
        thresholds={"history": 0.999},
        fallback_expert="math",
    )
    math, medicine, history = router.route(list(QUESTIONS.values()))
    assert (math.expert, math.fallback) == ("math", False)
    assert (medicine.expert, medicine.fallback) == ("medicine", False)  # no threshold for it
    assert (history.expert, history.fallback) == ("math", True)
    assert history.score == history.scores["math"]
    assert max(history.scores, key=history.scores.__getitem__) == "history"


def test_per_expert_threshold_overrides_the_global_one(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(
        experts=profiles(),
        embeddings=embeddings,
        threshold=1.01,
        thresholds={"medicine": 0.0},
        fallback_expert="math",
    )
    math, medicine, history = router.route(list(QUESTIONS.values()))
    assert (medicine.expert, medicine.fallback) == ("medicine", False)
    assert (history.expert, history.fallback) == ("math", True)
    assert (math.expert, math.fallback) == ("math", True)  # under the global threshold


# --- construction errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"experts": []}, "needs at least one expert", id="no-experts"),
        pytest.param(
            {"experts": [*profiles(), ExpertProfile(name="math")]},
            "duplicate expert names: math",
            id="duplicate",
        ),
        pytest.param(
            {"fallback_expert": "law"},
            "fallback_expert: unknown expert 'law' (experts: math, medicine, history)",
            id="unknown-fallback",
        ),
        pytest.param(
            {"threshold": 0.3}, "a routing threshold needs a fallback_expert", id="no-fallback"
        ),
        pytest.param(
            {"thresholds": {"math": 0.3}},
            "a routing threshold needs a fallback_expert",
            id="thresholds-no-fallback",
        ),
        pytest.param(
            {"thresholds": {"law": 0.3, "art": 0.1, "math": 0.2}, "fallback_expert": "math"},
            "thresholds: unknown experts 'art', 'law'",
            id="thresholds-unknown",
        ),
    ],
)
def test_construction_errors(
    kwargs: dict[str, Any], message: str, embeddings: KeywordEmbeddings
) -> None:
    with pytest.raises(ValueError) as info:
        EmbeddingRouter(**{"experts": profiles(), "embeddings": embeddings, **kwargs})
    assert message in str(info.value)
    assert embeddings.calls == [] and embeddings.query_calls == []


def test_expert_profile_name_must_not_be_blank() -> None:
    with pytest.raises(ValueError, match="expert name must not be empty"):
        ExpertProfile(name="  ")


# --- invoke ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["What is 2+2?", {"query": "x"}, None], ids=["str", "dict", "none"])
def test_invoke_with_a_non_plan_raises_type_error(bad: Any, embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    with pytest.raises(TypeError, match="EmbeddingRouter expects a Plan"):
        router.invoke(bad)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_invoke_routes_every_sub_query(
    use_async: bool, embeddings: KeywordEmbeddings
) -> None:
    router = EmbeddingRouter(experts=experts(), embeddings=embeddings)
    plan = three_part_plan()
    routed = await router.ainvoke(plan) if use_async else router.invoke(plan)
    assert isinstance(routed, Plan)
    assert [sq.expert for sq in routed.sub_queries] == NAMES
    for original, sq in zip(plan.sub_queries, routed.sub_queries, strict=True):
        assert sq.route is not None
        assert (sq.id, sq.question, sq.depends_on) == (
            original.id,
            original.question,
            original.depends_on,
        )
        assert sq.route.sub_query_id == sq.id
        assert sq.route.question == sq.question
        assert sq.score == sq.route.score == max(sq.route.scores.values())
    assert routed.query == plan.query
    assert plan.sub_queries[0].route is None  # the input plan is not modified
    assert routed.validate_dag() is routed


def test_routed_plan_lookups_and_drawings_show_the_routes(
    embeddings: KeywordEmbeddings,
) -> None:
    # The plan was validated before routing (as the generator does).
    routed = EmbeddingRouter(experts=profiles(), embeddings=embeddings).invoke(three_part_plan())
    assert {i: sq.expert for i, sq in routed.by_id.items()} == dict(
        zip(["q1", "q2", "q3"], NAMES, strict=True)
    )
    text = routed.to_text()
    assert "[math " in text and "[medicine " in text and "[history " in text
    assert "<i>history (" in routed.to_mermaid()


def test_invoke_emits_routed_progress_events(embeddings: KeywordEmbeddings) -> None:
    recorder = EventRecorder()
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    routed = router.invoke(three_part_plan(), config={"callbacks": [recorder]})
    assert [name for name, _ in recorder.events] == [PROGRESS_EVENT] * 3
    events = [data for _, data in recorder.events]
    assert [e["type"] for e in events] == ["routed"] * 3
    assert [e["sub_query_id"] for e in events] == ["q1", "q2", "q3"]
    assert [e["expert"] for e in events] == NAMES
    for event, sq in zip(events, routed.sub_queries, strict=True):
        assert event["score"] == sq.score
        assert event["data"] == sq.route


def test_invoke_emits_fallback_decisions(embeddings: KeywordEmbeddings) -> None:
    recorder = EventRecorder()
    router = EmbeddingRouter(
        experts=profiles(), embeddings=embeddings, threshold=1.01, fallback_expert="math"
    )
    router.invoke(Plan.single("Tell me about the war"), config={"callbacks": [recorder]})
    ((name, event),) = recorder.events
    assert name == PROGRESS_EVENT
    assert event["expert"] == "math"
    assert event["data"].fallback is True


def test_invoke_without_callbacks_does_not_fail(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    assert router.invoke(Plan.single(QUESTIONS["history"])).sub_queries[0].expert == "history"


# --- strategies, fitting, calibration, evaluation -------------------------------------------

# "patient" is a medicine keyword and "king" a history one; only history's profile examples
# have either ("A king question"), so on profiles alone history wins.
AMBIGUOUS = "Did the patient, a patient king, rest?"
LABELLED = [
    ("Was the patient, a patient king, tired?", "medicine"),
    ("Which patient, a patient king, slept?", "medicine"),
    ("What dose treats the patient?", "medicine"),
    ("Add the numbers 3 plus 4", "math"),
]


@pytest.mark.parametrize("strategy", ["centroid", "knn", "head"])
def test_every_strategy_routes_clear_questions_from_profiles(
    strategy: str, embeddings: KeywordEmbeddings
) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings, strategy=strategy)
    decisions = router.route(list(QUESTIONS.values()))
    assert [d.expert for d in decisions] == NAMES
    assert {d.strategy for d in decisions} == {strategy}


def test_fit_on_labelled_queries_changes_routing(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings, strategy="knn")
    assert router.route([AMBIGUOUS])[0].expert == "history"
    texts, labels = zip(*LABELLED, strict=True)
    assert router.fit(texts, labels) is router
    assert router.route([AMBIGUOUS])[0].expert == "medicine"
    # Profiles and examples are embedded as documents, in one call.
    assert embeddings.calls[-1] == [*profile_texts(profiles()), *texts]


def test_fit_without_profiles_needs_an_example_of_every_expert(
    embeddings: KeywordEmbeddings,
) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    with pytest.raises(ValueError, match="no examples for history"):
        router.fit(["Add 3 plus 4", "A dose"], ["math", "medicine"], include_profiles=False)
    with pytest.raises(ValueError, match="labels that are not routes: law"):
        router.fit(["Sue them"], ["law"])
    with pytest.raises(ValueError, match="2 examples but 1 labels"):
        router.fit(["a", "b"], ["math"])


def test_a_given_strategy_instance_is_not_fitted_in_place(embeddings: KeywordEmbeddings) -> None:
    mine = KNNStrategy(k=2)
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings, strategy=mine)
    router.route([QUESTIONS["math"]])
    assert router.strategy.fitted and not mine.fitted and router.strategy.k == 2


def test_evaluate_reports_accuracy_confusion_and_oracle_gap(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    texts = [*QUESTIONS.values(), "Which disease did the king have in the war?"]
    labels = [*NAMES, "medicine"]
    result = router.evaluate(texts, labels)
    assert result.strategy == "centroid" and result.n == 4
    assert result.accuracy == 0.75 and result.oracle_gap == 0.25
    assert result.confusion["medicine"]["history"] == 1
    assert [(m.gold, m.predicted) for m in result.misses] == [("medicine", "history")]
    # Outcomes: how each expert answered; only medicine knew the last one.
    outcomes = [{n: float(n == g) for n in NAMES} for g in labels]
    scored = router.evaluate(texts, labels, outcomes=outcomes)
    assert (scored.routed_score, scored.gold_score, scored.oracle_score) == (0.75, 1.0, 1.0)
    assert scored.gold_gap == 0.25 and scored.oracle_gap == 0.25


def test_calibrate_stores_thresholds_on_the_experts(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(
        experts=profiles(), embeddings=embeddings, threshold=0.99, fallback_expert="history"
    )
    jokes = ["Tell me a joke about cats", "Sing a song about dogs"]
    texts = [*QUESTIONS.values(), *jokes]
    labels = [*NAMES, "history", "history"]
    thresholds = router.calibrate(texts, labels)
    assert set(thresholds) == {"math", "medicine"}
    stored = {e.name: e.threshold for e in router.experts}
    assert stored == {
        "math": thresholds["math"],
        "medicine": thresholds["medicine"],
        "history": None,
    }
    assert router.threshold is None and router.thresholds == {}
    assert router.evaluate(texts, labels).accuracy == 1.0
    clear, joke = router.route([QUESTIONS["math"], "Tell a joke about birds"])
    assert (clear.expert, clear.fallback) == ("math", False)
    assert (joke.expert, joke.fallback) == ("history", True)


def test_calibrate_needs_a_fallback(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(experts=profiles(), embeddings=embeddings)
    with pytest.raises(ValueError, match="needs a fallback expert"):
        router.calibrate(["a"], ["math"])


def test_an_expert_threshold_needs_a_fallback(embeddings: KeywordEmbeddings) -> None:
    experts = [*profiles()[:2], ExpertProfile(name="history", threshold=0.5)]
    with pytest.raises(ValueError, match="a routing threshold needs a fallback_expert"):
        EmbeddingRouter(experts=experts, embeddings=embeddings)
    router = EmbeddingRouter(experts=experts, embeddings=embeddings, fallback_expert="math")
    assert router.threshold_of("history") == 0.5 and router.threshold_of("math") is None


def test_route_gold_takes_the_label_and_embeds_nothing(embeddings: KeywordEmbeddings) -> None:
    router = EmbeddingRouter(
        experts=profiles(), embeddings=embeddings, threshold=1.01, fallback_expert="math"
    )
    decisions = router.route_gold(["anything", "else"], ["history", "medicine"], ["q1", "q2"])
    assert [(d.sub_query_id, d.expert, d.fallback) for d in decisions] == [
        ("q1", "history", False),
        ("q2", "medicine", False),
    ]
    assert {d.strategy for d in decisions} == {"gold"}
    assert embeddings.calls == [] and embeddings.query_calls == []
    with pytest.raises(ValueError, match="labels that are not routes: law"):
        router.route_gold(["x"], ["law"])


async def test_aroute_matches_route_and_uses_async_embeddings(
    embeddings: KeywordEmbeddings,
) -> None:
    class AsyncOnly(KeywordEmbeddings):
        def embed_query(self, text: str) -> list[float]:
            raise AssertionError("aroute must not call the sync embed_query")

        async def aembed_query(self, text: str) -> list[float]:
            return KeywordEmbeddings.embed_query(self, text)

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.embed_documents(texts)

    router = EmbeddingRouter(experts=profiles(), embeddings=AsyncOnly(), strategy="knn")
    decisions = await router.aroute(list(QUESTIONS.values()))
    expected = EmbeddingRouter(experts=profiles(), embeddings=embeddings, strategy="knn")
    assert decisions == expected.route(list(QUESTIONS.values()))
