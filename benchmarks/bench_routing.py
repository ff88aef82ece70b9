"""Routing accuracy of each strategy, the oracle gap on MultiExpertQA-P, and the CoE budget
choice, with the embedded all-MiniLM-L6-v2 embeddings and the default experts.

1. Labelled sub-queries from the benchmark sources (``evaluation/routing_data.py``): fit on
   the train split, calibrate thresholds on dev (fallback: ``general``), evaluate on the
   held-out test split and on the hand-labelled integration set
   (``integration_tests/data/router_subqueries.yaml``). Strategies: ``centroid`` on the
   profiles only (the router before fitting), and ``centroid``, ``knn``, ``head`` fitted.
2. MultiExpertQA-P (test split): routing of the gold plans' sub-queries, and the oracle gap
   on task accuracy: the ``oracle`` system (gold plan, the router) against ``gold-routing``
   (gold plan, gold routing), run by the benchmark's own systems with *specialist* fake
   experts that answer every question of their own domain right and no other. So the
   sub-answer accuracy measures routing alone (what a real run would add is each expert's
   own error), and a real model run is not needed for the gap.
3. The Composition-of-Experts budget choice on ``examples/coe-two-sizes.yaml`` (two sizes of
   expert per category, a generalist): the expert picked per budget for the test items.

Embeddings are cached in ``runs/routing-cache/`` (profiles and training examples are embedded
as documents, queries one by one with ``embed_query``, as the router does), so a rerun
embeds nothing new::

    python benchmarks/bench_routing.py --out docs/benchmarks-routing.md
    python benchmarks/bench_routing.py --quick                     # small smoke run
    python benchmarks/bench_routing.py --write-data runs/routing   # the labelled JSONL files
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableLambda
from report import report_header

from langchain_complm import Expert
from langchain_complm.aggregate import ResponseAggregator
from langchain_complm.benchmarks.runner import score_prediction
from langchain_complm.benchmarks.systems import Components, build_systems
from langchain_complm.config import build_router, load_config, load_default_experts
from langchain_complm.decompose.structural import StructuralSubQueryGenerator
from langchain_complm.evaluation import Item, build_dataset
from langchain_complm.evaluation.routing_data import build_routing_data, domain_expert_map
from langchain_complm.models.embedded import default_embeddings
from langchain_complm.route import (
    BaseRouter,
    BudgetPolicy,
    EmbeddingRouter,
    LabelledQuery,
    RoutingEvaluation,
    read_labelled,
    write_labelled,
)

INTEGRATION_SET = ROOT / "integration_tests" / "data" / "router_subqueries.yaml"
COE_CONFIG = ROOT / "examples" / "coe-two-sizes.yaml"
CACHE = ROOT / "runs" / "routing-cache"
FALLBACK = "general"
STRATEGIES: list[tuple[str, str, bool]] = [
    ("centroid (profiles only)", "centroid", False),
    ("centroid", "centroid", True),
    ("knn", "knn", True),
    ("head", "head", True),
]
"""(row label, strategy kind, fitted on the train split)."""


class CachedEmbeddings(Embeddings):
    """Memoizes another embeddings model's vectors, on disk, by kind and text."""

    def __init__(self, inner: Embeddings, folder: Path, name: str) -> None:
        self.inner, self.path = inner, folder / f"{name}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            data = np.load(self.path)
            self.vectors = dict(zip(data["keys"], data["vectors"], strict=True))
        self.computed = 0

    @staticmethod
    def _key(kind: str, text: str) -> str:
        return hashlib.sha1(f"{kind}\0{text}".encode()).hexdigest()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = list(dict.fromkeys(t for t in texts if self._key("d", t) not in self.vectors))
        if missing:
            for text, vector in zip(missing, self.inner.embed_documents(missing), strict=True):
                self.vectors[self._key("d", text)] = np.asarray(vector, dtype=np.float32)
            self.computed += len(missing)
        return [self.vectors[self._key("d", t)].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        key = self._key("q", text)
        if key not in self.vectors:
            self.vectors[key] = np.asarray(self.inner.embed_query(text), dtype=np.float32)
            self.computed += 1
        return self.vectors[key].tolist()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        np.savez(self.path, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def texts_labels(items: Sequence[LabelledQuery]) -> tuple[list[str], list[str]]:
    return [i.text for i in items], [i.label for i in items]


def make_router(strategy: str, embeddings: Embeddings) -> EmbeddingRouter:
    return EmbeddingRouter(
        experts=load_default_experts(),
        embeddings=embeddings,
        strategy=strategy,
        fallback_expert=FALLBACK,
    )


def recall_row(name: str, result: RoutingEvaluation, labels: list[str]) -> str:
    recalls = " | ".join(pct(result.per_label[label].recall) for label in labels)
    return f"| {name} | {pct(result.accuracy)} | {recalls} |"


# --- specialist experts for the task-level oracle gap ---------------------------------------


def specialists(items: Sequence[Item], routes: dict[str, str]) -> list[Expert]:
    """One fake expert per default expert: it answers every sub-query of a domain it serves
    with the gold answer, and any other with "I do not know"."""
    gold = {part.prompt: (routes[part.domain], part.gold_text) for i in items for part in i.parts}

    def answerer(name: str) -> RunnableLambda:
        def answer(messages: list[BaseMessage]) -> str:
            owner, text = gold.get(messages[-1].text, (None, ""))
            return text if owner == name else "I do not know."

        return RunnableLambda(answer, name=name)

    return [
        Expert(name=e.name, description=e.description, examples=e.examples, llm=answerer(e.name))
        for e in load_default_experts()
    ]


def task_gap(
    items: Sequence[Item], routers: dict[str, BaseRouter], routes: dict[str, str]
) -> list[str]:
    experts = specialists(items, routes)
    rows = [
        "| routing | items | sub-answer accuracy % | parts routed right % |",
        "|---|---|---|---|",
    ]
    results: dict[str, float] = {}
    for label, router in routers.items():
        components = Components(
            experts=experts,
            generator=StructuralSubQueryGenerator(),
            router=router,
            aggregator=ResponseAggregator(llm=FakeListChatModel(responses=["(aggregated)"])),
        )
        system_name = "gold-routing" if label == "gold routing" else "oracle"
        (system,) = build_systems([system_name], components)
        scores = [score_prediction(i, system.predict(i), routes) for i in items]
        sub = float(np.mean([bool(s.sub_correct) for s in scores]))
        routed = float(np.mean([s.routing for s in scores if s.routing is not None]))
        results[label] = sub
        rows.append(f"| {label} | {len(items)} | {pct(sub)} | {pct(routed)} |")
    gold = results.pop("gold routing")
    rows.append("")
    rows.append(
        "Oracle gap (gold routing minus router, sub-answer accuracy, points): "
        + ", ".join(f"{k} {100 * (gold - v):.1f}" for k, v in results.items())
        + "."
    )
    return rows


# --- the CoE budget choice -----------------------------------------------------------------


def coe_budgets(
    items: Sequence[Item],
    embeddings: Embeddings,
    train: Sequence[LabelledQuery],
    dev: Sequence[LabelledQuery],
    routes: dict[str, str],
) -> list[str]:
    """Two-step routing of the items' sub-queries from the example config: category accuracy
    as shipped and fitted (with thresholds calibrated on dev), then the expert each budget
    picks."""
    config = load_config(COE_CONFIG)
    questions = [part.prompt for item in items for part in item.parts]
    gold = [routes[part.domain] for item in items for part in item.parts]
    rows = [
        "| two-step router | category accuracy % | generalist % | thresholds |",
        "|---|---|---|---|",
    ]
    router = build_router(config, config.experts, embeddings)
    for label, fitted in (("as shipped (profiles, shipped thresholds)", False), ("fitted", True)):
        if fitted:
            router.fit(*texts_labels(train))
            thresholds = router.calibrate(*texts_labels(dev))
        else:
            thresholds = {c.name: c.threshold for c in router.routes}
        result = router.evaluate(questions, gold)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in thresholds.items() if v is not None)
        rows.append(
            f"| {label} | {pct(result.accuracy)} | {pct(result.fallback_rate)} | "
            f"{shown or 'none'} |"
        )
    sizes = {e.name: e.parameters or 0 for e in config.experts}
    rows += [
        "",
        "Expert chosen per budget (the fitted router; the generalist is `general-small`):",
        "",
        "| budget (parameters) | small % | large % | generalist % | over budget % | "
        "expert parameters per item (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for budget in (None, 2_000_000_000, 400_000_000, 100_000_000):
        router.policy = BudgetPolicy(max_parameters=budget)
        decisions = router.route(questions)
        kinds = Counter(
            "generalist" if d.fallback else d.expert.rsplit("-", 1)[-1] for d in decisions
        )
        over = sum(bool(d.selection and not d.selection.within_budget) for d in decisions)
        per_item, start = [], 0
        for item in items:
            used = {d.expert for d in decisions[start : start + len(item.parts)]}
            per_item.append(sum(sizes[name] for name in used))
            start += len(item.parts)
        n = len(decisions)
        rows.append(
            f"| {'none' if budget is None else f'{budget / 1e6:,.0f}M'} | "
            f"{pct(kinds['small'] / n)} | {pct(kinds['large'] / n)} | "
            f"{pct(kinds['generalist'] / n)} | {pct(over / n)} | "
            f"{np.mean(per_item) / 1e6:,.0f}M |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=150, help="train queries per domain")
    parser.add_argument("--dev", type=int, default=40, help="calibration queries per domain")
    parser.add_argument("--test", type=int, default=100, help="held-out queries per domain")
    parser.add_argument("--items", type=int, default=100, help="MultiExpertQA-P test items")
    parser.add_argument("--quick", action="store_true", help="10/5/10 queries, 10 items")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--write-data", type=Path, metavar="DIR", help="write train/dev/test JSONL")
    args = parser.parse_args()
    if args.quick:
        args.train, args.dev, args.test, args.items = 10, 5, 10, 10
    started, load_before = time.perf_counter(), os.getloadavg()

    names = [e.name for e in load_default_experts()]
    routes = domain_expert_map(names)
    train = build_routing_data("train", routes, per_domain=args.train)
    dev = build_routing_data("dev", routes, per_domain=args.dev)
    test = build_routing_data("test", routes, per_domain=args.test)
    integration = read_labelled(INTEGRATION_SET)
    if args.write_data:
        args.write_data.mkdir(parents=True, exist_ok=True)
        for split, items in (("train", train), ("dev", dev), ("test", test)):
            write_labelled(items, args.write_data / f"{split}.jsonl")
    embeddings = CachedEmbeddings(default_embeddings(), CACHE, "all-MiniLM-L6-v2")

    lines = ["## Routing accuracy by strategy", ""]
    header = "| strategy | accuracy % | " + " | ".join(names) + " |"
    rule = "|---|---|" + "---|" * len(names)
    tables: dict[str, list[str]] = {"test": [], "integration": [], "calibrated": []}
    routers: dict[str, BaseRouter] = {}
    evaluations: dict[str, RoutingEvaluation] = {}
    fit_seconds: dict[str, float] = {}
    # Embed everything a fit needs first, so the fit times below are the strategies' own.
    profiles = [t for e in load_default_experts() for t in e.profile_texts()]
    embeddings.embed_documents([*profiles, *texts_labels(train)[0]])
    for label, kind, fitted in STRATEGIES:
        router = make_router(kind, embeddings)
        t0 = time.perf_counter()
        if fitted:
            router.fit(*texts_labels(train))
        else:
            router.route(["warm-up"])
        fit_seconds[label] = time.perf_counter() - t0
        held_out = router.evaluate(*texts_labels(test))
        evaluations[label] = held_out
        tables["test"].append(recall_row(label, held_out, names))
        tables["integration"].append(
            recall_row(label, router.evaluate(*texts_labels(integration)), names)
        )
        thresholds = router.calibrate(*texts_labels(dev))
        calibrated_test = router.evaluate(*texts_labels(test))
        calibrated_int = router.evaluate(*texts_labels(integration))
        shown = ", ".join(f"{k} {v:.3f}" for k, v in thresholds.items() if v is not None)
        tables["calibrated"].append(
            f"| {label} | {pct(calibrated_test.accuracy)} | {pct(calibrated_test.fallback_rate)} "
            f"| {pct(calibrated_int.accuracy)} | {shown or 'none'} |"
        )
        routers[label] = router
    lines += [
        f"Held-out test split: {len(test)} labelled sub-queries ({args.test} per domain), "
        f"strategies fitted on {len(train)} train sub-queries ({args.train} per domain) plus "
        "the expert profiles. Columns after accuracy: recall per expert.",
        "",
        header,
        rule,
        *tables["test"],
        "",
        f"Integration set ({len(integration)} hand-written sub-queries, "
        "`integration_tests/data/router_subqueries.yaml`), same routers:",
        "",
        header,
        rule,
        *tables["integration"],
        "",
        f"Thresholds calibrated on the dev split ({len(dev)} sub-queries, fallback "
        f"`{FALLBACK}`), then evaluated again:",
        "",
        "| strategy | test accuracy % | test fallback % | integration accuracy % | thresholds |",
        "|---|---|---|---|---|",
        *tables["calibrated"],
        "",
        "Fit time (embeddings already computed): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in fit_seconds.items())
        + ".",
        "",
    ]
    best = max(evaluations, key=lambda k: evaluations[k].accuracy)
    lines += [
        f"Confusion on the test split, {best} (uncalibrated; rows gold, columns routed):",
        "",
        evaluations[best].confusion_table(),
        "",
    ]

    items = build_dataset("multiexpertqa-p", "test", args.items, seed=0)
    uncalibrated = {label: make_router(kind, embeddings) for label, kind, _ in STRATEGIES}
    for label, _, fitted in STRATEGIES:
        if fitted:
            uncalibrated[label].fit(*texts_labels(train))
    lines += [
        f"## Oracle gap on MultiExpertQA-P (test split, {len(items)} items)",
        "",
        "Gold plans; specialist fake experts (right on their own domain only), so a sub-query "
        "is answered right exactly when it reaches an expert serving its domain. Routers "
        "without thresholds.",
        "",
        *task_gap(items, {**uncalibrated, "gold routing": uncalibrated[STRATEGIES[0][0]]}, routes),
        "",
        "## CoE budget choice (`examples/coe-two-sizes.yaml`)",
        "",
        "Two-step routing of the same sub-queries with the example config: a category "
        "(the default experts' domains, with their profiles), then the largest of its two "
        "experts within the parameter budget (`-small`: SmolLM2-135M; `-large`: SmolLM2-360M "
        "for math and computer science, SmolLM2-1.7B for the others); a category under its "
        "threshold goes to the generalist.",
        "",
        *coe_budgets(items, embeddings, train, dev, routes),
        "",
    ]
    embeddings.save()
    settings = (
        f"all-MiniLM-L6-v2, {embeddings.computed} texts embedded in this run "
        f"({len(embeddings.vectors)} cached)"
    )
    header_lines = report_header("Routing benchmark", settings, load_before, started)
    report = "\n".join([*header_lines, "", *lines])
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
