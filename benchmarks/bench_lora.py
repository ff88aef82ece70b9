"""Fan-outs over *different* experts: separate models against LoRA adapters on one base.

Every sub-query of a fan-out of 2, 4 or 8 goes to a different expert, each expert a fine-tune
of one base model, served two ways:

- ``separate``: each expert is its own model (the adapter merged into its own copy of the
  base), with its own :class:`~langchain_complm.models.GenerationEngine`; engines on one device
  take turns, so different experts hardly overlap;
- ``lora``: every expert is a LoRA adapter over one shared base in one
  :class:`~langchain_complm.models.LoraEngine`, which answers a level's sub-queries for
  different adapters in one mixed-adapter ``generate``.

Each plan runs through :class:`~langchain_complm.execute.QueryExecutor` in ``sequential``
(the baseline), ``superstep`` and ``eager`` mode; the table gives the median wall time, the
speed-up over sequential and the batch sizes formed. The memory table compares N experts as
separate models with N adapters on one base (tensor bytes, shared tensors counted once, and the
process's resident memory growth while building them).

The experts are ``--adapters`` folders (e.g. ``runs/expert-*`` from ``complm train-expert``)
or, by default, random LoRA adapters of the same shape (rank 8 on every linear layer) with a
small scale, so answers stay fluent and of full length: the cost of a LoRA expert, not its
quality.

::

With ``--plan-streaming`` it runs only the plan-streaming tables: the pipeline over the
LoRA experts with plan streaming off and on, for fan-outs 2/4/8 and for end-to-end
questions of 2 and 3 sub-queries (see :func:`streaming_report`).

::

    python benchmarks/bench_lora.py --repeats 2 --out docs/benchmarks-lora.md
    python benchmarks/bench_lora.py --plan-streaming --repeats 3 \\
        --out docs/benchmarks-plan-streaming.md
    python benchmarks/bench_lora.py --quick      # tiny random Llama, prints the report only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_latency import TOPICS, Cell, build_plan, run_once
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from report import report_header

from langchain_complm import Expert
from langchain_complm.execute import QueryExecutor
from langchain_complm.models.huggingface import GenerationSettings

MODES = ("sequential", "superstep", "eager")
WIDTHS = (2, 4, 8)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""What ``complm train-expert`` adapts: every linear layer of the Llama blocks."""


@dataclass
class Backend:
    """Experts e1..eN over local models, the engines to read batch sizes from, and memory."""

    name: str
    experts: dict[str, Expert]
    engines: list[Any]
    tensor_bytes: int
    rss_growth: int


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def base_model(name: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, label) of the base: the embedded SmolLM2 or a tiny random Llama."""
    if name == "smollm2":
        from langchain_complm.models.embedded import default_chat_model

        llm = default_chat_model(device="cpu")
        return llm.engine.model, llm.engine.tokenizer, "SmolLM2-135M-Instruct (float32, CPU)"
    from langchain_complm.models.testing import smollm2_tokenizer, tiny_llama

    tokenizer = smollm2_tokenizer()
    return tiny_llama(tokenizer), tokenizer, "random tiny Llama (2 layers, hidden 64, CPU)"


def adapter_folders(model: Any, given: list[str], n: int, folder: Path) -> list[Path]:
    """``n`` adapter folders: the given ones (repeated if fewer), else random ones."""
    if given:
        return [Path(given[i % len(given)]) for i in range(n)]
    from langchain_complm.models.testing import random_lora_adapters

    # A small scale (alpha / r = 0.05) keeps the answers those of a working model.
    dirs = random_lora_adapters(
        model,
        folder,
        [f"e{i + 1}" for i in range(n)],
        r=8,
        lora_alpha=0.4,
        target_modules=TARGET_MODULES,
    )
    return list(dirs.values())


def separate_backend(model: Any, tokenizer: Any, adapters: list[Path], tokens: int) -> Backend:
    """Each expert its own model: a copy of the base with its adapter merged in."""
    from peft import PeftModel

    from langchain_complm.models import ChatLocalHuggingFace
    from langchain_complm.models.pool import model_bytes

    before = rss_bytes()
    llms = []
    for i, folder in enumerate(adapters):
        merged = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).merge_and_unload()
        llms.append(
            ChatLocalHuggingFace.from_model(
                merged.eval(), copy.deepcopy(tokenizer), model_id=f"e{i + 1}", max_new_tokens=tokens
            )
        )
    growth = rss_bytes() - before
    experts = {f"e{i + 1}": Expert(name=f"e{i + 1}", llm=llm) for i, llm in enumerate(llms)}
    engines = [llm.engine for llm in llms]
    size = sum(model_bytes(e.model) for e in engines)
    return Backend("separate", experts, engines, size, growth)


def lora_backend(model: Any, tokenizer: Any, adapters: list[Path], tokens: int) -> Backend:
    """Every expert an adapter of one LoraEngine over the base's weights."""
    from langchain_complm.models import LoraEngine

    before = rss_bytes()
    engine = LoraEngine(model, tokenizer)  # a fresh engine per run: only these adapters
    experts = {
        f"e{i + 1}": Expert(
            name=f"e{i + 1}", llm=engine.chat_model(f"e{i + 1}", folder, max_new_tokens=tokens)
        )
        for i, folder in enumerate(adapters)
    }
    growth = rss_bytes() - before
    return Backend("lora", experts, [engine], engine.memory().total_bytes, growth)


