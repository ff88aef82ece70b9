"""Throughput of concurrent requests on one local expert, through the executor.

Each request is a routed one-sub-query plan answered by :class:`QueryExecutor` (so only the
expert costs: no decomposer, router or aggregator). N requests start at once, one thread each
(N = 1, 4, 16, 64); the engine micro-batches what arrives together. Reported per N: requests
per second, p50/p95 latency, the batch sizes the engine formed (``engine.stats``), and the
throughput relative to serial processing (the same requests one after another, measured over
``--serial`` requests).

Backends as in ``bench_latency.py``: ``tiny`` (random 2-layer Llama) and ``smollm2`` (the
embedded SmolLM2-135M), CPU, greedy, ``--max-new-tokens``::

    python benchmarks/bench_throughput.py --repeats 3 --out docs/benchmarks-throughput.md
    python benchmarks/bench_throughput.py --quick   # smoke run, prints the report only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_latency import TOPICS, Backend, build_plan, local_backend
from report import report_header

from langchain_complm import Expert, Plan
from langchain_complm.execute import QueryExecutor

STYLES = ["a short paragraph", "a few sentences", "a brief explanation", "a short note"]
"""With TOPICS, 40 distinct prompts (cycled for larger N)."""


def request_plans(n: int) -> list[Plan]:
    plans = []
    for i in range(n):
        topic, style = TOPICS[i % len(TOPICS)], STYLES[(i // len(TOPICS)) % len(STYLES)]
        plan = build_plan([("q1", "a", ())])
        sq = plan.sub_queries[0]
        question = f"Write {style} about {topic}."
        route = sq.route.model_copy(update={"question": question}) if sq.route else None
        plans.append(
            plan.model_copy(
                update={
                    "sub_queries": (sq.model_copy(update={"question": question, "route": route}),)
                }
            )
        )
    return plans


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def concurrent(executor: QueryExecutor, plans: list[Plan]) -> tuple[float, list[float]]:
    """Wall time of all plans started at once (one thread each) and each one's latency."""
    n = len(plans)
    barrier = threading.Barrier(n + 1)
    latencies = [0.0] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            result = executor.invoke(plans[i])
            if result.failed:
                raise RuntimeError(str({k: r.error for k, r in result.failed.items()}))
        except BaseException as exc:
            errors.append(exc)
        latencies[i] = time.perf_counter() - started

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"requests failed: {errors[0]!r}")
    return wall, latencies


def serial(executor: QueryExecutor, plans: list[Plan]) -> list[float]:
    latencies = []
    for plan in plans:
        started = time.perf_counter()
        executor.invoke(plan)
        latencies.append(time.perf_counter() - started)
    return latencies


def bench_backend(
    backend: Backend, counts: list[int], repeats: int, n_serial: int, max_batch_size: int
) -> str:
    llm = backend.experts["a"].llm.model_copy(update={"max_batch_size": max_batch_size})
    executor = QueryExecutor(experts=[Expert(name="a", llm=llm)])
    engine = llm.engine
    serial_latencies = serial(executor, request_plans(n_serial))
    serial_rate = len(serial_latencies) / sum(serial_latencies)
    lines = [
        f"## {backend.label}",
        "",
        f"Serial: {n_serial} requests one after another, {serial_rate:.2f} requests/s, "
        f"p50 latency {statistics.median(serial_latencies):.3f} s. "
        f"Concurrent: `max_batch_size={max_batch_size}`, median of {repeats} runs "
        "(the run with the median wall time is shown).",
        "",
        "| concurrent requests | wall (s) | requests/s | vs serial | p50 latency (s) "
        "| p95 latency (s) | batches formed (size x count) | mean batch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in counts:
        plans = request_plans(n)
        runs = []
        for _ in range(repeats):
            engine.reset_stats()
            wall, latencies = concurrent(executor, plans)
            runs.append((wall, latencies, engine.stats.batch_sizes))
        wall, latencies, sizes = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        rate = n / wall
        formed = ", ".join(f"{size}x{count}" for size, count in sorted(Counter(sizes).items()))
        lines.append(
            f"| {n} | {wall:.2f} | {rate:.2f} | {rate / serial_rate:.2f}x "
            f"| {statistics.median(latencies):.3f} | {percentile(latencies, 0.95):.3f} "
            f"| {formed} | {statistics.mean(sizes):.1f} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 1, 4; 1 repeat")
    parser.add_argument("--backends", default="tiny,smollm2")
    parser.add_argument("--counts", default="1,4,16,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serial", type=int, default=8, help="requests timed one by one")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args()
    if args.quick:
        args.counts, args.repeats, args.serial = "1,4", 1, 2
        args.max_new_tokens = min(args.max_new_tokens, 8)

    load_before = os.getloadavg()
    started = time.perf_counter()
    sections = []
    for name in args.backends.split(","):
        print(f"backend {name}...", file=sys.stderr, flush=True)
        backend = local_backend(name, args.max_new_tokens, None)
        sections.append(
            bench_backend(
                backend,
                [int(n) for n in args.counts.split(",")],
                args.repeats,
                args.serial,
                args.max_batch_size,
            )
        )
    report = "\n".join(
        [
            *report_header(
                "Benchmarks: throughput of concurrent requests on one local expert",
                f"{args.max_new_tokens} new tokens max, greedy; each request is a one-sub-query "
                "plan run by `QueryExecutor` in its own thread",
                load_before,
                started,
            ),
            "",
            *(f"{section}\n" for section in sections),
        ]
    )
    if args.out:
        args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
