"""Run benchmark systems over items, resumably, then score them and write the report.

Layout of a results folder (one dataset, split and seed)::

    <out>/predictions/<system>.jsonl   one Prediction per line, appended item by item
    <out>/results.md                   Markdown tables: overall and per-domain accuracy
    <out>/results.json                 the same summaries as JSON
    <out>/accuracy_vs_parameters.png   accuracy against total parameters, one point a system

A run appends each prediction as soon as it is made (flushed and synced), so an interrupted
run keeps every finished item, and a rerun skips the item ids already in the file. A line
cut short by a crash is dropped when the file is read back.

Scores (see :mod:`langchain_complm.evaluation.metrics`):

* ``accuracy``: items whose final answer gets every final part right (all-parts-correct);
* ``part_acc``: share of final parts right in the final answers;
* ``sub_acc``: items whose per-part answers (the matched sub-queries' answers) are all right,
  for systems with a plan, on items with a gold plan;
* ``em`` / ``f1``: exact match and token F1 of the final answer for free-text parts
  (multi-hop questions);
* ``plan_f1``, ``edge_f1``, ``count_ok``: the plan against the gold plan (sub-query F1,
  dependency-edge F1, share with the gold number of sub-queries);
* ``routing``: share of matched sub-queries routed to the expert of their gold domain.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from langchain_complm.benchmarks.systems import Prediction, System
from langchain_complm.evaluation.metrics import score_item, score_item_plan
from langchain_complm.evaluation.multiexpertqa import Item

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
REPORT_MD = "results.md"
REPORT_JSON = "results.json"
REPORT_PLOT = "accuracy_vs_parameters.png"

OnError = Literal["record", "raise"]
"""What a system's exception on one item does: ``record`` it (the item scores as wrong) and
go on, or ``raise`` it. ``KeyboardInterrupt`` always stops the run."""


# --- predictions files ------------------------------------------------------------------------


def predictions_path(out_dir: str | os.PathLike[str], system: str) -> Path:
    """The JSONL file of ``system``'s predictions under ``out_dir``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", system.replace(":", "--"))
    return Path(out_dir) / PREDICTIONS_DIR / f"{safe}.jsonl"


