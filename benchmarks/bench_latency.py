"""Latency of the executor's scheduling modes on typical plan shapes, against their bounds.

For every plan shape (chain, fan-out 2/4/8, diamond, skewed, mixed experts) and mode
(``superstep``, ``eager``, ``sequential``) it runs a hand-built routed plan through
:class:`~langchain_complm.execute.executor.QueryExecutor` and reports the median wall time, the
speed-up over ``sequential``, and the ratio to three bounds computed from each sub-query's
cost:

- critical path: ``Plan.critical_path(cost)``, the best any schedule can do with unlimited
  parallelism;
- level bound: the sum over ``Plan.levels()`` of the slowest sub-query of each level, what
  LangGraph supersteps can do at best;
- batched bound (local models only): the sum over levels of one batched ``generate`` per
  model for the level's prompts, measured; what supersteps with perfect micro-batching cost
  on a device that runs one ``generate`` at a time.

Backends: ``mock`` experts sleep a fixed latency per expert (the cost is that latency);
``tiny`` is a random-weight 2-layer Llama on the CPU, ``smollm2`` the embedded SmolLM2-135M
and ``opt-1.3b`` OPT-1.3B-shaped random weights, both on ``--device`` (the latter meant for a
GPU: ``--backends opt-1.3b --device cuda:0``); all greedy, ``--max-new-tokens`` (the cost of a
sub-query is its median duration when run alone, in ``sequential`` mode). It also measures the
orchestration overhead per sub-query: mock experts with no latency, (wall time - model time) /
sub-queries.

Writes a Markdown report and a PNG plot::

    python benchmarks/bench_latency.py --repeats 3 \\
        --out docs/benchmarks-latency.md --plot docs/latency.png
    python benchmarks/bench_latency.py --quick   # smoke run, prints the report only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypedDict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableLambda
from report import report_header

from langchain_complm import Expert, Plan, RoutingDecision, SubQuery
from langchain_complm.execute import QueryExecutor
from langchain_complm.execute.executor import ExecutionResult

MODES = ("superstep", "eager", "sequential")

# (id, expert, depends_on); experts: "a", "b", "c" (mixed) and "slow" (skewed).
Shape = list[tuple[str, str, tuple[str, ...]]]


def fan_out(n: int) -> Shape:
    return [(f"q{i + 1}", "a", ()) for i in range(n)]


SHAPES: dict[str, Shape] = {
    "chain(4)": [("q1", "a", ()), ("q2", "a", ("q1",)), ("q3", "a", ("q2",)), ("q4", "a", ("q3",))],
    "fan-out 2": fan_out(2),
    "fan-out 4": fan_out(4),
    "fan-out 8": fan_out(8),
    "diamond": [
        ("q1", "a", ()),
        ("q2", "a", ("q1",)),
        ("q3", "a", ("q1",)),
        ("q4", "a", ("q2", "q3")),
    ],
    # One slow branch next to a chain of fast ones: supersteps make f2 and f3 wait for s1.
    "skewed": [("s1", "slow", ()), ("f1", "a", ()), ("f2", "a", ("f1",)), ("f3", "a", ("f2",))],
    "mixed experts": [
        ("q1", "a", ()),
        ("q2", "b", ()),
        ("q3", "c", ()),
        ("q4", "a", ()),
        ("q5", "b", ("q1", "q2", "q3", "q4")),
    ],
}

MOCK_LATENCY = {"a": 0.10, "b": 0.15, "c": 0.20, "slow": 0.35}
"""Seconds per call of each mock expert."""

TOPICS = [
    "volcanoes",
    "the moon",
    "honey bees",
    "rainbows",
    "the Roman empire",
    "photosynthesis",
    "glaciers",
    "chess",
    "coffee",
    "the ocean",
]
SYSTEM_PROMPTS = {
    "a": "You are a helpful science teacher.",
    "b": "You are a helpful historian.",
    "c": "You are a helpful travel guide.",
    "slow": "You are a helpful storyteller.",
}


def build_plan(shape: Shape) -> Plan:
    """A routed plan: each sub-query asks about a topic; dependents use their parents."""
    sub_queries = []
    for k, (sq_id, expert, deps) in enumerate(shape):
        if deps:
            question = "Explain how " + " and ".join(f"{{{d}}}" for d in deps) + " are related."
        else:
            question = f"Write a short paragraph about {TOPICS[k % len(TOPICS)]}."
        sub_queries.append(
            SubQuery(
                id=sq_id,
                question=question,
                depends_on=deps,
                route=RoutingDecision(
                    sub_query_id=sq_id,
                    question=question,
                    expert=expert,
                    score=1.0,
                    scores={expert: 1.0},
                ),
            )
        )
    return Plan(query="benchmark", sub_queries=tuple(sub_queries))


# --- backends ---------------------------------------------------------------------------------


@dataclass
class Backend:
    """Experts by name, and how to measure the batched bound (local models only)."""

    name: str
    label: str
    experts: dict[str, Expert]
    local: bool
    engines: list[Any] = field(default_factory=list)


def sleeping(latency: float) -> Runnable:
    def run(messages: Any) -> str:
        if latency:
            time.sleep(latency)
        return "answer"

    return RunnableLambda(run, name="mock")


def mock_backend(latency: dict[str, float] | None = None) -> Backend:
    latency = MOCK_LATENCY if latency is None else latency
    experts = {e: Expert(name=e, llm=sleeping(s)) for e, s in latency.items()}
    label = "mock experts (sleep " + ", ".join(f"{e} {s:g} s" for e, s in latency.items()) + ")"
    return Backend("mock", label, experts, local=False)


def opt_1_3b(device: str, max_new_tokens: int, **extra: Any) -> tuple[Any, str]:
    """An OPT-1.3B-shaped model with random weights (float16 on a GPU), on ``device``."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from langchain_complm.models.huggingface import ChatLocalHuggingFace
    from langchain_complm.models.testing import smollm2_tokenizer

    tokenizer = smollm2_tokenizer()
    torch.manual_seed(0)
    # facebook/opt-1.3b's dimensions; the vocabulary is the tokenizer's (49k, not OPT's 50k).
    config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=2048,
        word_embed_proj_dim=2048,
        ffn_dim=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    model = OPTForCausalLM(config).to(device=device, dtype=dtype).eval()
    llm = ChatLocalHuggingFace.from_model(
        model, tokenizer, model_id="opt-1.3b-random", max_new_tokens=max_new_tokens, **extra
    )
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    return llm, f"OPT-1.3B-shaped random weights ({dtype}), {where}"


