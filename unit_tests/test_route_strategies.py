"""Routing strategies (centroid, kNN, linear head), threshold calibration, labelled-query
files and evaluation summaries: pure numpy, no embeddings model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_complm.route import (
    CentroidStrategy,
    KNNStrategy,
    LabelledQuery,
    LinearHeadStrategy,
    RoutingStrategy,
    calibrate_thresholds,
    read_labelled,
    write_labelled,
)
from langchain_complm.route.calibration import summarize
from langchain_complm.route.strategies import make_strategy

STRATEGIES = [CentroidStrategy, KNNStrategy, LinearHeadStrategy]


def clusters(n: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, list[str]]:
    """Three noisy clusters around orthogonal directions, labelled a, b, c."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3]
    labels = [("a", "b", "c")[i % 3] for i in range(n)]
    vectors = np.stack([centres["abc".index(y)] for y in labels])
    return vectors + spread * rng.standard_normal(vectors.shape), labels


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c().kind)
def test_each_strategy_separates_clusters_it_was_fitted_on(cls: type[RoutingStrategy]) -> None:
    train, train_labels = clusters(60, seed=0)
    test, test_labels = clusters(30, seed=1)
    strategy = cls().fit(train, train_labels, classes=["c", "b", "a"])
    assert strategy.fitted and strategy.classes == ("c", "b", "a")
    scores = strategy.score(test)
    assert scores.shape == (30, 3)
    predicted = [strategy.classes[i] for i in scores.argmax(axis=1)]
    assert sum(p == g for p, g in zip(predicted, test_labels, strict=True)) >= 28
    low, high = strategy.score_range
    assert scores.min() >= low - 1e-6 and scores.max() <= high + 1e-6
    assert strategy.score(np.zeros((0, 8))).shape == (0, 3)


def test_centroid_scores_are_cosines_to_the_normalized_means() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    strategy = CentroidStrategy().fit(vectors, ["x", "x", "y"])
    # x's centroid is the mean of its normalized vectors: (0.5, 0.5) -> (0.707, 0.707).
    np.testing.assert_allclose(strategy.score([[1.0, 0.0]]), [[np.sqrt(0.5), 1.0]], atol=1e-6)


def test_knn_scores_are_similarity_weighted_votes_over_k() -> None:
    index = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    strategy = KNNStrategy(k=3).fit(index, ["a", "b", "b", "a"], classes=["a", "b"])
    # Neighbours of (1, 0): itself (a, 1.0), (0.8, 0.6) (b, 0.8), (0, 1) (b, 0.0).
    np.testing.assert_allclose(strategy.score([[2.0, 0.0]]), [[1.0 / 3, 0.8 / 3]], atol=1e-6)
    # k larger than the index uses every example.
    wide = KNNStrategy(k=50).fit(index, ["a", "b", "b", "a"], classes=["a", "b"])
    np.testing.assert_allclose(wide.score([[1.0, 0.0]]), [[0.0, 0.8 / 4]], atol=1e-6)


def test_knn_scores_large_batches_in_chunks_like_small_ones() -> None:
    train, labels = clusters(40, seed=2)
    queries, _ = clusters(KNNStrategy._CHUNK + 7, seed=3)
    strategy = KNNStrategy(k=5).fit(train, labels)
    whole = strategy.score(queries)
    one_by_one = np.concatenate([strategy.score(queries[i : i + 1]) for i in range(len(queries))])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-6)


def test_head_gives_probabilities_is_deterministic_and_balances_classes() -> None:
    # 90 examples of a and 6 of b: without class balancing b would be swamped.
    rng = np.random.default_rng(4)
    a = np.array([1.0, 0.0, 0.0]) + 0.4 * rng.standard_normal((90, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.4 * rng.standard_normal((6, 3))
    vectors, labels = np.concatenate([a, b]), ["a"] * 90 + ["b"] * 6
    first = LinearHeadStrategy().fit(vectors, labels)
    second = LinearHeadStrategy().fit(vectors, labels)
    probe = np.array([[0.1, 1.0, 0.0], [1.0, 0.1, 0.0]])
    scores = first.score(probe)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(scores, second.score(probe))
    assert list(scores.argmax(axis=1)) == [1, 0]


@pytest.mark.parametrize(
    ("vectors", "labels", "classes", "message"),
    [
        (np.zeros((0, 3)), [], None, "at least one example"),
        (np.ones((2, 3)), ["a"], None, "2 vectors but 1 labels"),
        (np.ones((2, 3)), ["a", "z"], ["a", "b"], "not among the classes: z"),
        (np.ones((2, 3)), ["a", "a"], ["a", "b"], "no examples for b"),
    ],
    ids=["empty", "mismatch", "unknown", "empty-class"],
)
def test_fit_errors(vectors: Any, labels: list[str], classes: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CentroidStrategy().fit(vectors, labels, classes=classes)


def test_an_unfitted_strategy_refuses_to_score() -> None:
    with pytest.raises(RuntimeError, match="knn strategy is not fitted"):
        KNNStrategy().score(np.ones((1, 3)))


def test_make_strategy_from_kind_mapping_or_instance() -> None:
    assert isinstance(make_strategy("centroid"), CentroidStrategy)
    knn = make_strategy({"kind": "knn", "k": 3})
    assert isinstance(knn, KNNStrategy) and knn.k == 3
    mine = LinearHeadStrategy(epochs=5)
    copy = make_strategy(mine)
    copy.fit(np.eye(2), ["a", "b"])
    assert copy.fitted and not mine.fitted and copy.epochs == 5
    with pytest.raises(ValueError, match="unknown routing strategy 'svm'"):
        make_strategy("svm")
    with pytest.raises(ValueError, match="k"):
        make_strategy({"kind": "knn", "k": 0})


# --- calibration ----------------------------------------------------------------------------


def test_calibration_separates_a_route_from_its_fallback() -> None:
    # Route a is ranked first by all four; the two low scores really belong to the fallback.
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.1], [0.2, 0.1]])
    thresholds = calibrate_thresholds(scores, ["a", "fb"], ["a", "a", "fb", "fb"], "fb")
    assert thresholds == {"a": pytest.approx(0.55)}


