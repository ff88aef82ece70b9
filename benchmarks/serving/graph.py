"""The orchestrator that ``benchmarks/bench_serving.py`` serves with ``langgraph dev``.

The package's pipeline itself (:func:`~langchain_complm.pipeline.create_comp_llm`, a
``StateGraph`` whose nodes are async under the server): every model call stays on the
server's event loop, so one server process holds many runs at once. Input
``{"query": ...}``; the final state's ``answer`` is the answer, ``results`` the sub-answers.

The models are chosen by environment variables, read once at import (the server's
blocking-call checker rejects graphs that load models lazily):

- default: fake served models that answer after a realistic latency, echoing what they
  were asked, so every answer carries its request's marker (cross-talk shows) and the load
  test measures the orchestrator, not a model. ``COMPLM_BENCH_LATENCY`` sets the seconds
  of the planner, each expert and the aggregator (default ``0.8,1.5,1.2``).
- ``COMPLM_BENCH_CONFIG=served.yaml``: the stages of that config file (e.g. every model on
  a vLLM engine), built by ``build_comp_llm``.
- ``COMPLM_BENCH_GRAPH=floor``: no orchestrator, the server's own floor: one node that
  sleeps the planner's, one expert's and the aggregator's latency and echoes the query.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from langchain_complm.aggregate import ResponseAggregator
from langchain_complm.decompose import SubQueryGenerator
from langchain_complm.experts import Expert
from langchain_complm.pipeline import create_comp_llm
from langchain_complm.route import EmbeddingRouter

LATENCY_ENV = "COMPLM_BENCH_LATENCY"
CONFIG_ENV = "COMPLM_BENCH_CONFIG"
GRAPH_ENV = "COMPLM_BENCH_GRAPH"
DEFAULT_LATENCY = (0.8, 1.5, 1.2)
"""Seconds of the planner, an expert and the aggregator: a plan of ~60 tokens, an answer of
~100 and a synthesis of ~80 at ~70 tokens/s, a small model on a busy GPU engine."""


class FakeServedModel(BaseChatModel):
    """Answers after ``latency`` seconds (uniform +-``jitter``), like a model on a server,
    without computing anything. The reply echoes the request (see :meth:`reply`)."""

    role: str
    latency: float
    jitter: float = 0.2

    @property
    def _llm_type(self) -> str:
        return f"fake-served-{self.role}"

    def reply(self, messages: Sequence[BaseMessage]) -> str:
        """planner: a JSON plan with one sub-query per question of the query; expert: the
        question it was asked, answered; aggregator: the experts' answers, joined."""
        text = messages[-1].text
        if self.role == "planner":
            query = text.removeprefix("Question: ")
            parts = [p for p in re.split(r"(?<=\?)\s+", query) if p.strip()]
            plan = [
                {"id": f"q{i}", "question": p, "depends_on": []} for i, p in enumerate(parts, 1)
            ]
            return json.dumps({"sub_queries": plan})
        if self.role == "expert":
            return f"The answer to '{text.strip().splitlines()[-1]}' is 42."
        answers = text.split("Expert answers:\n", 1)[-1].split("\n\nFinal answer:", 1)[0]
        return " ".join(line.strip() for line in answers.splitlines() if line.startswith("  "))

    def _delay(self) -> float:
        return self.latency * random.uniform(1 - self.jitter, 1 + self.jitter)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self._delay())
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.reply(messages)))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self._delay())
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.reply(messages)))])


class WordEmbeddings(Embeddings):
    """Hashed bag of words (64 dims): deterministic and instant, so routing costs what the
    router itself costs."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    # Instant, so awaited in place: the base class would hand each call to a thread.
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self._vector(text)

    @staticmethod
    def _vector(text: str) -> list[float]:
        vector = [0.01] * 64
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[hash(word) % 64] += 1.0
        return vector


class _State(TypedDict, total=False):
    query: str
    answer: str


def _latencies() -> tuple[float, float, float]:
    text = os.environ.get(LATENCY_ENV) or ",".join(map(str, DEFAULT_LATENCY))
    planner, expert, writer = (float(part) for part in text.split(","))
    return planner, expert, writer


def _floor_graph() -> Any:
    wait = sum(_latencies())

    async def answer(state: _State) -> _State:
        await asyncio.sleep(wait)
        return {"answer": state["query"]}

    builder = StateGraph(_State)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(name="Floor")


def _fake_graph() -> Any:
    planner, expert, writer = _latencies()
    experts = [
        Expert(name=name, description=about, llm=FakeServedModel(role="expert", latency=expert))
        for name, about in (
            ("math", "Arithmetic, percentages and word problems: what is 15% of 80"),
            ("medicine", "Diseases, symptoms and treatments: symptoms of anemia"),
            ("general", "Everything else: history, places, people"),
        )
    ]
    return create_comp_llm(
        experts,
        generator=SubQueryGenerator(
            llm=FakeServedModel(role="planner", latency=planner), structured_output=False
        ),
        router=EmbeddingRouter(experts=experts, embeddings=WordEmbeddings()),
        aggregator=ResponseAggregator(llm=FakeServedModel(role="aggregator", latency=writer)),
    )


def _configured_graph(path: str) -> Any:
    from langchain_complm.config import build_comp_llm

    return build_comp_llm(path)


if path := os.environ.get(CONFIG_ENV):
    graph = _configured_graph(path)
elif os.environ.get(GRAPH_ENV) == "floor":
    graph = _floor_graph()
else:
    graph = _fake_graph()