def lora_memory(model: Any, tokenizer: Any, adapters: list[Path]) -> Any:
    """The :class:`~langchain_complm.models.lora.LoraMemory` of one engine with ``adapters``."""
    from langchain_complm.models import LoraEngine

    engine = LoraEngine(model, tokenizer)
    for i, folder in enumerate(adapters):
        engine.load_adapter(f"e{i + 1}", folder)
    memory = engine.memory()
    engine.close()
    return memory


def generate_paths(
    model: Any, tokenizer: Any, adapters: list[Path], tokens: int, repeats: int
) -> dict[int, tuple[float, float, float]]:
    """Seconds of one ``generate`` over a batch whose rows use ``width`` different adapters:
    (the engine's gathered matmul, PEFT's ``adapter_names`` mixed batch, the base alone)."""
    import torch
    from peft.tuners.lora import LoraLayer

    from langchain_complm.models import LoraEngine

    engine = LoraEngine(model, tokenizer)
    names = [f"e{i + 1}" for i in range(len(adapters))]
    for name, folder in zip(names, adapters, strict=True):
        engine.load_adapter(name, folder)
    peft_model: Any = engine.model
    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    out: dict[int, tuple[float, float, float]] = {}
    for width in WIDTHS:
        prompts = [[{"role": "user", "content": f"Tell me about topic {i}."}] for i in range(width)]

        def engine_path(rows: list[str | None], prompts: list[Any] = prompts) -> Any:
            return engine._generate(
                prompts, GenerationSettings(max_new_tokens=tokens), adapters=rows
            )

        def peft_path(rows: list[str], prompts: list[Any] = prompts) -> Any:
            # PEFT's own LoRA layers (the engine replaces their forward and switches their
            # adapters off), with adapter_names.
            engine_forwards = {layer: layer.__dict__.pop("forward") for layer in layers}
            for layer in layers:
                layer.enable_adapters(True)
            try:
                return engine._generate(
                    prompts, GenerationSettings(max_new_tokens=tokens), adapter_names=rows
                )
            finally:
                for layer, forward in engine_forwards.items():
                    layer.forward = forward
                    layer.enable_adapters(False)

        mixed = names[:width]
        assert engine_path(mixed) == peft_path(mixed)  # the same tokens either way
        timings = {"engine": [], "peft": [], "base": []}
        for _ in range(repeats):
            for key, call in (
                ("engine", partial(engine_path, mixed)),
                ("peft", partial(peft_path, mixed)),
                ("base", partial(engine_path, [None] * width)),
            ):
                started = time.perf_counter()
                with torch.inference_mode():
                    call()
                timings[key].append(time.perf_counter() - started)
        out[width] = tuple(statistics.median(timings[k]) for k in ("engine", "peft", "base"))
        print(f"  generate of {width} adapters: {out[width]}", file=sys.stderr, flush=True)
    engine.close()
    return out


