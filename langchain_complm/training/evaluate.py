"""Evaluate a Sub-query Generator on the benchmark's dev or test split, and learning curves.

Metrics per example, averaged (overall and per kind):

* ``json_valid``: the model's first reply parses into a valid plan (no retry, no fallback);
* ``exact_match``: same sub-questions (whitespace-normalized) in the same order, same edges;
* ``sub_query_f1`` and ``edge_f1``: :func:`~langchain_complm.evaluation.metrics.score_plan`
  of the plan the pipeline would use (the single-sub-query fallback when the reply is invalid).

Examples: the split's parallel and chain items (gold plans from the builder) and single source
questions of the split, whose gold plan is the question itself (the generator must not split
them). Evaluate with the seed the training data was built with, so splits stay disjoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_complm.evaluation.plans import (
    FRESH_HELDOUT_FILE,
    PlanExample,
    heldout_examples,
    multihop_examples,
    plan_shape_ok,
)
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, Plan

Progress = Callable[[str], None]
METRICS = ("json_valid", "exact_match", "count_match", "sub_query_f1", "edge_f1", "shape")
CURVE_METRICS = ("json_valid", "exact_match", "sub_query_f1", "edge_f1")
"""The learning curve's columns (its points since the first curve have these)."""


def eval_examples(
    split: str = "dev",
    n: int = 60,
    seed: int = 0,
    *,
    singles: float = 0.25,
    max_chars: int | None = None,
    data_dir: Any = None,
) -> list[PlanExample]:
    """``n`` examples of a split: compound items with gold plans and a share of singles.

    Args:
        split: ``"dev"`` or ``"test"`` (never ``"train"``); ``"heldout"``: the first ``n``
            held-out compound questions; ``"heldout-2"``: the same of the fresh set;
            ``"multihop"``: ``n`` multi-hop questions of each kind from the test split (see
            :mod:`langchain_complm.evaluation.plans`);
            ``"multihop-dev"``: the same from the dev split, a second sample.
        n: number of examples.
        seed: the builder's seed (use the training data's).
        singles: share of single source questions.
        max_chars: leave out queries longer than this (smoke runs keep generation short).
        data_dir: benchmark data location.
    """
    from langchain_complm.evaluation.multiexpertqa import build_dataset

    if split == "heldout":
        return heldout_examples()[:n]
    if split == "heldout-2":
        return heldout_examples(FRESH_HELDOUT_FILE)[:n]
    if split in {"multihop", "multihop-dev"}:
        return multihop_examples(
            n, "dev" if split == "multihop-dev" else "test", seed, data_dir=data_dir
        )
    if split == "train":
        raise ValueError("evaluate on 'dev' or 'test'; the generator is trained on 'train'")
    items = None
    size = 1000
    while items is None:
        try:
            items = build_dataset("multiexpertqa-all", split, size, seed=seed, data_dir=data_dir)  # type: ignore[arg-type]
        except ValueError:
            if size < 20:
                raise
            size = int(size * 0.8)
    compound = [i for i in items if i.gold_plan is not None]
    parts = [p for i in compound for p in i.parts if p.source != "synthetic"]

    def fits(text: str) -> bool:
        return max_chars is None or len(text) <= max_chars

    n_single = round(n * singles)
    chosen = [
        PlanExample(query=i.question, gold=i.gold_plan, kind=i.kind)  # type: ignore[arg-type]
        for i in compound
        if fits(i.question)
    ][: n - n_single]
    chosen += [
        PlanExample(query=p.prompt, gold=Plan.single(p.prompt), kind="single")
        for p in parts[::-1]  # from the end: other questions than the compounds' first ones
        if fits(p.prompt)
    ][:n_single]
    return chosen


@dataclass
class EvalReport:
    """Averages over the examples, overall and per kind, with per-example rows."""

    n: int
    metrics: dict[str, float]
    by_kind: dict[str, dict[str, float]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "metrics": self.metrics,
            "by_kind": self.by_kind,
            "seconds": self.seconds,
            "rows": self.rows,
        }


def _normalized(plan: Plan) -> list[tuple[str, tuple[str, ...]]]:
    return [(" ".join(sq.question.split()), tuple(sq.depends_on)) for sq in plan.sub_queries]