def local_backend(
    name: str, max_new_tokens: int, batch_window_ms: float | None, device: str = "cpu"
) -> Backend:
    """Experts over local models: a, b, c and slow (3x the tokens) over one model; for the
    tiny backend b and c run other random models, to exercise the device lock."""
    from langchain_complm.models.huggingface import ChatLocalHuggingFace

    extra = {} if batch_window_ms is None else {"batch_window_ms": batch_window_ms}
    if name == "smollm2":
        from langchain_complm.models.embedded import default_chat_model

        base = default_chat_model(device=device, max_new_tokens=max_new_tokens, **extra)
        models = {e: base for e in ("a", "b", "c")}
        label = f"SmolLM2-135M-Instruct, {device}, greedy, {max_new_tokens} new tokens max"
    elif name == "opt-1.3b":
        base, label = opt_1_3b(device, max_new_tokens, **extra)
        models = {e: base for e in ("a", "b", "c")}
        label += f", greedy, {max_new_tokens} new tokens"
    else:
        from langchain_complm.models.testing import smollm2_tokenizer, tiny_llama

        tokenizer = smollm2_tokenizer()
        models = {
            e: ChatLocalHuggingFace.from_model(
                tiny_llama(tokenizer, seed=seed),
                tokenizer,
                model_id=f"tiny-{seed}",
                max_new_tokens=max_new_tokens,
                **extra,
            )
            for seed, e in enumerate(("a", "b", "c"))
        }
        base = models["a"]
        label = (
            f"random tiny Llama (2 layers, hidden 64; experts b and c are other random models), "
            f"CPU, greedy, {max_new_tokens} new tokens"
        )
    slow = base.model_copy(update={"max_new_tokens": 3 * max_new_tokens})
    llms = {**models, "slow": slow}
    experts = {
        e: Expert(name=e, llm=llm, system_prompt=SYSTEM_PROMPTS[e]) for e, llm in llms.items()
    }
    engines = list({id(llm.engine): llm.engine for llm in llms.values()}.values())
    # Warm-up: the first generate pays one-off allocations.
    for llm in models.values():
        llm.invoke("Hello")
    return Backend(name, label, experts, local=True, engines=engines)


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Cell:
    """Measurements of one shape in one mode."""

    walls: list[float] = field(default_factory=list)
    durations: dict[str, list[float]] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    """Batch sizes formed in the last run."""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def run_once(executor: QueryExecutor, plan: Plan, backend: Backend, cell: Cell) -> None:
    for engine in backend.engines:
        engine.reset_stats()
    started = time.perf_counter()
    result: ExecutionResult = executor.invoke(plan)
    cell.walls.append(time.perf_counter() - started)
    failed = result.failed
    if failed:
        raise SystemExit(f"sub-queries failed: { {k: r.error for k, r in failed.items()} }")
    for sq_id, r in result.results.items():
        cell.durations.setdefault(sq_id, []).append(r.duration or 0.0)
        cell.prompts[sq_id] = r.prompt or ""
    cell.batch_sizes = [b for engine in backend.engines for b in engine.stats.batch_sizes]


