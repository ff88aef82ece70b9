"""Deterministic fakes shared by the unit tests: no model is downloaded or loaded."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableLambda
from pydantic import Field

from langchain_complm import Expert, Plan, RoutingDecision, SubQuery
from langchain_complm.aggregate import ResponseAggregator
from langchain_complm.decompose import SubQueryGenerator
from langchain_complm.evaluation.sources import resolve_data_dir
from langchain_complm.training.train import TrainConfig

PROMPTS = [
    "hello",
    "What is 2+3?",
    "Tell me a story about a cat.",
    "Name the capital of France.",
    "Why is the sky blue?",
    "List three prime numbers.",
    "Translate 'good morning' to Spanish.",
    "Who wrote Hamlet?",
]
"""Prompts for tiny random models: different prompts lead to different greedy answers."""


def has_benchmark_data() -> bool:
    """Whether the public benchmark data (``../shared/data``) is here."""
    try:
        return resolve_data_dir().is_dir()
    except FileNotFoundError:
        return False


needs_data = pytest.mark.skipif(
    not has_benchmark_data(), reason="public benchmark data (../shared/data) is not available"
)


def tiny_train_config(base: Path, out: Path, **overrides: Any) -> TrainConfig:
    """A fine-tuning run of seconds on a tiny base: a few steps, high learning rate, CPU."""
    options: dict[str, Any] = {
        "base": str(base),
        "out": str(out),
        "batch_size": 4,
        "micro_batch_size": 4,
        "lr": 1e-2,
        "lora_dropout": 0.0,
        "max_steps": 3,
        "warmup_ratio": 0.0,
        "device": "cpu",
        "progress": False,
    }
    return TrainConfig(**(options | overrides))


KEYWORDS = {
    "math": ["sum", "add", "multiply", "percent", "number", "plus", "equation", "math"],
    "medicine": ["drug", "disease", "symptom", "patient", "treat", "dose", "medicine"],
    "history": ["war", "king", "century", "empire", "revolution", "history"],
}


class KeywordEmbeddings(Embeddings):
    """Bag-of-keywords vectors: texts sharing keywords are similar. Records its calls:
    ``calls`` the batches of documents, ``query_calls`` the queries."""

    def __init__(self) -> None:
        self.vocabulary = [w for words in KEYWORDS.values() for w in words]
        self.calls: list[list[str]] = []
        self.query_calls: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.query_calls.append(text)
        return self._vector(text)

    def _vector(self, text: str) -> list[float]:
        lowered = text.lower()
        # A small constant keeps unrelated texts from having a zero vector.
        return [float(lowered.count(w)) + 0.01 for w in self.vocabulary]


class RecordingExpert:
    """A fake expert runnable: answers ``"<name>: <last message>"`` after ``delay`` seconds,
    recording every call's prompt and wall-clock interval."""

    def __init__(self, name: str, delay: float = 0.0, fail_times: int = 0) -> None:
        self.name = name
        self.delay = delay
        self.fail_times = fail_times
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _start(self, messages: Sequence[BaseMessage]) -> dict[str, Any]:
        prompt = messages[-1].text
        with self._lock:
            call = {"prompt": prompt, "start": time.time(), "fail": self.fail_times > 0}
            self.calls.append(call)
            self.fail_times -= 1
        return call

    def _end(self, call: dict[str, Any]) -> str:
        call["end"] = time.time()
        if call["fail"]:
            raise RuntimeError(f"{self.name} is down")
        return f"{self.name} answer to <{call['prompt'].splitlines()[-1]}>"

    def invoke_sync(self, messages: Sequence[BaseMessage]) -> str:
        call = self._start(messages)
        time.sleep(self.delay)
        return self._end(call)

    async def invoke_async(self, messages: Sequence[BaseMessage]) -> str:
        call = self._start(messages)
        await asyncio.sleep(self.delay)
        return self._end(call)

    def runnable(self) -> RunnableLambda:
        return RunnableLambda(self.invoke_sync, afunc=self.invoke_async, name=self.name)


def make_expert(
    name: str, delay: float = 0.0, fail_times: int = 0
) -> tuple[Expert, RecordingExpert]:
    fake = RecordingExpert(name, delay, fail_times)
    expert = Expert(
        name=name,
        description=f"Questions about {name}: " + ", ".join(KEYWORDS.get(name, [name])),
        examples=tuple(f"A {w} question" for w in KEYWORDS.get(name, [name])[:3]),
        llm=fake.runnable(),
    )
    return expert, fake