def score_reply(
    text: str,
    example: PlanExample,
    max_sub_queries: int = DEFAULT_MAX_SUB_QUERIES,
    *,
    repair: bool = True,
) -> dict[str, Any]:
    """Metrics of one raw model reply against the example (see the module docstring)."""
    from langchain_complm.decompose.generator import plan_from_reply
    from langchain_complm.evaluation.metrics import score_plan

    def plan_of(repaired: bool) -> Plan | None:
        try:
            return plan_from_reply(
                text, example.query, max_sub_queries=max_sub_queries, repair=repaired
            )
        except ValueError:
            return None

    valid = plan_of(False) is not None
    plan = plan_of(repair) or Plan.single(example.query, fallback_reason="invalid")
    row: dict[str, Any] = {
        "kind": example.kind,
        "json_valid": float(valid),
        "shape": float(plan_shape_ok(plan, example.kind, example.gold)),
        "n_predicted": len(plan.sub_queries),
        "repairs": list(plan.repairs),
        # The plan scored, for reading: a shape check sees the graph, not the questions.
        "sub_queries": [[sq.question, list(sq.depends_on)] for sq in plan.sub_queries],
    }
    if example.gold is not None:
        score = score_plan(plan, example.gold)
        row |= {
            "exact_match": float(
                not plan.is_fallback and _normalized(plan) == _normalized(example.gold)
            ),
            "count_match": float(score.count_match or False),
            "sub_query_f1": score.sub_query_f1 or 0.0,
            "edge_f1": score.edge_f1 or 0.0,
            "n_gold": len(example.gold.sub_queries),
        }
    return row


def evaluate_generator(
    generator: Any,
    examples: Sequence[PlanExample],
    *,
    batch_size: int = 8,
    keep_replies: bool = False,
    progress: Progress | None = None,
    repair: bool = True,
) -> EvalReport:
    """Run a :class:`~langchain_complm.decompose.SubQueryGenerator`'s model once per example
    (batched) and score the raw replies.

    The generator's own prompt and decoding are used (its structured output: constrained
    decoding on a local model); its retry and fallback are not, so ``json_valid`` measures
    the model. The other metrics score the plan the pipeline would run: repaired unless
    ``repair=False``, the fallback when the reply is invalid.
    """
    from langchain_complm.decompose.generator import reply_text

    started = time.perf_counter()
    router = generator.shape_router
    queries = [example.query for example in examples]
    shapes = router.batch(queries) if router is not None else [None] * len(examples)
    rows: dict[int, dict[str, Any]] = {}
    # Plans copy their query, so reply length follows query length: batching similar
    # lengths keeps a batch from generating for its longest member alone. A batch holds
    # one shape's questions: one model writes it.
    order = sorted(range(len(examples)), key=lambda i: (shapes[i] or "", len(queries[i])))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for shape in dict.fromkeys(shapes[i] for i in chunk):
            part = [i for i in chunk if shapes[i] == shape]
            model = generator.reply_model(shape)
            replies = model.batch([generator.messages(queries[i]) for i in part])
            for i, reply in zip(part, replies, strict=True):
                row = _row(
                    reply_text(reply), examples[i], generator.max_sub_queries, keep_replies, repair
                )
                rows[i] = row if shape is None else row | {"question_shape": shape}
        if progress is not None:
            progress(f"evaluated {len(rows)}/{len(examples)}")
    return _report([rows[i] for i in range(len(examples))], time.perf_counter() - started)


def rescore_replies(
    replies: Mapping[str, str],
    examples: Sequence[PlanExample],
    max_sub_queries: int = DEFAULT_MAX_SUB_QUERIES,
    *,
    repair: bool = True,
) -> EvalReport:
    """Score replies kept by an earlier evaluation (query -> raw reply, e.g. the ``rows`` of
    a ``--report`` file) against ``examples``, without generating: the way to see what a
    parser change, or repair (``repair``), does to a model's numbers.

    Raises:
        ValueError: naming the first example without a reply (the replies were made for
            other examples: another split, ``n`` or seed).
    """
    rows = []
    for k, example in enumerate(examples, start=1):
        if example.query not in replies:
            raise ValueError(
                f"no kept reply for example {k} of {len(examples)} ({example.query[:60]!r}...): "
                "the report was made for other examples (split, n or seed)"
            )
        rows.append(_row(replies[example.query], example, max_sub_queries, True, repair))
    return _report(rows, 0.0)


def _row(
    text: str, example: PlanExample, max_sub_queries: int, keep_reply: bool, repair: bool
) -> dict[str, Any]:
    row = score_reply(text, example, max_sub_queries, repair=repair)
    return row | {"query": example.query, "reply": text} if keep_reply else row


