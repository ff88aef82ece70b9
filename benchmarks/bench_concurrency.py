"""Concurrent ``ainvoke`` throughput of the whole pipeline, and its overhead per sub-query.

Fake models only, so what is measured is the orchestration: a decomposer that writes two
independent sub-queries naming the question, two experts that each take ``--latency`` seconds
(an asyncio sleep when awaited; a ``time.sleep`` when called sync), and an aggregator that
joins their answers. N requests
are kept in flight (N = 100, 300, 1000 by default; ``--rounds`` x N requests in all), each with
a question of its own. Reported per N: requests per second, p50/p95 latency, CPU time per
request, errors, and cross-talk (a request whose plan, sub-answers or answer name another
request's question).

The overhead per sub-query is the marginal cost of one more sub-query: the median wall time
of one request whose plan fans out to 8 sub-queries minus one of 2, divided by 6, with
experts that answer at once (``invoke`` and ``ainvoke``)::

    python benchmarks/bench_concurrency.py --out docs/benchmarks-concurrency.md
    python benchmarks/bench_concurrency.py --quick   # N = 20, 50; prints the report only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableLambda
from report import report_header

from langchain_complm import Expert, create_comp_llm
from langchain_complm.decompose import SubQueryGenerator


class InstantChat(BaseChatModel):
    """A chat model with native sync and async paths that answers at once: ``reply(text)``
    of the last message."""

    mode: str  # "plan": a plan of ``width`` sub-queries naming the question; "join": echo

    width: int = 2

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _reply(self, messages: list[BaseMessage]) -> str:
        text = messages[-1].text
        if self.mode == "join":
            return " | ".join(line.strip() for line in text.splitlines() if "answer to" in line)
        question = text.removeprefix("Question: ").strip()
        return json.dumps(
            {
                "sub_queries": [
                    {"id": f"q{i}", "question": f"part {i} of [{question}]", "depends_on": []}
                    for i in range(1, self.width + 1)
                ]
            }
        )

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._reply(messages)))])

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        return self._generate(messages)

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(self._reply(messages)))

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(self._reply(messages)))


class OneHotEmbeddings(Embeddings):
    """Routes every sub-query to the first expert; costs nothing."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0]


def build(latency: float, width: int = 2) -> Any:
    async def answer(messages: Any) -> str:
        await asyncio.sleep(latency)
        return f"answer to {messages[-1].text}"

    def answer_sync(messages: Any) -> str:  # the same latency for a sync caller, in a thread
        time.sleep(latency)
        return f"answer to {messages[-1].text}"

    experts = [
        Expert(name=name, description=name, llm=RunnableLambda(answer_sync, afunc=answer))
        for name in ("a", "b")
    ]
    return create_comp_llm(
        experts,
        # The plan is the workload: repair would merge its look-alike parts into one.
        generator=SubQueryGenerator(llm=InstantChat(mode="plan", width=width), repair=False),
        router=OneHotEmbeddings(),
        aggregator=InstantChat(mode="join"),
    )


def crossed(question: str, out: Any) -> bool:
    """Whether the output names another request's question (or misses its own)."""
    # The output state; a CompLLMOutput when run against the code before the pipeline was a
    # StateGraph (to measure what it replaced with this same script).
    get = out.__getitem__ if isinstance(out, dict) else lambda key: getattr(out, key)
    mark = f"[{question}]"
    texts = [sq.question for sq in get("plan").sub_queries]
    texts += [r.answer or "" for r in get("results").values()]
    own = get("query") == question and mark in get("answer")
    return not own or not all(mark in t for t in texts)


async def throughput(comp: Any, in_flight: int, rounds: int) -> dict[str, Any]:
    total = in_flight * rounds
    questions = [f"question {i:05d}" for i in range(total)]
    latencies: list[float] = []
    errors = crosstalk = 0
    slots = asyncio.Semaphore(in_flight)

    async def one(question: str) -> None:
        nonlocal errors, crosstalk
        async with slots:
            started = time.perf_counter()
            try:
                out = await comp.ainvoke(question)
            except Exception:
                errors += 1
                return
            latencies.append(time.perf_counter() - started)
            crosstalk += crossed(question, out)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(q) for q in questions))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latencies.sort()
    return {
        "in flight": in_flight,
        "requests": total,
        "req/s": total / wall,
        "p50 s": statistics.median(latencies) if latencies else float("nan"),
        "p95 s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "CPU ms/request": 1000 * cpu / total,
        "errors": errors,
        "cross-talk": crosstalk,
    }


def median_cost(call: Any, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``call`` (CPU time, of every thread of the process, is
    what a loaded machine does not inflate much)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def overhead(repeats: int) -> dict[str, tuple[float, float]]:
    """Wall and CPU ms of one more sub-query, (fan-out 8 - fan-out 2) / 6, experts answering
    at once; and of a whole request of 2."""
    out = {}
    for name in ("invoke", "ainvoke"):
        costs = {}
        for width in (2, 8):
            comp = build(0.0, width)
            if name == "invoke":
                comp.invoke("warm-up")
                costs[width] = median_cost(lambda c=comp: c.invoke("q"), repeats)
            else:
                loop = asyncio.new_event_loop()
                loop.run_until_complete(comp.ainvoke("warm-up"))
                run = lambda c=comp, lp=loop: lp.run_until_complete(c.ainvoke("q"))  # noqa: E731
                costs[width] = median_cost(run, repeats)
                loop.close()
        out[f"{name}: one more sub-query"] = tuple(  # type: ignore[assignment]
            1000 * (b - a) / 6 for a, b in zip(costs[2], costs[8], strict=True)
        )
        out[f"{name}: a whole request of 2"] = tuple(1000 * x for x in costs[2])  # type: ignore[assignment]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--rounds", type=int, default=3, help="requests = rounds x in flight")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per expert call")
    parser.add_argument("--repeats", type=int, default=30, help="runs per overhead timing")
    parser.add_argument("--quick", action="store_true", help="N = 20, 50; 1 round; no file")
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args()
    if args.quick:
        args.in_flight, args.rounds, args.repeats, args.out = [20, 50], 1, 5, None
    load, started = os.getloadavg(), time.perf_counter()

    rows = []
    for in_flight in args.in_flight:
        comp = build(args.latency)
        asyncio.run(comp.ainvoke("warm-up"))
        rows.append(asyncio.run(throughput(comp, in_flight, args.rounds)))
        print(rows[-1], flush=True)
    costs = overhead(args.repeats)

    lines = report_header(
        "Concurrent ainvoke throughput and per-sub-query overhead",
        f"fake models, experts of {args.latency:g} s asyncio latency, 2 sub-queries a request",
        load,
        started,
    )
    keys = list(rows[0])
    lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Overhead of one more sub-query (median of "
        f"{args.repeats}, experts answering at once), ms:",
        "",
        "| measure | wall ms | CPU ms |",
        "|---|---|---|",
        *(f"| {k} | {wall:.2f} | {cpu:.2f} |" for k, (wall, cpu) in costs.items()),
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
