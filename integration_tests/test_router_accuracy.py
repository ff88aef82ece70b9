"""The default experts route realistic sub-queries well with the real embedded MiniLM router.

The labelled set (``data/router_subqueries.yaml``) holds sub-questions of the kind the
Sub-query Generator writes, none of them copies of the profile examples. If accuracy drops,
improve the default expert descriptions and examples, not the test set.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from langchain_complm.config import load_default_experts
from langchain_complm.models.embedded import default_embeddings
from langchain_complm.route.router import EmbeddingRouter

DATA = Path(__file__).parent / "data" / "router_subqueries.yaml"
MIN_ACCURACY = 0.85


def labelled() -> list[tuple[str, str]]:
    data = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    return [(question, label) for label, questions in data.items() for question in questions]


def confusion_table(pairs: list[tuple[str, str]], labels: list[str]) -> str:
    counts = Counter(pairs)
    width = max(len(label) for label in labels)
    short = [label[:6] for label in labels]
    rows = [" " * width + "  " + " ".join(f"{s:>6}" for s in short) + "   (rows: gold)"]
    for gold in labels:
        cells = " ".join(f"{counts[(gold, pred)]:>6}" for pred in labels)
        rows.append(f"{gold:>{width}}  {cells}")
    return "\n".join(rows)


def test_labelled_set_is_sound() -> None:
    experts = load_default_experts()
    names = {e.name for e in experts}
    items = labelled()
    per_label = Counter(label for _, label in items)
    assert len(items) >= 40
    assert set(per_label) == names and min(per_label.values()) >= 5
    examples = {x.lower() for e in experts for x in e.examples}
    assert not [q for q, _ in items if q.lower() in examples]
    assert len({q for q, _ in items}) == len(items)


@pytest.fixture(scope="module")
def router() -> EmbeddingRouter:
    return EmbeddingRouter(experts=list(load_default_experts()), embeddings=default_embeddings())


def test_router_accuracy_on_default_experts(router: EmbeddingRouter) -> None:
    items = labelled()
    decisions = router.route([q for q, _ in items])
    pairs = [(label, d.expert) for (_, label), d in zip(items, decisions, strict=True)]
    accuracy = sum(gold == pred for gold, pred in pairs) / len(pairs)

    print(f"\nrouter accuracy: {accuracy:.3f} ({len(pairs)} sub-queries)")
    print(confusion_table(pairs, router.expert_names))
    for (question, label), decision in zip(items, decisions, strict=True):
        if decision.expert != label:
            print(f"  miss: {label} -> {decision.expert} ({decision.score:.2f}): {question}")
    assert accuracy >= MIN_ACCURACY