def fan_out(width: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """Sub-query q_i goes to expert e_i: every one to a different expert."""
    return [(f"q{i + 1}", f"e{i + 1}", ()) for i in range(width)]


def measure(backend: Backend, repeats: int) -> dict[int, dict[str, Cell]]:
    executors = {m: QueryExecutor(experts=backend.experts, mode=m) for m in MODES}
    for mode in MODES:  # first runs pay one-off costs (graph compile, allocations)
        run_once(executors[mode], build_plan(fan_out(2)), backend, Cell())
    cells: dict[int, dict[str, Cell]] = {}
    for width in WIDTHS:
        plan = build_plan(fan_out(width))
        cells[width] = {m: Cell() for m in MODES}
        for _ in range(repeats):  # modes interleaved: other load hits them alike
            for mode in MODES:
                run_once(executors[mode], plan, backend, cells[width][mode])
        print(
            f"  {backend.name} fan-out {width}: "
            + ", ".join(f"{m} {cells[width][m].wall:.2f} s" for m in MODES),
            file=sys.stderr,
            flush=True,
        )
    return cells


# --- plan streaming -----------------------------------------------------------------------------


class ReplayedPlanner(BaseChatModel):
    """A decomposer served elsewhere: writes a fixed plan token by token, ``token_s`` seconds
    per token, and uses no CPU here. Invoked, it takes as long and returns the whole plan."""

    pieces: list[str]
    token_s: float

    @property
    def _llm_type(self) -> str:
        return "replayed-planner"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        time.sleep(self.token_s * len(self.pieces))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("".join(self.pieces)))])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        for piece in self.pieces:
            time.sleep(self.token_s)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