def measure(
    backend: Backend, shapes: dict[str, Shape], repeats: int, progress: Callable[[str], None]
) -> dict[str, dict[str, Cell]]:
    cells: dict[str, dict[str, Cell]] = {}
    executors = {m: QueryExecutor(experts=backend.experts, mode=m) for m in MODES}
    # Each mode's first run pays one-off costs (measured: chain(4) on SmolLM2 took 6.0 s in
    # superstep mode against 5.0 s later); one one-sub-query run per mode absorbs them.
    for mode in MODES:
        run_once(executors[mode], build_plan(fan_out(1)), backend, Cell())
    for shape_name, shape in shapes.items():
        plan = build_plan(shape)
        cells[shape_name] = {m: Cell() for m in MODES}
        if backend.name != "smollm2":  # warm-up (LangGraph's first run of a graph)
            for mode in MODES:
                run_once(executors[mode], plan, backend, Cell())
        # Interleave the modes so that load from other processes hits them alike.
        for _ in range(repeats):
            for mode in MODES:
                run_once(executors[mode], plan, backend, cells[shape_name][mode])
        progress(
            f"  {backend.name} {shape_name}: "
            + ", ".join(f"{m} {cells[shape_name][m].wall:.3f} s" for m in MODES)
        )
    return cells


def costs(backend: Backend, shape: Shape, cell: Cell) -> dict[str, float]:
    """Cost of each sub-query: the mock latency, or its median duration run alone."""
    if not backend.local:
        return {sq_id: MOCK_LATENCY[expert] for sq_id, expert, _ in shape}
    return {sq_id: statistics.median(d) for sq_id, d in cell.durations.items()}


def level_bound(plan: Plan, cost: dict[str, float]) -> float:
    return sum(max(cost[sq_id] for sq_id in level) for level in plan.levels())


def messages_for(backend: Backend, expert: str, prompt: str) -> list[BaseMessage]:
    system = backend.experts[expert].system_prompt
    return [SystemMessage(system), HumanMessage(prompt)] if system else [HumanMessage(prompt)]


