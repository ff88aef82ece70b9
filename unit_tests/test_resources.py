"""Resource constraints: concurrency limits, device locks and the model pool.

Fake runnables check the limiter; tiny random-weight Llamas (built as in
``test_huggingface.py``, whose helpers are reused) check device locks and the pool.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from fakes import make_expert
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from test_executor import routed
from test_huggingface import tiny_model

from langchain_complm import Expert
from langchain_complm.concurrency import (
    ConcurrencyLimiter,
    device_key,
    device_limiter,
    limit_concurrency,
    set_device_concurrency,
)
from langchain_complm.errors import MemoryBudgetError
from langchain_complm.execute import QueryExecutor
from langchain_complm.models.huggingface import ChatLocalHuggingFace, GenerationEngine
from langchain_complm.models.pool import ModelPool, estimate_model_bytes, model_bytes


class Timeline:
    """Records (start, end) intervals of calls and the most that overlapped."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._active = 0
        self.peak = 0

    def enter(self) -> float:
        with self._lock:
            self._active += 1
            self.peak = max(self.peak, self._active)
        return time.perf_counter()

    def leave(self, started: float) -> None:
        with self._lock:
            self._active -= 1
            self.intervals.append((started, time.perf_counter()))


def sleeper(timeline: Timeline, delay: float = 0.05) -> RunnableLambda:
    def run(x: Any) -> str:
        started = timeline.enter()
        time.sleep(delay)
        timeline.leave(started)
        return f"done {x}"

    async def arun(x: Any) -> str:
        started = timeline.enter()
        await asyncio.sleep(delay)
        timeline.leave(started)
        return f"done {x}"

    return RunnableLambda(run, afunc=arun, name="sleeper")


# --- ConcurrencyLimiter and limit_concurrency ------------------------------------------------