class ExpertTagEmbeddings(Embeddings):
    """Routes by the ``[eK]`` tag a text carries: routing costs nothing and is always right,
    so the tables measure decomposition and experts only."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _vector(self, text: str) -> list[float]:
        return [float(f"[e{k + 1}]" in text) + 0.01 for k in range(self.n)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


QUESTION_SHAPES: dict[str, list[tuple[str, ...]]] = {
    # Each sub-query's dependencies; sub-query k goes to expert e_k.
    "2, independent": [(), ()],
    "2, chain": [(), ("q1",)],
    "3, independent": [(), (), ()],
    "3, chain": [(), ("q1",), ("q2",)],
    "3, two then a comparison": [(), (), ("q1", "q2")],
}


def plan_reply(shape: list[tuple[str, ...]]) -> str:
    """The decomposer's reply for ``shape``, as the generator's prompt asks for it."""
    items = []
    for k, deps in enumerate(shape, start=1):
        if deps:
            question = f"[e{k}] How are " + " and ".join(f"{{{d}}}" for d in deps) + " related?"
        else:
            question = f"[e{k}] Write a short paragraph about {TOPICS[k % len(TOPICS)]}."
        items.append({"id": f"q{k}", "question": question, "depends_on": list(deps)})
    return json.dumps({"sub_queries": items})


def decode_seconds_per_token(model: Any, tokenizer: Any, tokens: int) -> float:
    """The base model's time per new token, alone (batch 1): the replayed planner's pace."""
    from langchain_complm.models import LoraEngine

    engine = LoraEngine(model, tokenizer)
    settings = GenerationSettings(max_new_tokens=tokens)
    prompt = [[{"role": "user", "content": "Write a short paragraph about the sea."}]]
    engine._generate(prompt, settings, adapters=[None])  # warm-up
    started = time.perf_counter()
    ((_, _, produced, _),) = engine._generate(prompt, settings, adapters=[None])
    engine.close()
    return (time.perf_counter() - started) / max(1, produced)


@dataclass
class StreamCell:
    """Runs of one question shape with or without plan streaming."""

    walls: list[float] = field(default_factory=list)
    first_starts: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def first_start(self) -> float:
        return statistics.median(self.first_starts)


def streaming_runs(
    model: Any,
    tokenizer: Any,
    adapters: list[Path],
    tokens: int,
    repeats: int,
    token_s: float,
    aggregate: bool,
) -> dict[str, dict[bool, StreamCell]]:
    """For each question (fan-outs 2/4/8 without aggregation, or the question shapes with
    the base model aggregating): the pipeline's wall time, plan streaming off and on."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from langchain_complm import create_comp_llm
    from langchain_complm.aggregate import ResponseAggregator
    from langchain_complm.decompose import SubQueryGenerator
    from langchain_complm.models import LoraEngine

    engine = LoraEngine(model, tokenizer)
    n = len(adapters)
    experts = [
        Expert(
            name=f"e{k + 1}",
            description=f"[e{k + 1}]",
            llm=engine.chat_model(f"e{k + 1}", folder, max_new_tokens=tokens),
        )
        for k, folder in enumerate(adapters)
    ]
    if aggregate:
        shapes = QUESTION_SHAPES
        aggregator = ResponseAggregator(llm=engine.chat_model(None, max_new_tokens=tokens))
    else:
        shapes = {f"fan-out {w}": [()] * w for w in WIDTHS}
        aggregator = ResponseAggregator(llm=FakeListChatModel(responses=["done"]))
    cells: dict[str, dict[bool, StreamCell]] = {}
    for name, shape in [("warm-up", [(), ()]), *shapes.items()]:
        reply = plan_reply(shape)
        ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        pieces = [tokenizer.decode([i]) for i in ids]
        assert "".join(pieces) == reply
        planner = ReplayedPlanner(pieces=pieces, token_s=token_s)
        comps = {
            stream: create_comp_llm(
                experts,
                # The plan is the workload (tagged look-alike parts): repair would rewrite it.
                generator=SubQueryGenerator(llm=planner, repair=False),
                router=ExpertTagEmbeddings(n),
                aggregator=aggregator,
                mode="eager",
                max_sub_queries=max(WIDTHS),
                stream_plan=stream,
            )
            for stream in (False, True)
        }
        cells[name] = {stream: StreamCell() for stream in comps}
        for _ in range(1 if name == "warm-up" else repeats):
            for stream, comp in comps.items():  # interleaved: other load hits both alike
                engine.reset_stats()
                started_at, started = time.time(), time.perf_counter()
                out = comp.invoke(f"[benchmark] {name}")
                cell = cells[name][stream]
                cell.walls.append(time.perf_counter() - started)
                results = out["results"].values()
                if any(r.status != "ok" for r in results) or len(results) != len(shape):
                    raise SystemExit(f"{name}: {[(r.id, r.error) for r in results]}")
                cell.first_starts.append(min(r.started_at for r in results) - started_at)
                cell.batch_sizes = engine.stats.batch_sizes
        print(
            f"  {name}: plan then execute {cells[name][False].wall:.2f} s, "
            f"streamed {cells[name][True].wall:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    del cells["warm-up"]
    engine.close()
    return cells


def streaming_report(
    model: Any, tokenizer: Any, adapters: list[Path], tokens: int, repeats: int
) -> list[str]:
    """The plan-streaming tables: LoRA fan-outs, and end-to-end questions of 2 and 3 parts."""
    token_s = decode_seconds_per_token(model, tokenizer, tokens)
    fan_outs = streaming_runs(model, tokenizer, adapters, tokens, repeats, token_s, False)
    questions = streaming_runs(model, tokenizer, adapters, tokens, repeats, token_s, True)

    def rows(cells: dict[str, dict[bool, StreamCell]]) -> list[str]:
        return [
            f"| {name} | {by[False].wall:.2f} | {by[True].wall:.2f} | "
            f"{by[True].wall / by[False].wall:.2f}x | {by[False].first_start:.2f} | "
            f"{by[True].first_start:.2f} | {by[False].batch_sizes} | {by[True].batch_sizes} |"
            for name, by in cells.items()
        ]

    header = [
        "| question | plan then execute (s) | streamed (s) | streamed / plan then execute "
        "| first expert starts (s), plan then execute | first expert starts (s), streamed "
        "| batch sizes, plan then execute | batch sizes, streamed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    return [
        "## Plan streaming",
        "",
        'The pipeline (`create_comp_llm`, `mode="eager"`) with plan streaming off (the '
        "experts start once the plan is complete) and on (`stream_plan=True`: each sub-query "
        "starts once it and its parents are written). The experts are LoRA adapters of one "
        "`LoraEngine`, sub-query k to adapter k. The decomposer is a stand-in for one served "
        "elsewhere: it writes the plan's JSON (the base tokenizer's tokens) at the base "
        f"model's own measured pace alone here, {token_s * 1000:.0f} ms per token, and uses "
        "no CPU of this machine; routing is by a tag in each question (free, always right). "
        "Wall time from the question to the output; median of "
        f"{repeats} runs, the two interleaved.",
        "",
        "Fan-outs over different adapters, decomposition and experts only (a fan-out's "
        "answers are not aggregated):",
        "",
        *header,
        *rows(fan_outs),
        "",
        "End to end: questions of 2 and 3 sub-queries, the base model aggregating their answers:",
        "",
        *header,
        *rows(questions),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Llama, 1 repeat")
    parser.add_argument("--base", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell (median shown)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--adapters", nargs="*", default=[], help="adapter folders (default: random adapters)"
    )
    parser.add_argument(
        "--plan-streaming", action="store_true", help="only the plan-streaming tables"
    )
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args()
    if args.quick:
        args.base, args.repeats, args.max_new_tokens = "tiny", 1, 8

    load_before = os.getloadavg()
    started = time.perf_counter()
    model, tokenizer, label = base_model(args.base)
    source = (
        ", ".join(args.adapters)
        if args.adapters
        else "random LoRA adapters (r 8, all linear layers)"
    )
    settings = f"{label}; experts: {source}; greedy, {args.max_new_tokens} new tokens"
    if args.plan_streaming:
        with tempfile.TemporaryDirectory() as tmp:
            adapters = adapter_folders(model, args.adapters, max(WIDTHS), Path(tmp))
            streaming = streaming_report(
                model, tokenizer, adapters, args.max_new_tokens, args.repeats
            )
        title = "Benchmarks: plan streaming over LoRA experts"
        write(args.out, [*report_header(title, settings, load_before, started), "", *streaming])
        return
    from langchain_complm.models.pool import model_bytes

    one_model = model_bytes(model)
    width = max(WIDTHS)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = adapter_folders(model, args.adapters, width, Path(tmp))
        rows: list[tuple[str, int, str, Cell, float]] = []
        memory: list[tuple[str, int, int]] = []  # (backend, tensor bytes, RSS growth)
        # LoRA first: the separate copies, once freed, would blur its resident memory growth.
        for build in (lora_backend, separate_backend):
            backend = build(model, tokenizer, adapters, args.max_new_tokens)
            memory.append((backend.name, backend.tensor_bytes, backend.rss_growth))
            for w, by_mode in measure(backend, args.repeats).items():
                sequential = by_mode["sequential"].wall
                for mode in MODES:
                    cell = by_mode[mode]
                    rows.append((backend.name, w, mode, cell, sequential / cell.wall))
            del backend  # the separate copies go before the next backend is built
        four = lora_memory(model, tokenizer, adapters[:4])
        paths = generate_paths(model, tokenizer, adapters, args.max_new_tokens, args.repeats)
        streaming = streaming_report(model, tokenizer, adapters, args.max_new_tokens, args.repeats)

    out = [
        *report_header(
            "Benchmarks: fan-outs over different experts, separate models vs LoRA adapters",
            f"{settings}; median of {args.repeats} runs per cell, modes interleaved",
            load_before,
            started,
        ),
        "",
        "Every sub-query of a fan-out goes to a different expert. `separate`: each expert its "
        "own model (its adapter merged into its own copy of the base) and engine; `lora`: "
        "every expert an adapter of one `LoraEngine` over the shared base. Speed-up = "
        "sequential wall / wall, within a backend.",
        "",
        "| experts as | fan-out | mode | wall (s) | speed-up vs sequential "
        "| batch sizes (last run) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {w} | {mode} | {cell.wall:.2f} | {speedup:.2f}x | {cell.batch_sizes} |"
            for name, w, mode, cell, speedup in rows
        ),
        "",
        "## Memory",
        "",
        f"Tensor bytes (shared tensors counted once) and the process's resident memory growth "
        f"while building the {width} experts; one model of the base holds "
        f"{one_model / 2**20:.1f} MiB.",
        "",
        "| experts as | experts | tensor memory (MiB) | / one model | RSS growth (MiB) |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {width} | {size / 2**20:.1f} | {size / one_model:.2f}x | "
            f"{rss / 2**20:.0f} |"
            for name, size, rss in memory
        ),
        f"| lora | 4 | {four.total_bytes / 2**20:.1f} | {four.total_bytes / one_model:.2f}x | |",
        f"| separate | 4 | {4 * one_model / 2**20:.1f} | 4.00x | |",
        "",
        f"LoRA engine of 4 experts: {four.describe()}.",
        "",
        "## One mixed-adapter generate: the engine's path against PEFT's",
        "",
        "One `generate` over a batch whose rows all use different adapters (same prompts, "
        "same tokens produced, checked): the engine's gathered matmul (a `bmm` and a fused "
        "`baddbmm` per LoRA layer), PEFT's `adapter_names` mixed batch (a gather, two matmuls and a scatter per "
        "adapter per layer), and the base alone (no LoRA) for reference.",
        "",
        "| rows (= adapters) | engine (s) | PEFT adapter_names (s) | PEFT / engine "
        "| base alone (s) |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {w} | {e:.2f} | {p:.2f} | {p / e:.2f}x | {b:.2f} |"
            for w, (e, p, b) in paths.items()
        ),
        "",
        *streaming,
    ]
    write(args.out, out)


def write(path: Path | None, lines: list[str]) -> None:
    """Print the report, and write it to ``path`` if given."""
    report = "\n".join(lines) + "\n"
    if path:
        path.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
