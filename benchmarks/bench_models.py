"""Benchmark the embedded SmolLM2 model: load times, tokens/s and micro-batching.

Prints a Markdown report: SmolLM2 load time cold (fresh cache folder: dequantize the GGUF,
save safetensors, load) and from the cache, single-prompt greedy tokens/s, and wall time of
1/2/4/8 concurrent ``ChatLocalHuggingFace.invoke`` calls (one thread each) with
micro-batching on (``max_batch_size=8``) and off (``max_batch_size=1``).

Run from the repository root::

    python benchmarks/bench_models.py [--max-new-tokens 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_complm.models.embedded import SMOLLM2_MODEL_ID, smollm2_path
from langchain_complm.models.huggingface import ChatLocalHuggingFace, load_causal_lm

PROMPTS = [
    "What is 2+3?",
    "What is the capital of France?",
    "Why is the sky blue?",
    "Who wrote Hamlet?",
    "Name three prime numbers.",
    "What is photosynthesis?",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
]
CONCURRENCY = (1, 2, 4, 8)


def timed_load(cache_dir: Path) -> tuple[float, float, Path]:
    """Seconds to prepare the cache and to load from it (weights read in this process)."""
    started = time.perf_counter()
    folder = smollm2_path(cache_dir)
    load_causal_lm(str(folder), device="cpu")
    cold = time.perf_counter() - started
    started = time.perf_counter()
    load_causal_lm(str(folder), device="cpu")
    return cold, time.perf_counter() - started, folder


def concurrent_wall(llm: ChatLocalHuggingFace, n: int) -> tuple[float, int, list[int]]:
    """Wall seconds for ``n`` threads calling ``invoke`` at once; tokens and batch sizes."""
    barrier = threading.Barrier(n + 1)
    tokens = [0] * n

    def call(i: int) -> None:
        barrier.wait()
        tokens[i] = llm.invoke(PROMPTS[i]).response_metadata["completion_tokens"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    llm.engine.reset_stats()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, sum(tokens), llm.engine.stats.batch_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell (median shown)")
    args = parser.parse_args()

    import torch
    import transformers

    # Other processes on the machine skew every number; the report says how busy it was.
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="complm-bench-") as cache:
        cold, cached, folder = timed_load(Path(cache))
        model, tokenizer = load_causal_lm(str(folder), device="cpu")
        batched = ChatLocalHuggingFace.from_model(
            model, tokenizer, model_id=SMOLLM2_MODEL_ID, max_new_tokens=args.max_new_tokens
        )
        serial = batched.model_copy(update={"max_batch_size": 1})

        batched.invoke("Hello")  # warm-up: first call pays one-off allocations
        story = "Write a long story about a robot who learns to paint."
        runs = [serial.invoke(story, max_new_tokens=64) for _ in range(args.repeats)]
        rate = statistics.median(
            r.response_metadata["completion_tokens"] / r.response_metadata["generation_s"]
            for r in runs
        )

        rows = []
        for n in CONCURRENCY:
            on = [concurrent_wall(batched, n) for _ in range(args.repeats)]
            off = [concurrent_wall(serial, n) for _ in range(args.repeats)]
            wall_on = statistics.median(r[0] for r in on)
            wall_off = statistics.median(r[0] for r in off)
            rows.append(
                f"| {n} | {wall_off:.2f} | {wall_on:.2f} | {wall_off / wall_on:.2f}x "
                f"| {on[-1][2]} | {off[-1][1] / wall_off:.1f} | {on[-1][1] / wall_on:.1f} |"
            )

    print(f"## SmolLM2-135M-Instruct on {platform.machine()}, {os.cpu_count()} CPU cores\n")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"float32, greedy, {torch.get_num_threads()} torch threads; "
        f"1-min load average {load_before:.2f} before and {os.getloadavg()[0]:.2f} after\n"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| load cold (fresh cache: dequantize GGUF, save, load) | {cold:.1f} s |")
    print(f"| load from safetensors cache | {cached:.2f} s |")
    print(f"| single prompt, greedy, 64 new tokens | {rate:.1f} tokens/s |\n")
    print(
        f"Concurrent `invoke` calls, one thread each, {args.max_new_tokens} new tokens max, "
        f"median of {args.repeats} runs:\n"
    )
    print(
        "| calls | max_batch_size=1 (s) | micro-batching, max_batch_size=8 (s) | speed-up "
        "| batch sizes formed | tokens/s serialized | tokens/s batched |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