def load_predictions(path: str | os.PathLike[str]) -> dict[str, Prediction]:
    """Predictions by item id (the last one wins); unreadable lines, such as one cut short
    by a crash, are skipped with a warning. A missing file gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, Prediction] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                prediction = Prediction.model_validate_json(line)
            except ValidationError:
                logger.warning("%s:%d: skipping an unreadable prediction line", path, number)
                continue
            out[prediction.item_id] = prediction
    return out


def _open_for_append(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            complete = f.read(1) == b"\n"
        if not complete:  # a line cut short: start a new one so the next record stays valid
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")
    return path.open("a", encoding="utf-8")


def run_system(
    system: System,
    items: Sequence[Item],
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    on_error: OnError = "record",
    on_prediction: Callable[[Prediction], None] | None = None,
) -> dict[str, Prediction]:
    """Answer every item not yet in ``system``'s predictions file, appending each prediction
    as soon as it is made; returns all predictions of ``items`` by item id, in item order.

    Args:
        progress: show a tqdm progress bar on stderr.
        on_error: see :data:`OnError`.
        on_prediction: called with each new prediction after it is written.
    """
    from tqdm.auto import tqdm

    path = predictions_path(out_dir, system.name)
    done = load_predictions(path)
    todo = [item for item in items if item.id not in done]
    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        desc=system.name,
        unit="item",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        if todo:
            system.warm_up()
        with _open_for_append(path) as f:
            for item in todo:
                try:
                    prediction = system.predict(item)
                except Exception as exc:
                    if on_error == "raise":
                        raise
                    logger.warning("%s failed on %s: %s", system.name, item.id, exc)
                    prediction = Prediction(
                        item_id=item.id,
                        system=system.name,
                        answer="",
                        latency=0.0,
                        total_parameters=system.total_parameters,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                f.write(prediction.model_dump_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
                done[item.id] = prediction
                bar.update(1)
                if on_prediction is not None:
                    on_prediction(prediction)
    finally:
        bar.close()
    return {item.id: done[item.id] for item in items if item.id in done}


# --- scoring ----------------------------------------------------------------------------------


class ItemResult(BaseModel):
    """The scores of one prediction."""

    item_id: str
    correct: bool
    part_accuracy: float
    sub_correct: bool | None = None
    text_em: list[float] = Field(default_factory=list)
    text_f1: list[float] = Field(default_factory=list)
    plan_f1: float | None = None
    edge_f1: float | None = None
    count_ok: bool | None = None
    routing: float | None = None
    domains: dict[str, list[bool]] = Field(default_factory=dict)
    """Domain -> correctness of each final part of that domain."""


def score_prediction(
    item: Item, prediction: Prediction, domain_experts: Mapping[str, str] | None = None
) -> ItemResult:
    """Score one prediction (answer, per-part answers and plan) against its item."""
    final = score_item(item, prediction.answer)
    parts = {p.id: p for p in item.parts}
    domains: dict[str, list[bool]] = defaultdict(list)
    em, f1 = [], []
    for score in final.parts:
        part = parts[score.part_id]
        domains[part.domain].append(score.correct)
        if part.answer_type == "text":
            em.append(score.exact_match)
            f1.append(score.f1)
    result = ItemResult(
        item_id=item.id,
        correct=final.all_correct,
        part_accuracy=final.part_accuracy,
        text_em=em,
        text_f1=f1,
        domains=dict(domains),
    )
    if prediction.part_answers is not None and item.gold_plan is not None:
        result.sub_correct = score_item(item, prediction.part_answers).all_correct
    if prediction.plan is not None:
        plan = score_item_plan(item, prediction.plan, domain_experts=domain_experts)
        result.plan_f1 = plan.sub_query_f1
        result.edge_f1 = plan.edge_f1
        result.count_ok = plan.count_match
        result.routing = plan.routing_accuracy
    return result


class SystemSummary(BaseModel):
    """One system's scores over the items it answered (one row of the report)."""

    system: str
    dataset: str
    n: int = Field(description="Items answered and scored.")
    n_expected: int = Field(description="Items the run asked for.")
    errors: int = 0
    accuracy: float | None = None
    part_acc: float | None = None
    sub_acc: float | None = None
    em: float | None = None
    f1: float | None = None
    plan_f1: float | None = None
    edge_f1: float | None = None
    count_ok: float | None = None
    routing: float | None = None
    latency_mean: float | None = None
    latency_median: float | None = None
    total_parameters: int | None = None
    active_parameters: float | None = None
    domains: dict[str, float] = Field(default_factory=dict)
    """Domain -> share of its final parts answered right."""
    domain_counts: dict[str, int] = Field(default_factory=dict)