def plan_json(*sub_queries: tuple[str, str, list[str]]) -> str:
    """A decomposition reply: (id, question, depends_on) triples."""
    return json.dumps(
        {"sub_queries": [{"id": i, "question": q, "depends_on": d} for i, q, d in sub_queries]}
    )


def fake_llm(*responses: str) -> FakeListChatModel:
    return FakeListChatModel(responses=list(responses))


def literal_generator(llm: Any) -> SubQueryGenerator:
    """A generator that keeps the fake model's plan as written: the tests' fake plans need
    not ask their questions, which plan repair would fix (it has its own tests)."""
    return SubQueryGenerator(llm=llm, repair=False)


def literal_aggregator(llm: Any) -> ResponseAggregator:
    """An aggregator whose answer is the fake model's synthesis as written: the coverage
    check would append the experts' answers it does not hold (it has its own tests)."""
    return ResponseAggregator(llm=llm, mode="synthesize", check_coverage=False)


class RecordingChat(FakeListChatModel):
    """A fake chat model that records the messages of every call and reports token usage
    (``usage`` input and output tokens per reply, on the last streamed chunk too)."""

    prompts: list[list[BaseMessage]]
    usage: int = 0

    def _record(self, messages: list[BaseMessage]) -> None:
        self.prompts.append(list(messages))

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        self._record(messages)
        text = self._call(messages, stop, run_manager, **kwargs)
        message = AIMessage(content=text, usage_metadata=self._usage())
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        self._record(messages)
        text = self.responses[self.i % len(self.responses)]
        self.i += 1
        words = text.split(" ")
        for n, word in enumerate(words):
            last = n == len(words) - 1
            chunk = AIMessageChunk(
                content=word if last else word + " ",
                usage_metadata=self._usage() if last else None,
            )
            if run_manager:
                run_manager.on_llm_new_token(
                    chunk.content, chunk=ChatGenerationChunk(message=chunk)
                )
            yield ChatGenerationChunk(message=chunk)

    def _usage(self) -> Any:
        if not self.usage:
            return None
        return {
            "input_tokens": self.usage,
            "output_tokens": self.usage,
            "total_tokens": 2 * self.usage,
        }


def recording_llm(*responses: str, usage: int = 0) -> RecordingChat:
    return RecordingChat(responses=list(responses), prompts=[], usage=usage)


def routed(*items: tuple[str, str, str, tuple[str, ...]]) -> Plan:
    """A plan from (id, question, expert, depends_on) tuples, already routed."""
    return Plan(
        query="compound question",
        sub_queries=tuple(
            SubQuery(
                id=i,
                question=q,
                depends_on=deps,
                route=RoutingDecision(
                    sub_query_id=i, question=q, expert=e, score=1.0, scores={e: 1.0}
                ),
            )
            for i, q, e, deps in items
        ),
    )


class StreamingChat(FakeListChatModel):
    """A fake chat model that writes each reply in pieces, ``delay`` seconds before each,
    like a model generating it: a piece ends after every ``}`` that closes a list item, so
    a plan's sub-queries are complete one piece at a time. Invoked, it takes the same time
    and returns the whole reply. ``ended`` records when each reply was written in full."""

    delay: float = 0.0
    ended: list[float] = Field(default_factory=list)

    def _next_pieces(self) -> list[str]:
        text = self.responses[self.i % len(self.responses)]
        self.i += 1
        return re.split(r"(?<=\})(?=\s*[,\]])", text)

    def _chunk(self, piece: str, run_manager: Any) -> Any:
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
        if run_manager:
            run_manager.on_llm_new_token(piece, chunk=chunk)
        return chunk

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        for piece in self._next_pieces():
            time.sleep(self.delay)
            yield self._chunk(piece, run_manager)
        self.ended.append(time.time())

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ):
        for piece in self._next_pieces():
            await asyncio.sleep(self.delay)
            yield self._chunk(piece, run_manager)
        self.ended.append(time.time())

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any):
        pieces = self._next_pieces()
        time.sleep(self.delay * len(pieces))
        return self._whole(pieces)

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        pieces = self._next_pieces()
        await asyncio.sleep(self.delay * len(pieces))
        return self._whole(pieces)

    def _whole(self, pieces: list[str]) -> Any:
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        self.ended.append(time.time())
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="".join(pieces)))])


def streaming_llm(*responses: str, delay: float = 0.0) -> StreamingChat:
    return StreamingChat(responses=list(responses), delay=delay)
