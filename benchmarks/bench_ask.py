"""End-to-end latency of `complm ask` on the embedded default, and routing time per plan.

Runs the real CLI as a subprocess (process start and model loading included), then reads the
per-stage timings from its JSON output. Prints a Markdown table; `--out FILE` also writes it.

    python benchmarks/bench_ask.py --out docs/benchmarks-ask.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUESTIONS = [
    "What is 15% of 80? What are the common symptoms of iron-deficiency anemia?",
    "What is the capital of Australia, and who wrote the novel 1984?",
    "How many minutes are in 3.5 hours? What does the mitochondria do in a cell?",
    "What is a binary search tree? In which year did World War II end?",
    "What is the boiling point of water in Fahrenheit, and what is 12 times 7?",
]


def run_ask(question: str, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "langchain_complm", "ask", "--json", "-q", question],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"complm ask failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def routing_time_per_plan(repeats: int) -> tuple[float, int]:
    """Median seconds to route one plan of 3 sub-queries with the real MiniLM router."""
    from langchain_complm import Plan, SubQuery
    from langchain_complm.config import load_default_experts
    from langchain_complm.models.embedded import default_embeddings
    from langchain_complm.route import EmbeddingRouter

    router = EmbeddingRouter(experts=load_default_experts(), embeddings=default_embeddings())
    plan = Plan(
        query="q",
        sub_queries=(
            SubQuery(id="q1", question="What is 15% of 80?"),
            SubQuery(id="q2", question="What are the symptoms of iron-deficiency anemia?"),
            SubQuery(id="q3", question="Who wrote the novel 1984?"),
        ),
    )
    router.route_plan(plan)  # profiles are embedded once, on first use
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        router.route_plan(plan)
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(plan.sub_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--route-repeats", type=int, default=50)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    rows = []
    for question in QUESTIONS:
        wall, output = run_ask(question, env)
        timings = output["timings"]
        rows.append(
            "| {q} | {n} | {experts} | {wall:.1f} | {d:.2f} | {r:.3f} | {e:.2f} | {a:.2f} |".format(
                q=question,
                n=len(output["plan"]["sub_queries"]),
                experts=", ".join(r["expert"] or "-" for r in output["results"].values()),
                wall=wall,
                d=timings["decompose"],
                r=timings["route"],
                e=timings["execute"],
                a=timings["aggregate"],
            )
        )
        print(f"done: {question[:50]}... {wall:.1f} s", file=sys.stderr)
    route_s, route_n = routing_time_per_plan(args.route_repeats)

    table = "\n".join(
        [
            "| question | sub-queries | experts | `complm ask` wall (s) | decompose (s) "
            "| route (s) | execute (s) | aggregate (s) |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Routing one plan of {route_n} sub-queries with MiniLM (profiles already embedded): "
            f"median {route_s * 1000:.1f} ms over {args.route_repeats} runs.",
        ]
    )
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
