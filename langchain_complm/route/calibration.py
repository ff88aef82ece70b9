"""Labelled routing data, threshold calibration and routing evaluation.

Thresholds are calibrated the way semantic-router's ``fit`` does it, on labelled queries:
each route gets the minimum score that maximizes routing accuracy when queries under it go
to the fallback expert. A route's threshold only changes the queries that route ranks first,
so each route's best threshold is found exactly, on its own, by one sorted scan.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class LabelledQuery(BaseModel):
    """A query and the route (expert or category) that should get it."""

    model_config = ConfigDict(frozen=True)

    text: str
    label: str
    source: str | None = Field(default=None, description="Where the query comes from.")
    source_id: str | None = Field(default=None, description="Its id there.")


def read_labelled(path: str | os.PathLike[str]) -> list[LabelledQuery]:
    """Labelled queries from a JSON Lines file (``{"text": ..., "label": ...}`` per line) or
    a YAML file mapping each label to a list of queries.

    Raises:
        ValueError: the file is neither, or a line or entry is malformed (the message names
            the file and the place).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(q, str) for q in v) for v in data.values()
        ):
            raise ValueError(f"{path}: expected a mapping of label -> list of queries")
        return [LabelledQuery(text=q, label=str(label)) for label, qs in data.items() for q in qs]
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(LabelledQuery.model_validate_json(line))
        except ValueError as exc:
            detail = " ".join(str(exc).split())
            raise ValueError(f"{path}:{number}: not a labelled query: {detail}") from None
    return items


def write_labelled(items: Sequence[LabelledQuery], path: str | os.PathLike[str]) -> None:
    """Write labelled queries as JSON Lines (what :func:`read_labelled` reads)."""
    with Path(path).open("w", encoding="utf-8") as f:
        f.writelines(item.model_dump_json(exclude_none=True) + "\n" for item in items)


def calibrate_thresholds(
    scores: np.ndarray, classes: Sequence[str], gold: Sequence[str], fallback: str
) -> dict[str, float | None]:
    """Per-route thresholds that maximize routing accuracy on labelled queries.

    Args:
        scores: the router's scores, one row per query, one column per class.
        classes: the routes, in column order.
        gold: each query's gold route.
        fallback: the route a query under its threshold goes to (it gets no threshold).

    Returns:
        Every route but ``fallback``: the threshold, midway between the two scores it
        separates, or None where no threshold helps (ties go to fewer fallbacks).
    """
    scores = np.asarray(scores)
    if len(scores) != len(gold):
        raise ValueError(f"{len(scores)} score rows but {len(gold)} gold labels")
    best = scores.argmax(axis=1) if len(scores) else np.zeros(0, dtype=int)
    top = scores[np.arange(len(scores)), best] if len(scores) else np.zeros(0)
    gold_array = np.asarray(gold, dtype=object)
    thresholds: dict[str, float | None] = {}
    for column, route in enumerate(classes):
        if route == fallback:
            continue
        mine = best == column
        order = np.argsort(top[mine], kind="stable")
        ranked, labels = top[mine][order], gold_array[mine][order]
        # Cutting after the c lowest scores sends them to the fallback: right when their
        # gold route is the fallback; the rest stay, right when their gold route is this one.
        to_fallback = np.concatenate([[0], np.cumsum(labels == fallback)])
        stay = np.concatenate([np.cumsum((labels == route)[::-1])[::-1], [0]])
        cut = int(np.argmax(to_fallback + stay))  # the first maximum: fewest fallbacks
        if cut == 0:
            thresholds[route] = None
        elif cut == len(ranked):
            thresholds[route] = float(np.nextafter(ranked[-1], np.inf))
        else:
            thresholds[route] = float((ranked[cut - 1] + ranked[cut]) / 2)
    return thresholds


class LabelMetrics(BaseModel):
    """Precision and recall of one route."""

    precision: float | None = Field(description="None when nothing was routed there.")
    recall: float | None = Field(description="None when no query has this gold route.")
    support: int = Field(description="Queries with this gold route.")


class Miss(BaseModel):
    """A query routed to the wrong route."""

    text: str
    gold: str
    predicted: str
    score: float