def _mean(values: Iterable[float | bool | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarize(
    system: str,
    items: Sequence[Item],
    predictions: Mapping[str, Prediction],
    domain_experts: Mapping[str, str] | None = None,
) -> SystemSummary:
    """Score ``system``'s predictions of ``items`` (items without a prediction are left out;
    ``n`` says how many were scored)."""
    scored = [(item, predictions[item.id]) for item in items if item.id in predictions]
    results = [score_prediction(item, pred, domain_experts) for item, pred in scored]
    preds = [pred for _, pred in scored]
    domains: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        for domain, marks in r.domains.items():
            domains[domain].extend(marks)
    latencies = [p.latency for p in preds if p.error is None or p.latency > 0]
    totals = {p.total_parameters for p in preds if p.total_parameters is not None}
    return SystemSummary(
        system=system,
        dataset=items[0].dataset if items else "",
        n=len(results),
        n_expected=len(items),
        errors=sum(p.error is not None for p in preds),
        accuracy=_mean(r.correct for r in results),
        part_acc=_mean(r.part_accuracy for r in results),
        sub_acc=_mean(r.sub_correct for r in results),
        em=_mean(v for r in results for v in r.text_em),
        f1=_mean(v for r in results for v in r.text_f1),
        plan_f1=_mean(r.plan_f1 for r in results),
        edge_f1=_mean(r.edge_f1 for r in results),
        count_ok=_mean(r.count_ok for r in results),
        routing=_mean(r.routing for r in results),
        latency_mean=_mean(latencies),
        latency_median=statistics.median(latencies) if latencies else None,
        total_parameters=max(totals) if totals else None,
        active_parameters=_mean(p.active_parameters for p in preds),
        domains={d: sum(m) / len(m) for d, m in sorted(domains.items())},
        domain_counts={d: len(m) for d, m in sorted(domains.items())},
    )


def summarize_dir(
    out_dir: str | os.PathLike[str],
    items: Sequence[Item],
    domain_experts: Mapping[str, str] | None = None,
    systems: Sequence[str] | None = None,
) -> list[SystemSummary]:
    """Summaries of every system with a predictions file under ``out_dir`` (or of
    ``systems``), in :data:`~langchain_complm.benchmarks.systems.SYSTEM_NAMES` order."""
    folder = Path(out_dir) / PREDICTIONS_DIR
    found: dict[str, dict[str, Prediction]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        predictions = load_predictions(path)
        if predictions:
            name = next(iter(predictions.values())).system
            if systems is None or name in systems:
                found[name] = predictions
    summaries = [summarize(name, items, preds, domain_experts) for name, preds in found.items()]
    return sorted(summaries, key=lambda s: _system_order(s.system))


def _system_order(name: str) -> tuple[int, str]:
    from langchain_complm.benchmarks.systems import SYSTEM_NAMES

    base = name.split(":", 1)[0]
    return (SYSTEM_NAMES.index(base) if base in SYSTEM_NAMES else len(SYSTEM_NAMES), name)


# --- report -----------------------------------------------------------------------------------


def format_parameters(value: float | None) -> str:
    """``157.1M``, ``1.5B``, or ``–`` when unknown."""
    if value is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _sec(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


SUMMARY_COLUMNS = (
    *("system", "items", "accuracy %", "part acc %", "sub-answer acc %", "EM %", "F1 %"),
    *("plan F1 %", "edge F1 %", "count ok %", "routing %", "latency mean s"),
    *("latency median s", "total params", "active params"),
)
"""Columns of :func:`summary_table`."""


def summary_table(summaries: Sequence[SystemSummary]) -> str:
    """The overall Markdown table, one row per system."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + " --- |" * len(SUMMARY_COLUMNS)]
    for s in summaries:
        items = f"{s.n}" if s.n == s.n_expected else f"{s.n}/{s.n_expected}"
        if s.errors:
            items += f" ({s.errors} err)"
        cells = [
            s.system,
            items,
            _pct(s.accuracy),
            _pct(s.part_acc),
            _pct(s.sub_acc),
            _pct(s.em),
            _pct(s.f1),
            _pct(s.plan_f1),
            _pct(s.edge_f1),
            _pct(s.count_ok),
            _pct(s.routing),
            _sec(s.latency_mean),
            _sec(s.latency_median),
            format_parameters(s.total_parameters),
            format_parameters(s.active_parameters),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def domain_table(summaries: Sequence[SystemSummary]) -> str:
    """Per-domain accuracy of the final parts (the number of parts in the header)."""
    counts: dict[str, int] = {}
    for s in summaries:
        for domain, count in s.domain_counts.items():
            counts[domain] = max(counts.get(domain, 0), count)
    domains = sorted(counts)
    head = "| system | " + " | ".join(f"{d} ({counts[d]})" for d in domains) + " |"
    lines = [head, "|" + " --- |" * (len(domains) + 1)]
    for s in summaries:
        cells = [_pct(s.domains.get(d)) for d in domains]
        lines.append(f"| {s.system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: str | os.PathLike[str],
    summaries: Sequence[SystemSummary],
    *,
    title: str = "Accuracy benchmark",
    notes: Sequence[str] = (),
    plot: bool = True,
) -> dict[str, Path]:
    """Write ``results.md``, ``results.json`` and (with ``plot``) the accuracy-vs-parameters
    PNG under ``out_dir``; returns their paths by kind (``md``, ``json``, ``png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / REPORT_MD, "json": out / REPORT_JSON}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"# {title}", "", f"Written {stamp}.", ""]
    body += [*(f"- {note}" for note in notes), ""] if notes else []
    body += ["## Overall", "", summary_table(summaries), ""]
    body += ["## Final-part accuracy by domain (%)", "", domain_table(summaries), ""]
    if plot:
        paths["png"] = plot_accuracy_vs_parameters(summaries, out / REPORT_PLOT, title=title)
        body += [f"![accuracy vs total parameters]({REPORT_PLOT})", ""]
    paths["md"].write_text("\n".join(body), encoding="utf-8")
    paths["json"].write_text(
        json.dumps([s.model_dump(mode="json") for s in summaries], indent=2) + "\n",
        encoding="utf-8",
    )
    return paths


def plot_accuracy_vs_parameters(
    summaries: Sequence[SystemSummary], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Accuracy (all parts correct, %) against total parameters (log scale), one point per
    system and one colour per dataset: the shape of the Comp-LLM paper's Figure 1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 5), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    points = [s for s in summaries if s.total_parameters and s.accuracy is not None]
    datasets = list(dict.fromkeys(s.dataset for s in points))
    markers = "osD^v"
    placed: dict[float, int] = defaultdict(int)
    for index, dataset in enumerate(datasets):
        rows = [s for s in points if s.dataset == dataset]
        xs = [float(s.total_parameters or 0) for s in rows]
        ys = [100 * (s.accuracy or 0.0) for s in rows]
        ax.scatter(xs, ys, s=50, marker=markers[index % len(markers)], label=dataset, zorder=3)
        for s, x, y in zip(rows, xs, ys, strict=True):
            # Systems often share a point or a height: stack the labels of one height.
            offset = placed[round(y, 1)]
            placed[round(y, 1)] += 1
            ax.annotate(
                s.system,
                (x, y),
                textcoords="offset points",
                xytext=(6, 4 - 10 * offset),
                fontsize=7,
            )
    ax.set_xscale("log")
    ax.set_xlabel("total parameters")
    ax.set_ylabel("accuracy (all parts correct, %)")
    ax.set_ylim(bottom=-2, top=max([5.0, *(100 * (s.accuracy or 0) + 5 for s in points)]))
    if points:
        low = min(float(s.total_parameters or 1) for s in points)
        high = max(float(s.total_parameters or 1) for s in points)
        ax.set_xlim(low / 2, high * 2)
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if datasets:
        ax.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def run_benchmark(
    systems: Sequence[System],
    items: Sequence[Item],
    out_dir: str | os.PathLike[str],
    *,
    domain_experts: Mapping[str, str] | None = None,
    progress: bool = True,
    on_error: OnError = "record",
    title: str | None = None,
    notes: Sequence[str] = (),
    plot: bool = True,
) -> list[SystemSummary]:
    """Run every system over ``items`` (resumably), then score all the systems with
    predictions under ``out_dir`` and write the report there; returns the summaries."""
    for system in systems:
        run_system(system, items, out_dir, progress=progress, on_error=on_error)
    summaries = summarize_dir(out_dir, items, domain_experts)
    if title is None and items:
        first = items[0]
        title = f"{first.dataset} ({first.split}, seed {first.id.split('/')[2]}, n={len(items)})"
    write_report(out_dir, summaries, title=title or "Accuracy benchmark", notes=notes, plot=plot)
    return summaries


__all__ = [
    "REPORT_JSON",
    "REPORT_MD",
    "REPORT_PLOT",
    "ItemResult",
    "OnError",
    "SystemSummary",
    "domain_table",
    "format_parameters",
    "load_predictions",
    "plot_accuracy_vs_parameters",
    "predictions_path",
    "run_benchmark",
    "run_system",
    "score_prediction",
    "summarize",
    "summarize_dir",
    "summary_table",
    "write_report",
]