def batched_bound(backend: Backend, shape: Shape, prompts: dict[str, str], repeats: int) -> float:
    """Sum over levels of one batched call per (model, settings) for the level's prompts."""
    plan = build_plan(shape)
    expert_of = {sq_id: expert for sq_id, expert, _ in shape}
    total = 0.0
    for level in plan.levels():
        groups: dict[int, tuple[Any, list[list[BaseMessage]]]] = {}
        for sq_id in level:
            llm = backend.experts[expert_of[sq_id]].llm
            key = hash((id(llm.engine), llm.max_new_tokens))
            groups.setdefault(key, (llm, []))[1].append(
                messages_for(backend, expert_of[sq_id], prompts[sq_id])
            )
        for llm, batch in groups.values():
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                llm.batch(batch, {"max_concurrency": len(batch)})
                times.append(time.perf_counter() - started)
            total += statistics.median(times)
    return total


def median_wall(call: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``call``."""
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def overhead(shapes: dict[str, Shape], repeats: int) -> dict[str, dict[str, float]]:
    """Milliseconds per sub-query of executor overhead, with experts that cost nothing."""
    backend = mock_backend(dict.fromkeys(MOCK_LATENCY, 0.0))
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        executor = QueryExecutor(experts=backend.experts, mode=mode)
        for shape_name, shape in shapes.items():
            plan = build_plan(shape)
            executor.invoke(plan)  # warm-up
            wall = median_wall(partial(executor.invoke, plan), repeats)
            out.setdefault(shape_name, {})[mode] = 1000 * wall / len(shape)
    return out


def pool_cap(repeats: int) -> dict[str, tuple[float, float]]:
    """Fan-out 8 on mock experts: wall time with the default config and with
    ``max_concurrency=16`` in the invoke config (LangGraph's thread pool size)."""
    backend = mock_backend()
    plan = build_plan(SHAPES["fan-out 8"])
    out = {}
    for mode in ("superstep", "eager"):
        executor = QueryExecutor(experts=backend.experts, mode=mode)
        walls: dict[str, list[float]] = {"default": [], "16": []}
        for _ in range(repeats):
            for key, config in (("default", None), ("16", {"max_concurrency": 16})):
                started = time.perf_counter()
                executor.invoke(plan, config)
                walls[key].append(time.perf_counter() - started)
        out[mode] = (statistics.median(walls["default"]), statistics.median(walls["16"]))
    return out


def _merge(left: dict, right: dict) -> dict:
    return {**left, **right}


class _FloorState(TypedDict):
    done: Annotated[dict, _merge]


def langgraph_floor(widths: Sequence[int], repeats: int) -> dict[int, tuple[float, float]]:
    """Fan-outs of bare LangGraph: nodes (a StateGraph) or tasks (the functional API) that
    only sleep 0.1 s, run as the executor runs them (a thread per branch). The wall time
    over 0.1 s is what LangGraph itself costs, before any of this package's work."""
    from langgraph.func import entrypoint, task
    from langgraph.graph import END, START, StateGraph

    def branch(i: int) -> Callable[[Any], Any]:
        def run(_: Any) -> Any:
            time.sleep(0.1)
            return {"done": {i: True}}

        return run

    def timed(graph: Any, config: dict[str, Any]) -> float:
        graph.invoke({"done": {}}, config)  # warm-up
        return median_wall(lambda: graph.invoke({"done": {}}, config), repeats)

    def state_graph(width: int) -> Any:
        builder = StateGraph(_FloorState)
        for i in range(width):
            builder.add_node(f"n{i}", branch(i))
            builder.add_edge(START, f"n{i}")
            builder.add_edge(f"n{i}", END)
        return builder.compile()

    def functional(width: int) -> Any:
        tasks = [task(name=f"t{i}")(branch(i)) for i in range(width)]

        @entrypoint()
        def fan(_: Any) -> list[Any]:
            return [future.result() for future in [t(None) for t in tasks]]

        return fan

    return {
        width: (
            timed(state_graph(width), {"max_concurrency": width}),
            timed(functional(width), {"max_concurrency": 2 * width + 1}),
        )
        for width in widths
    }


# --- report ---------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    shape: str
    mode: str
    wall: float
    speedup: float
    critical_path: float
    level: float
    batched: float | None
    batch_sizes: list[int]


def rows_for(
    backend: Backend,
    cells: dict[str, dict[str, Cell]],
    shapes: dict[str, Shape],
    batched_repeats: int,
) -> list[Row]:
    rows = []
    for shape_name, by_mode in cells.items():
        shape = shapes[shape_name]
        plan = build_plan(shape)
        cost = costs(backend, shape, by_mode["sequential"])
        cp = plan.critical_path(cost)[1]
        lb = level_bound(plan, cost)
        batched = (
            batched_bound(backend, shape, by_mode["sequential"].prompts, batched_repeats)
            if backend.local
            else None
        )
        seq = by_mode["sequential"].wall
        for mode in MODES:
            cell = by_mode[mode]
            rows.append(
                Row(
                    backend.name,
                    shape_name,
                    mode,
                    cell.wall,
                    seq / cell.wall,
                    cp,
                    lb,
                    batched,
                    cell.batch_sizes,
                )
            )
    return rows


def batch_column(row: Row) -> str:
    # The batch sizes of the last run (they repeat run to run).
    return str(row.batch_sizes) if row.batch_sizes else ""


def table(rows: Sequence[Row], local: bool) -> str:
    head = (
        "| shape | mode | wall (s) | speed-up vs sequential | critical path (s) | wall / "
        "critical path | level bound (s) | wall / level bound |"
    )
    sep = "| --- | --- | --- | --- | --- | --- | --- | --- |"
    if local:
        head += " batched bound (s) | wall / batched bound | batch sizes (last run) |"
        sep += " --- | --- | --- |"
    lines = [head, sep]
    for r in rows:
        line = (
            f"| {r.shape} | {r.mode} | {r.wall:.3f} | {r.speedup:.2f}x | {r.critical_path:.3f} "
            f"| {r.wall / r.critical_path:.2f} | {r.level:.3f} | {r.wall / r.level:.2f} |"
        )
        if local:
            assert r.batched is not None
            line += f" {r.batched:.3f} | {r.wall / r.batched:.2f} | {batch_column(r)} |"
        lines.append(line)
    return "\n".join(lines)


def plot(rows: Sequence[Row], labels: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r.backend for r in rows))
    fig, axes = plt.subplots(len(backends), 1, figsize=(11, 3.6 * len(backends)), squeeze=False)
    for ax, backend in zip(axes[:, 0], backends, strict=True):
        mine = [r for r in rows if r.backend == backend]
        shapes = list(dict.fromkeys(r.shape for r in mine))
        width = 0.27
        for k, mode in enumerate(MODES):
            values = [
                next(r.speedup for r in mine if r.shape == s and r.mode == mode) for s in shapes
            ]
            xs = [i + (k - 1) * width for i in range(len(shapes))]
            ax.bar(xs, values, width, label=mode)
        # Best possible speed-up: sequential wall over the critical path.
        bound = [
            next(r.wall / r.critical_path for r in mine if r.shape == s and r.mode == "sequential")
            for s in shapes
        ]
        ax.scatter(
            range(len(shapes)),
            bound,
            marker="_",
            s=600,
            color="black",
            zorder=3,
            label="sequential / critical path",
        )
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_ylabel("speed-up vs sequential")
        ax.set_title(labels[backend], fontsize=10)
        ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, few shapes")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (median shown)")
    parser.add_argument(
        "--backends", default="mock,tiny,smollm2", help="also: opt-1.3b (for a GPU)"
    )
    parser.add_argument("--device", default="cpu", help="device of smollm2 and opt-1.3b")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--batch-window-ms", type=float, default=None, help="engine batch window (default: 5)"
    )
    parser.add_argument("--overhead-repeats", type=int, default=30)
    parser.add_argument("--shapes", help=f"comma-separated subset of: {', '.join(SHAPES)}")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here")
    args = parser.parse_args()
    shapes = SHAPES
    if args.quick:
        args.repeats, args.overhead_repeats = 1, 5
        args.max_new_tokens = min(args.max_new_tokens, 8)
        shapes = {k: SHAPES[k] for k in ("chain(4)", "fan-out 4", "skewed", "mixed experts")}
    if args.shapes:
        shapes = {k: SHAPES[k] for k in args.shapes.split(",")}

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[Row] = []
    labels: dict[str, str] = {}
    for name in args.backends.split(","):
        progress(f"backend {name}...")
        backend = (
            mock_backend()
            if name == "mock"
            else local_backend(name, args.max_new_tokens, args.batch_window_ms, args.device)
        )
        labels[name] = backend.label
        cells = measure(backend, shapes, args.repeats, progress)
        # SmolLM2's batched calls are slow and steady: one timing each.
        rows += rows_for(backend, cells, shapes, 1 if name == "smollm2" else args.repeats)
    progress("orchestration overhead...")
    over = overhead(shapes, args.overhead_repeats)
    cap = pool_cap(args.repeats + 2)
    floor = langgraph_floor((2, 4, 8), args.overhead_repeats)

    out = [
        *report_header(
            "Benchmarks: executor latency by plan shape and scheduling mode",
            f"median of {args.repeats} runs per cell, modes interleaved",
            load_before,
            started,
        ),
        "",
        "Columns: speed-up = sequential wall / wall. Critical path = `Plan.critical_path(cost)`; "
        "level bound = sum over `Plan.levels()` of each level's slowest sub-query; cost = the "
        "mock latency, or for local models the sub-query's median duration in `sequential` "
        "mode (run alone). Batched bound = sum over levels of one measured batched call per "
        "model for the level's prompts.",
    ]
    for name in labels:
        mine = [r for r in rows if r.backend == name]
        out += ["", f"## {labels[name]}", "", table(mine, local=mine[0].batched is not None)]
    out += [
        "",
        "## Orchestration overhead",
        "",
        f"Mock experts that answer at once (model time 0), median of {args.overhead_repeats} "
        "runs: wall time per sub-query in ms (LangGraph tasks, scheduling, prompts, trace).",
        "",
        "| shape | " + " | ".join(MODES) + " |",
        "| --- |" + " --- |" * len(MODES),
    ]
    for shape_name, by_mode in over.items():
        out.append(f"| {shape_name} | " + " | ".join(f"{by_mode[m]:.2f}" for m in MODES) + " |")
    out += [
        "",
        "## Thread pool size",
        "",
        "Fan-out 8 on mock experts (0.1 s each; critical path 0.1 s). Without "
        "`max_concurrency` LangGraph runs sync nodes in a new thread pool of Python's default "
        f"size, min(32, CPU cores + 4) = {min(32, (os.cpu_count() or 1) + 4)} here:",
        "",
        "| mode | wall, default config (s) | wall, `max_concurrency=16` in the config (s) |",
        "| --- | --- | --- |",
        *(f"| {mode} | {a:.3f} | {b:.3f} |" for mode, (a, b) in cap.items()),
        "",
        "## LangGraph's own floor",
        "",
        "Bare LangGraph fan-outs whose branches only sleep 0.1 s, run as the executor runs "
        f"them (median of {args.overhead_repeats}): what LangGraph costs before any of this "
        "package's work. `superstep` builds on the StateGraph, `eager` on the functional API.",
        "",
        "| shape | StateGraph wall (s) | / 0.1 s | functional API wall (s) | / 0.1 s |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| fan-out {w} | {a:.3f} | {a / 0.1:.2f} | {b:.3f} | {b / 0.1:.2f} |"
            for w, (a, b) in floor.items()
        ),
    ]
    report = "\n".join(out) + "\n"
    if args.plot:
        plot(rows, labels, args.plot)
        relative = os.path.relpath(args.plot, (args.out or Path("x")).parent)
        report += f"\n![speed-up by shape and mode]({relative})\n"
    if args.out:
        args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