class RoutingEvaluation(BaseModel):
    """How a router did on labelled queries (:meth:`~BaseRouter.evaluate`).

    ``oracle_gap`` is how far the router is from an oracle router. Without outcomes the
    oracle routes every query to its gold route, so the gap is ``1 - accuracy``. With
    outcomes (how well each expert answered each query) the oracle sends each query to its
    best expert (as in LLMRouterBench): the gap is ``oracle_score - routed_score``, and
    ``gold_gap`` compares with gold routing (the gold route's expert) instead.
    """

    strategy: str
    n: int
    accuracy: float
    labels: list[str] = Field(description="Routes in table order.")
    confusion: dict[str, dict[str, int]] = Field(description="gold -> predicted -> count.")
    per_label: dict[str, LabelMetrics]
    fallback_rate: float = Field(description="Share of queries sent to the fallback.")
    oracle_gap: float
    routed_score: float | None = None
    gold_score: float | None = None
    oracle_score: float | None = None
    gold_gap: float | None = None
    misses: list[Miss] = Field(default_factory=list)

    def confusion_table(self) -> str:
        """The confusion matrix as a Markdown table (rows: gold, columns: predicted)."""
        head = "| gold \\ routed | " + " | ".join(self.labels) + " | recall |"
        rows = [head, "|" + "---|" * (len(self.labels) + 2)]
        for gold in self.labels:
            recall = self.per_label[gold].recall
            cells = " | ".join(str(self.confusion[gold][p]) for p in self.labels)
            rows.append(f"| {gold} | {cells} | {_pct(recall)} |")
        return "\n".join(rows)


def summarize(
    *,
    strategy: str,
    texts: Sequence[str],
    gold: Sequence[str],
    predicted: Sequence[str],
    scores: Sequence[float],
    fallbacks: Sequence[bool],
    labels: Sequence[str],
    outcomes: Sequence[Mapping[str, float]] | None = None,
    routed_experts: Sequence[str] = (),
    gold_experts: Sequence[str] = (),
) -> RoutingEvaluation:
    """A :class:`RoutingEvaluation` from per-query gold and predicted routes; with
    ``outcomes``, also the task scores of the routed, gold and best experts."""
    n = len(gold)
    if not n:
        raise ValueError("evaluate needs at least one labelled query")
    order = list(dict.fromkeys([*labels, *gold, *predicted]))
    counts = Counter(zip(gold, predicted, strict=True))
    confusion = {g: {p: counts[(g, p)] for p in order} for g in order}
    per_label = {}
    for label in order:
        routed_here = sum(counts[(g, label)] for g in order)
        support = sum(counts[(label, p)] for p in order)
        hits = counts[(label, label)]
        per_label[label] = LabelMetrics(
            precision=hits / routed_here if routed_here else None,
            recall=hits / support if support else None,
            support=support,
        )
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / n
    result = RoutingEvaluation(
        strategy=strategy,
        n=n,
        accuracy=accuracy,
        labels=order,
        confusion=confusion,
        per_label=per_label,
        fallback_rate=sum(fallbacks) / n,
        oracle_gap=1.0 - accuracy,
        misses=[
            Miss(text=t, gold=g, predicted=p, score=s)
            for t, g, p, s in zip(texts, gold, predicted, scores, strict=True)
            if g != p
        ],
    )
    if outcomes is not None:
        if len(outcomes) != n:
            raise ValueError(f"{len(outcomes)} outcomes for {n} labelled queries")
        routed = np.mean([o.get(e, 0.0) for o, e in zip(outcomes, routed_experts, strict=True)])
        gold_ = np.mean([o.get(e, 0.0) for o, e in zip(outcomes, gold_experts, strict=True)])
        oracle = np.mean([max(o.values(), default=0.0) for o in outcomes])
        result.routed_score, result.gold_score, result.oracle_score = (
            float(routed),
            float(gold_),
            float(oracle),
        )
        result.oracle_gap = float(oracle - routed)
        result.gold_gap = float(gold_ - routed)
    return result


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


__all__ = [
    "LabelMetrics",
    "LabelledQuery",
    "Miss",
    "RoutingEvaluation",
    "calibrate_thresholds",
    "read_labelled",
    "summarize",
]