def test_calibration_leaves_a_route_alone_when_no_threshold_helps() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.1], [0.5, 0.6]])
    thresholds = calibrate_thresholds(scores, ["a", "fb"], ["a", "a", "fb"], "fb")
    assert thresholds == {"a": None}


def test_calibration_can_send_a_route_wholly_to_the_fallback() -> None:
    scores = np.array([[0.7, 0.1], [0.4, 0.1]])
    thresholds = calibrate_thresholds(scores, ["a", "fb"], ["fb", "fb"], "fb")
    assert thresholds["a"] is not None and thresholds["a"] > 0.7


def test_calibrated_thresholds_beat_every_other_threshold() -> None:
    rng = np.random.default_rng(5)
    classes = ["a", "b", "fb"]
    scores = rng.random((200, 3))
    gold = [classes[i] for i in rng.integers(0, 3, 200)]

    def accuracy(th: dict[str, float | None]) -> float:
        right = 0
        for row, g in zip(scores, gold, strict=True):
            best = classes[int(row.argmax())]
            floor = th.get(best)
            routed = "fb" if floor is not None and row.max() < floor else best
            right += routed == g
        return right / len(gold)

    best = calibrate_thresholds(scores, classes, gold, "fb")
    assert set(best) == {"a", "b"}
    grid = [None, *np.linspace(0, 1, 21)]
    assert all(accuracy(best) >= accuracy({"a": ta, "b": tb}) for ta in grid for tb in grid)


def test_calibration_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="2 score rows but 1 gold"):
        calibrate_thresholds(np.ones((2, 2)), ["a", "b"], ["a"], "b")


# --- labelled files and summaries -----------------------------------------------------------


def test_labelled_queries_round_trip_jsonl_and_read_yaml(tmp_path: Path) -> None:
    items = [
        LabelledQuery(text="What is 2+2?", label="math", source="gsm8k", source_id="g:1"),
        LabelledQuery(text="Who was Caesar?", label="history"),
    ]
    write_labelled(items, tmp_path / "data.jsonl")
    assert read_labelled(tmp_path / "data.jsonl") == items
    (tmp_path / "data.yaml").write_text("math:\n  - What is 2+2?\nhistory:\n  - Who was Caesar?\n")
    assert [(i.text, i.label) for i in read_labelled(tmp_path / "data.yaml")] == [
        ("What is 2+2?", "math"),
        ("Who was Caesar?", "history"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n', r"bad.jsonl:2: not a"),
        ("bad.yaml", "- just a list\n", "expected a mapping of label -> list of queries"),
        ("broken.yaml", "math: [What is 2+2?]\n", r"broken.yaml: invalid YAML"),
    ],
)
def test_malformed_labelled_files_name_the_place(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        read_labelled(tmp_path / name)


def test_summary_counts_confusion_recall_and_oracle_gaps() -> None:
    result = summarize(
        strategy="knn",
        texts=["t1", "t2", "t3", "t4"],
        gold=["a", "a", "b", "b"],
        predicted=["a", "b", "b", "b"],
        scores=[0.9, 0.4, 0.8, 0.7],
        fallbacks=[False, False, False, True],
        labels=["a", "b"],
        outcomes=[{"x": 1.0, "y": 0.0}, {"x": 1.0, "y": 0.0}, {"y": 1.0}, {"x": 1.0, "y": 0.0}],
        routed_experts=["x", "y", "y", "y"],
        gold_experts=["x", "x", "y", "y"],
    )
    assert result.n == 4 and result.accuracy == 0.75
    assert result.confusion == {"a": {"a": 1, "b": 1}, "b": {"a": 0, "b": 2}}
    assert result.per_label["a"].recall == 0.5 and result.per_label["a"].precision == 1.0
    assert result.per_label["b"].precision == pytest.approx(2 / 3)
    assert result.fallback_rate == 0.25
    assert [(m.text, m.gold, m.predicted) for m in result.misses] == [("t2", "a", "b")]
    # Routed: 1, 0, 1, 0; gold routing: 1, 1, 1, 0; oracle (best expert): 1, 1, 1, 1.
    assert (result.routed_score, result.gold_score, result.oracle_score) == (0.5, 0.75, 1.0)
    assert result.oracle_gap == 0.5 and result.gold_gap == 0.25
    table = result.confusion_table()
    assert "| a | 1 | 1 | 50.0 |" in table and "| b | 0 | 2 | 100.0 |" in table


def test_summary_without_outcomes_measures_the_gap_to_gold_routing() -> None:
    result = summarize(
        strategy="centroid",
        texts=["t"],
        gold=["a"],
        predicted=["b"],
        scores=[0.1],
        fallbacks=[False],
        labels=["a", "b"],
    )
    assert result.accuracy == 0.0 and result.oracle_gap == 1.0 and result.routed_score is None
    with pytest.raises(ValueError, match="at least one labelled query"):
        summarize(strategy="x", texts=[], gold=[], predicted=[], scores=[], fallbacks=[], labels=[])