def test_limit_caps_overlap_of_threads() -> None:
    timeline = Timeline()
    limited = limit_concurrency(sleeper(timeline), 2)
    threads = [threading.Thread(target=limited.invoke, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(timeline.intervals) == 8
    assert timeline.peak == 2  # really parallel, never more than the limit
    assert limited.limiter.peak == 2 and limited.limiter.active == 0


def test_limit_applies_to_batch_and_keeps_outputs() -> None:
    timeline = Timeline()
    limited = limit_concurrency(sleeper(timeline), 3)
    outputs = limited.batch(list(range(9)), {"max_concurrency": 9})
    assert outputs == [f"done {i}" for i in range(9)]
    assert timeline.peak == 3


async def test_limit_applies_to_async_calls() -> None:
    timeline = Timeline()
    limited = limit_concurrency(sleeper(timeline), 2)
    outputs = await asyncio.gather(*(limited.ainvoke(i) for i in range(6)))
    assert outputs == [f"done {i}" for i in range(6)]
    assert timeline.peak == 2
    assert await limited.abatch([1, 2, 3]) == ["done 1", "done 2", "done 3"]
    assert timeline.peak == 2


def test_one_limiter_shared_by_two_runnables_and_by_threads_and_tasks() -> None:
    timeline = Timeline()
    shared = ConcurrencyLimiter(1)
    first = limit_concurrency(sleeper(timeline), shared)
    second = limit_concurrency(sleeper(timeline), shared)

    async def async_calls() -> None:
        await asyncio.gather(*(second.ainvoke(i) for i in range(3)))

    threads = [threading.Thread(target=first.invoke, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=asyncio.run, args=(async_calls(),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(timeline.intervals) == 6
    assert timeline.peak == 1


def test_stream_holds_the_permit_until_the_stream_ends() -> None:
    limiter = ConcurrencyLimiter(1)

    def chunks(x: Iterator[Any]) -> Iterator[str]:
        yield from ("a", "b", "c")

    limited = limit_concurrency(RunnableLambda(chunks), limiter)
    stream = limited.stream("x")
    assert next(stream) == "a"
    assert limiter.active == 1
    assert not limiter.acquire(timeout=0.01)
    assert list(stream) == ["b", "c"]
    assert limiter.active == 0


def test_callbacks_and_attributes_pass_through(model: Any, tokenizer: Any) -> None:
    class Names(BaseCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.names.append(kwargs.get("name") or "chat")

    llm = ChatLocalHuggingFace.from_model(model, tokenizer, model_id="tiny", max_new_tokens=3)
    limited = limit_concurrency(llm, 1)
    handler = Names()
    reply = limited.invoke("hi", {"callbacks": [handler], "run_name": "expert:x"})
    assert handler.names == ["expert:x"]  # the chat model's own run, no wrapper run
    assert reply.response_metadata["model_name"] == "tiny"
    assert limited.engine is llm.engine and limited.model_id == "tiny"
    assert limited.get_name() == llm.get_name()
    assert limited.InputType == llm.InputType


async def test_cancelled_waiter_gives_its_place_back() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.aacquire()
    waiter = asyncio.create_task(limiter.aacquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.active == 0
    assert limiter.acquire(timeout=0.1)  # nothing leaked
    limiter.release()


def test_waiters_are_served_in_arrival_order() -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()
    order: list[int] = []

    def take(i: int) -> None:
        with limiter:
            order.append(i)

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=take, args=(i,)))
        threads[-1].start()
        time.sleep(0.02)  # queue them one after another
    limiter.release()
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4]


def test_invalid_limits_and_extra_release() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0)
    with pytest.raises(RuntimeError):
        ConcurrencyLimiter(1).release()


def test_executor_respects_an_experts_limit() -> None:
    math, fake = make_expert("math", delay=0.1)
    limited = Expert(name="math", llm=limit_concurrency(math.llm, 1))
    plan = routed(*((f"q{i}", f"question {i}", "math", ()) for i in range(4)))
    for mode in ("superstep", "eager"):
        fake.calls.clear()
        result = QueryExecutor(experts=[limited], mode=mode).invoke(plan)
        assert {r.status for r in result.results.values()} == {"ok"}
        calls = sorted(fake.calls, key=lambda c: c["start"])
        assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(calls))


# --- device locks -------------------------------------------------------------------------------


@pytest.fixture
def model(tokenizer: Any) -> Any:
    return tiny_model(tokenizer)


@pytest.fixture
def cpu_unlimited() -> Iterator[None]:
    set_device_concurrency("cpu", None)
    yield
    set_device_concurrency("cpu", 1)


def record_generate(model: Any, timeline: Timeline, delay: float = 0.15) -> None:
    """Make ``model.generate`` record its interval and last at least ``delay`` seconds."""
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        started = timeline.enter()
        time.sleep(delay)
        try:
            return original(*args, **kwargs)
        finally:
            timeline.leave(started)

    model.generate = generate


def run_two_models_at_once(tok: Any) -> tuple[Timeline, list[Any]]:
    timeline = Timeline()
    llms = []
    for seed in (1, 2):
        model = tiny_model(tok, seed=seed)
        record_generate(model, timeline)
        llms.append(ChatLocalHuggingFace.from_model(model, tok, max_new_tokens=4))
    assert llms[0].engine is not llms[1].engine
    replies: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def call(i: int) -> None:
        barrier.wait()
        replies[i] = llms[i].invoke("hello")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timeline, replies


def test_device_lock_serializes_engines_of_different_models(tokenizer: Any) -> None:
    timeline, replies = run_two_models_at_once(tokenizer)
    assert timeline.peak == 1
    waits = sorted(r.response_metadata["device_wait_s"] for r in replies)
    assert waits[0] < 0.1 and waits[1] > 0.1  # the second waited for the first generate


def test_device_concurrency_can_be_allowed(tokenizer: Any, cpu_unlimited: None) -> None:
    assert device_limiter("cpu") is None
    timeline, replies = run_two_models_at_once(tokenizer)
    assert timeline.peak == 2
    assert all(r.response_metadata["device_wait_s"] < 0.1 for r in replies)


def test_device_keys() -> None:
    assert device_key("cpu") == "cpu"
    assert device_key("cuda") == "cuda:0"
    assert device_key("cuda:1") == "cuda:1"
    with pytest.raises(ValueError):
        set_device_concurrency("cpu", 0)


def test_closed_engine_refuses_requests_and_drops_its_model(tokenizer: Any) -> None:
    model = tiny_model(tokenizer)
    llm = ChatLocalHuggingFace.from_model(model, tokenizer, max_new_tokens=3)
    engine = llm.engine
    assert llm.invoke("hi").content
    alive = weakref.ref(model)
    del model
    engine.close()
    assert engine.closed and engine.model is None
    with pytest.raises(RuntimeError, match="closed"):
        llm.invoke("hi")
    gc.collect()
    assert alive() is None
    engine.close()  # twice is fine


@pytest.mark.parametrize("ratio", [0.0, 0.05])
def test_batch_window_grows_with_generate_time(model: Any, tokenizer: Any, ratio: float) -> None:
    from langchain_complm.models.huggingface import GenerationSettings

    record_generate(model, Timeline(), delay=0.6)
    engine = GenerationEngine.for_model(model, tokenizer)
    settings = GenerationSettings(max_new_tokens=2)
    conversation = [{"role": "user", "content": "hi"}]
    options = {"batch_window_ms": 0.0, "batch_window_ratio": ratio}
    engine.submit(conversation, settings, **options).result()  # learns the generate time
    first = engine.submit(conversation, settings, **options)
    time.sleep(0.01)
    second = engine.submit(conversation, settings, **options)
    sizes = [first.result().batch_size, second.result().batch_size]
    # 5 % of 0.6 s is a 30 ms window: the second request, 10 ms later, joins the first.
    assert sizes == ([2, 2] if ratio else [1, 1])


# --- ModelPool ---------------------------------------------------------------------------------


class Loads:
    """Loaders of tiny models that count their calls and keep only weak references."""

    def __init__(self, tok: Any) -> None:
        self.tokenizer = tok
        self.count: dict[str, int] = {}
        self.models: dict[str, list[weakref.ref[Any]]] = {}
        self.over_budget: list[int] = []
        self.pool: ModelPool | None = None
        self._seed_lock = threading.Lock()

    def loader(self, name: str, seed: int = 0) -> Any:
        def load() -> tuple[Any, Any]:
            if self.pool is not None and self.pool.budget_bytes is not None:
                self.over_budget.append(self.pool.resident_bytes - self.pool.budget_bytes)
            with self._seed_lock:  # tiny_model seeds torch's global generator
                self.count[name] = self.count.get(name, 0) + 1
                model = tiny_model(self.tokenizer, seed=seed)
            self.models.setdefault(name, []).append(weakref.ref(model))
            return model, self.tokenizer

        return load


@pytest.fixture(scope="module")
def tiny_bytes(tokenizer: Any) -> int:
    return model_bytes(tiny_model(tokenizer))


@pytest.fixture
def loads(tokenizer: Any) -> Loads:
    return Loads(tokenizer)


def pooled(pool: ModelPool, loads: Loads, names: str, size: int | None) -> dict[str, Any]:
    return {
        name: pool.chat_model(
            f"tiny-{name}",
            name=name,
            loader=loads.loader(name, seed=i),
            size_bytes=size,
            max_new_tokens=3,
        )
        for i, name in enumerate(names)
    }


def test_pool_loads_on_first_use_and_reports_load_time(loads: Loads, tiny_bytes: int) -> None:
    pool = ModelPool(budget_bytes=3 * tiny_bytes)
    llm = pooled(pool, loads, "a", None)["a"]
    assert loads.count == {} and pool.resident == []
    first = llm.invoke("hello")
    second = llm.invoke("hello")
    assert loads.count == {"a": 1}
    assert first.response_metadata["load_time_s"] > 0
    assert second.response_metadata["load_time_s"] == 0
    assert first.content == second.content
    assert first.response_metadata["model_name"] == "tiny-a"
    stats = pool.stats["a"]
    assert stats.state == "resident" and stats.loads == 1 and stats.size_bytes == tiny_bytes
    assert pool.resident_bytes == tiny_bytes
    assert llm.num_parameters == stats.parameters
    # Its batch group outlives the engine (unloading and reloading make a new one).
    assert llm.batch_group == pool.chat_model("tiny-a", name="a", max_new_tokens=3).batch_group
    assert llm.batch_group != pooled(pool, loads, "b", None)["b"].batch_group


def test_pool_evicts_least_recently_used_and_reloads(loads: Loads, tiny_bytes: int) -> None:
    pool = ModelPool(budget_bytes=2.5 * tiny_bytes)
    loads.pool = pool
    llms = pooled(pool, loads, "abc", tiny_bytes)
    llms["a"].invoke("x")
    llms["b"].invoke("x")
    llms["a"].invoke("x")  # a is now the most recently used
    reply = llms["c"].invoke("x")
    assert reply.response_metadata["evicted"] == ["b"]
    assert pool.resident == ["a", "c"]
    # b's engine is closed and its weights are gone.
    assert loads.models["b"][0]() is None

    reply = llms["b"].invoke("x")  # reloads b, evicting a
    assert reply.response_metadata["load_time_s"] > 0
    assert reply.response_metadata["evicted"] == ["a"]
    assert loads.count == {"a": 1, "b": 2, "c": 1}
    assert pool.resident == ["c", "b"]
    assert pool.stats["b"].evictions == 1 and pool.stats["b"].loads == 2
    assert max(loads.over_budget) <= 0  # never loaded past the budget
    assert pool.resident_bytes <= pool.budget_bytes


def test_pool_measures_unknown_sizes_and_evicts_after_loading(
    loads: Loads, tiny_bytes: int
) -> None:
    pool = ModelPool(budget_bytes=1.5 * tiny_bytes)
    llms = pooled(pool, loads, "ab", None)
    llms["a"].invoke("x")
    reply = llms["b"].invoke("x")  # size unknown until loaded: a goes afterwards
    assert reply.response_metadata["evicted"] == ["a"]
    assert pool.resident == ["b"]
    reply = llms["a"].invoke("x")  # size known now: b goes before loading
    assert reply.response_metadata["evicted"] == ["b"]


def test_models_in_use_are_not_evicted_the_caller_waits(loads: Loads, tiny_bytes: int) -> None:
    pool = ModelPool(budget_bytes=2 * tiny_bytes)
    pooled(pool, loads, "abc", tiny_bytes)
    lease_a, lease_b = pool.acquire("a"), pool.acquire("b")
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire("c")))
    waiter.start()
    time.sleep(0.2)
    assert not got and pool.resident == ["a", "b"]
    with pytest.raises(TimeoutError):
        pool.acquire("c", timeout=0.05)
    lease_a.release()
    waiter.join(timeout=10)
    assert got and got[0].evicted == ("a",) and got[0].load_time_s >= 0.2
    got[0].release()
    lease_b.release()
    lease_b.release()  # idempotent
    assert pool.stats["b"].users == 0 and pool.stats["c"].users == 0