def _report(rows: list[dict[str, Any]], seconds: float) -> EvalReport:
    def mean(subset: list[dict[str, Any]]) -> dict[str, float]:
        # Multi-hop examples have no gold plan: their plan metrics are not averaged in.
        values = {m: [r[m] for r in subset if m in r] for m in METRICS}
        return {m: round(sum(v) / len(v), 4) for m, v in values.items() if v}

    kinds = sorted({r["kind"] for r in rows})
    return EvalReport(
        n=len(rows),
        metrics=mean(rows) if rows else {},
        by_kind={k: mean([r for r in rows if r["kind"] == k]) for k in kinds},
        rows=rows,
        seconds=round(seconds, 1),
    )


# --- learning curve ---------------------------------------------------------------------------


def learning_curve(
    sizes: Sequence[int],
    out: str | Path,
    *,
    examples: Sequence[PlanExample],
    train_options: dict[str, Any] | None = None,
    generator_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Train one generator per training-set size (nested sets) and evaluate each.

    Size 0 evaluates the untrained base with the trained generator's prompt. Each point is
    saved in ``<out>/curve.json`` as it finishes; points already there are reused, so an
    interrupted curve resumes. A finished training run already in ``<out>/n<size>`` with
    the same settings (e.g. the main run trained there with ``complm train-generator``) is
    evaluated without retraining; an interrupted one continues from its checkpoint.

    Args:
        sizes: training-set sizes.
        out: folder for the models (``<out>/n<size>``) and ``curve.json``.
        examples: evaluation examples (see :func:`eval_examples`).
        train_options: :class:`~langchain_complm.training.train.TrainConfig` fields.
        generator_options: :func:`~langchain_complm.models.trained.load_trained_generator`
            arguments (``max_new_tokens``, ``device``, ...).
    """
    from langchain_complm.decompose.trained import trained_generator
    from langchain_complm.models.huggingface import ChatLocalHuggingFace
    from langchain_complm.models.trained import load_trained_generator, resolve_base
    from langchain_complm.training.train import TrainConfig, finished_run, train_generator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curve_path = out / "curve.json"
    points: list[dict[str, Any]] = (
        json.loads(curve_path.read_text()) if curve_path.is_file() else []
    )
    done = {p["n_train"] for p in points}
    train_options = dict(train_options or {})
    generator_options = dict(generator_options or {})
    for size in sizes:
        if size in done:
            continue
        started = time.perf_counter()
        info: dict[str, Any] = {"n_train": size}
        if size == 0:
            config = TrainConfig(**train_options)
            llm = ChatLocalHuggingFace.from_model_id(
                resolve_base(config.base),
                device=generator_options.get("device"),
                max_new_tokens=generator_options.get("max_new_tokens", 256),
            )
            generator = trained_generator(
                llm, constrained=generator_options.get("constrained", True)
            )
            info["steps"] = 0
        else:
            config = TrainConfig(
                **(train_options | {"n_train": size, "out": str(out / f"n{size}")})
            )
            metadata = finished_run(config)
            if metadata is None:
                metadata = train_generator(config, resume=True).metadata
            generator = load_trained_generator(config.out, **generator_options)
            info |= {"steps": metadata["steps"], "final_loss": metadata["final_loss"]}
        if progress is not None:
            progress(f"n_train={size}: evaluating on {len(examples)} examples")
        report = evaluate_generator(generator, examples, progress=progress)
        info |= {"metrics": report.metrics, "by_kind": report.by_kind, "n_eval": report.n}
        info["seconds"] = round(time.perf_counter() - started, 1)
        points.append(info)
        points.sort(key=lambda p: p["n_train"])
        curve_path.write_text(json.dumps(points, indent=2) + "\n", encoding="utf-8")
    return [p for p in points if p["n_train"] in set(sizes)]


def write_curve(
    points: Sequence[dict[str, Any]], markdown: str | Path, png: str | Path, *, title: str
) -> None:
    """The curve as a Markdown table (``markdown``) and a line plot (``png``, matplotlib)."""
    lines = [
        f"### {title}",
        "",
        "| training pairs | steps | JSON valid | exact match | sub-query F1 | edge F1 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        m = p["metrics"]
        lines.append(
            f"| {p['n_train']} | {p.get('steps', '')} | "
            + " | ".join(f"{m[k]:.2f}" for k in CURVE_METRICS)
            + " |"
        )
    Path(markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(markdown).write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["n_train"] for p in points]
    for metric in CURVE_METRICS:
        ax.plot(xs, [p["metrics"][metric] for p in points], marker="o", label=metric)
    ax.set_xlabel("training pairs")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


__all__ = [
    "METRICS",
    "EvalReport",
    "eval_examples",
    "evaluate_generator",
    "learning_curve",
    "score_reply",
    "write_curve",
]
