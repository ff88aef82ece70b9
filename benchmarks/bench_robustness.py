"""Parse and repair time against reply size, and splitter time against query size, on
adversarial input; and what a timeout costs a call that does not time out.

For every kind of adversarial text in :mod:`langchain_complm.evaluation.adversarial` (bracket
runs, deep nesting, unterminated strings, quotes, Python literals, long valid plans, ...) and a
range of sizes, it times :func:`~langchain_complm.decompose.parse_plan` on replies and
:func:`~langchain_complm.decompose.structural.split_query` on queries (median of
``--repeats`` runs), and prints a Markdown table per function: one row per kind, one column per
size, plus the worst kind per size. Plan repair is timed, with the parse, on the valid plans
of :func:`~langchain_complm.evaluation.adversarial.adversarial_plans` (a model looping on
one hop, restated parts, a fan-in over every answer) up to the longest reply read. Linear
work shows as times that grow with the size (and stop growing past the 64 K characters a
reply is read to); the quadratic and exponential code this replaced took seconds on a few
hundred characters, and plan repair took 14 s on a 1,000-hop loop.

Timeouts: a timed sync call runs in a thread of its own. The last table is the median wall time
of calls that finish in time, with the default timeout and with none: a bare
:func:`~langchain_complm.concurrency.call_with_timeout`, a decomposition by a fake model, and a
fan-out of 4 mock experts (no latency) through the executor.

Writes a Markdown report::

    python benchmarks/bench_robustness.py --out docs/benchmarks-robustness.md
    python benchmarks/bench_robustness.py --quick   # smoke run, prints the report only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda
from report import report_header

from langchain_complm import Expert, FailurePolicy, Plan, RoutingDecision, SubQuery
from langchain_complm.concurrency import DEFAULT_TIMEOUT, call_with_timeout
from langchain_complm.decompose import SubQueryGenerator, parse_plan
from langchain_complm.decompose._parser import MAX_REPLY_CHARS
from langchain_complm.decompose.repair import repair_plan
from langchain_complm.decompose.structural import split_query
from langchain_complm.evaluation.adversarial import (
    REPAIR_QUERY,
    adversarial_plans,
    adversarial_queries,
    adversarial_replies,
)
from langchain_complm.execute import QueryExecutor
from langchain_complm.pipeline import DEFAULT_MAX_QUERY_CHARS

REPLY_SIZES = (1_000, 4_000, 16_000, MAX_REPLY_CHARS, 4 * MAX_REPLY_CHARS)
QUERY_SIZES = (250, 1_000, 2_000, 4_000, DEFAULT_MAX_QUERY_CHARS)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with contextlib.suppress(ValueError):  # a rejected reply is an outcome, not a failure
            call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(
    inputs: Callable[[int], dict[str, str]],
    run: Callable[[str], object],
    sizes: tuple[int, ...],
    repeats: int,
) -> dict[str, dict[int, float]]:
    """Milliseconds by kind, then by size."""
    table: dict[str, dict[int, float]] = {}
    for size in sizes:
        for kind, text in inputs(size).items():
            table.setdefault(kind, {})[size] = median_ms(lambda t=text: run(t), repeats)
    return table


def markdown(
    title: str, unit: str, table: dict[str, dict[int, float]], sizes: tuple[int, ...]
) -> list[str]:
    lines = [
        f"## {title}",
        "",
        f"Milliseconds (median) by input kind and {unit} length in characters.",
        "",
        "| kind | " + " | ".join(f"{s:,}" for s in sizes) + " |",
        "| --- |" + " ---: |" * len(sizes),
    ]
    for kind, by_size in table.items():
        lines.append(f"| {kind} | " + " | ".join(f"{by_size[s]:.1f}" for s in sizes) + " |")
    worst = [max(table, key=lambda k, s=s: table[k][s]) for s in sizes]
    lines.append(
        "| **worst** | "
        + " | ".join(f"**{table[k][s]:.1f}** ({k})" for k, s in zip(worst, sizes, strict=True))
        + " |"
    )
    return lines


def timeout_overhead(repeats: int) -> list[str]:
    """Markdown rows: ms per call without a timeout and with the default one."""
    names = ("a", "b", "c", "d")
    experts = [Expert(name=n, description=n, llm=RunnableLambda(lambda _: "ok")) for n in names]
    plan = Plan(
        query="q",
        sub_queries=tuple(
            SubQuery(
                id=f"q{i}",
                question="Q?",
                route=RoutingDecision(
                    sub_query_id=f"q{i}", question="Q?", expert=n, score=1, scores={}
                ),
            )
            for i, n in enumerate(names, start=1)
        ),
    )
    reply = '{"sub_queries": [{"id": "q1", "question": "A?"}, {"id": "q2", "question": "B?"}]}'
    calls: dict[str, Callable[[float | None], Callable[[], object]]] = {
        "call_with_timeout (a call that returns at once)": lambda t: partial(
            call_with_timeout, int, t, "noop"
        ),
        "SubQueryGenerator.invoke (fake model)": lambda t: partial(
            SubQueryGenerator(llm=FakeListChatModel(responses=[reply]), timeout=t).invoke, "Q?"
        ),
        "QueryExecutor.invoke, fan-out 4 (mock experts)": lambda t: partial(
            QueryExecutor(experts=experts, failure_policy=FailurePolicy(timeout=t)).invoke, plan
        ),
    }
    rows = [
        f"| call | no timeout (ms) | timeout {DEFAULT_TIMEOUT:g} s (ms) |",
        "| --- | ---: | ---: |",
    ]
    for label, make in calls.items():
        untimed, timed = (median_ms(make(t), repeats) for t in (None, DEFAULT_TIMEOUT))
        rows.append(f"| {label} | {untimed:.3f} | {timed:.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=5, help="runs per cell (median shown)")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args()
    reply_sizes, query_sizes = REPLY_SIZES, QUERY_SIZES
    if args.quick:
        args.repeats, reply_sizes, query_sizes = 1, REPLY_SIZES[:2], QUERY_SIZES[:2]

    load_before = os.getloadavg()
    started = time.perf_counter()
    replies = measure(adversarial_replies, lambda t: parse_plan(t, "q"), reply_sizes, args.repeats)
    plan_sizes = tuple(s for s in reply_sizes if s <= MAX_REPLY_CHARS)
    repaired = measure(
        adversarial_plans,
        lambda t: repair_plan(parse_plan(t, REPAIR_QUERY)),
        plan_sizes,
        args.repeats,
    )
    queries = measure(adversarial_queries, split_query, query_sizes, args.repeats)
    overhead = timeout_overhead(20 if args.quick else 200)
    out = [
        *report_header(
            "Benchmarks: parser, repair and splitter time on adversarial input",
            f"median of {args.repeats} runs per cell",
            load_before,
            started,
        ),
        "",
        *markdown("parse_plan: time against reply size", "reply", replies, reply_sizes),
        "",
        *markdown(
            "parse_plan + repair_plan: time against reply size", "reply", repaired, plan_sizes
        ),
        "",
        *markdown("split_query: time against query size", "query", queries, query_sizes),
        "",
        "## What a timeout costs a call that finishes in time",
        "",
        *overhead,
    ]
    report = "\n".join(out) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