def test_model_over_the_whole_budget_is_refused(loads: Loads, tiny_bytes: int) -> None:
    pool = ModelPool(budget_bytes=tiny_bytes // 2)
    with pytest.raises(MemoryBudgetError):
        pooled(pool, loads, "a", tiny_bytes)
    llm = pooled(pool, loads, "b", None)["b"]
    llm.invoke("x")  # unknown size: loaded, measured, kept with a warning
    assert pool.unload("b")
    with pytest.raises(MemoryBudgetError):
        llm.invoke("x")  # now known to be too large


def test_pool_is_thread_safe(loads: Loads, tiny_bytes: int) -> None:
    pool = ModelPool(budget_bytes=2 * tiny_bytes)
    loads.pool = pool
    llms = pooled(pool, loads, "abc", tiny_bytes)
    errors: list[BaseException] = []
    answers: dict[str, set[str]] = {name: set() for name in llms}

    def work(i: int) -> None:
        try:
            for j in range(4):
                name = "abc"[(i + j) % 3]
                answers[name].add(llms[name].invoke("same prompt").content)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert all(len(texts) == 1 for texts in answers.values())  # no model mixed up
    assert max(loads.over_budget) <= 0
    assert len(pool.resident) <= 2
    assert all(s.users == 0 for s in pool.stats.values())


async def test_pool_async_calls_and_executor_trace(loads: Loads, tiny_bytes: int) -> None:
    pool = ModelPool(budget_bytes=1.5 * tiny_bytes)
    llms = pooled(pool, loads, "ab", tiny_bytes)
    experts = [Expert(name=name, llm=llm) for name, llm in llms.items()]
    plan = routed(("q1", "first", "a", ()), ("q2", "second", "b", ()), ("q3", "third", "a", ()))
    result = await QueryExecutor(experts=experts).ainvoke(plan)
    assert {r.status for r in result.results.values()} == {"ok"}
    load_times = [r.response_metadata["load_time_s"] for r in result.results.values()]
    assert all(t >= 0 for t in load_times) and any(t > 0 for t in load_times)
    assert sum(s.loads for s in pool.stats.values()) >= 2
    assert len(pool.resident) == 1


def test_pool_loads_folders_with_a_size_estimate(
    tmp_path: Path,
    tokenizer: Any,
    tiny_bytes: int,
) -> None:
    folders = []
    for seed in (0, 1):
        folder = tmp_path / f"tiny{seed}"
        tiny_model(tokenizer, seed=seed).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(str(folder))
    size, parameters = estimate_model_bytes(folders[0])
    assert size == tiny_bytes
    pool = ModelPool(budget_bytes=1.5 * tiny_bytes)
    first = pool.chat_model(folders[0], device="cpu", max_new_tokens=3)
    second = pool.chat_model(folders[1], device="cpu", max_new_tokens=3)
    assert first.num_parameters == parameters  # estimated: nothing loaded yet
    assert pool.resident == []
    first.invoke("x")
    reply = second.invoke("x")
    assert reply.response_metadata["evicted"] == [folders[0]]
    assert pool.resident == [folders[1]]
    assert pool.clear() == [folders[1]] and pool.resident_bytes == 0


def test_register_conflicts_are_named(loads: Loads) -> None:
    pool = ModelPool(budget_bytes=None)
    pool.register("a", loader=loads.loader("a"))
    with pytest.raises(ValueError, match="already registered"):
        pool.register("a", loader=loads.loader("a"))
    with pytest.raises(KeyError, match="not registered"):
        pool.acquire("nope")
    with pytest.raises(ValueError):
        ModelPool(budget_bytes=0)
    assert isinstance(pool.acquire("a").engine, GenerationEngine)
