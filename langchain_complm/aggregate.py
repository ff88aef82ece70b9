"""Response Aggregator: turns the experts' answers into the final answer."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, BaseMessageChunk, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field

from langchain_complm.concurrency import (
    DEFAULT_TIMEOUT,
    Steps,
    arun_steps,
    astream_with_timeout,
    run_steps,
    stream_with_timeout,
)
from langchain_complm.events import emit, quiet
from langchain_complm.execute.results import SubQueryResult
from langchain_complm.plan import braced_names
from langchain_complm.prompts import AGGREGATE_PROMPT
from langchain_complm.text import content_stems, numbers

logger = logging.getLogger(__name__)


class AggregationInput(BaseModel):
    """What the aggregator needs: the query and every sub-query's result, in plan order."""

    query: str
    results: Sequence[SubQueryResult]


AggregationMode = Literal["auto", "synthesize", "enumerate"]
"""How the final answer is written (see :class:`ResponseAggregator`)."""

SMALL_AGGREGATOR_PARAMETERS = 1_000_000_000
"""Under this size ``mode="auto"`` enumerates: asked to combine answers, SmolLM2-135M drops
parts ("What is 15% of 80, and what are the symptoms of iron-deficiency anemia?" came back
about anemia only), and on MultiExpertQA-P the oracle plan scored below the monolithic
model because of it."""


class ResponseAggregator(RunnableSerializable[AggregationInput, AIMessage]):
    """Writes the final answer from the experts' answers, addressing every part.

    The parts of the question are the plan's final sub-queries (those no other depends
    on); the others are steps towards them. How the answer is written (``mode``):

    * ``enumerate``: one entry per part, in plan order, holding that part's answer (and,
      for a part reached in steps, the steps' answers), numbered when there are several.
      No model call, so no part can be lost; a part whose sub-query failed is answered by
      the aggregator's model from its question alone.
    * ``synthesize``: the model combines the answers into one text; then (unless
      ``check_coverage=False``) each part's answer is looked for in it (its numbers, else
      its words), and the answers of the parts the text does not hold are appended as a
      list.
    * ``auto`` (default): ``enumerate`` for a model with fewer than
      ``small_model_parameters`` parameters (it says so through ``num_parameters``, as
      local models do), ``synthesize`` otherwise (a served or API model).

    One part with its answer and nothing failed passes through unchanged in every mode.
    Returns the answer as an ``AIMessage``. Every piece of the answer is reported as a
    ``token`` progress event as it is written; a synthesis is streamed, so its tokens also
    reach ``stream_mode="messages"`` and ``astream_events``, and the message has the id its
    streamed chunks carried (parts the coverage check appends are in the message and the
    token events, not among the model's tokens). A failed part's answer is not the final
    answer: its model call is tagged ``nostream``.

    When a model call takes longer than ``timeout`` it is given up (an async stream is
    cancelled), and the answer lists the experts' answers as the prompt shows them
    (:meth:`format_answers`), so the work already done is not lost; a warning is logged.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: BaseChatModel
    prompt: ChatPromptTemplate = AGGREGATE_PROMPT
    """Prompt with ``query`` and ``answers`` variables (``synthesize``)."""
    timeout: float | None = Field(default=DEFAULT_TIMEOUT, gt=0)
    """Seconds each model call may take (``None``: no limit)."""
    mode: AggregationMode = "auto"
    small_model_parameters: int = Field(default=SMALL_AGGREGATOR_PARAMETERS, ge=0)
    """Models with fewer parameters enumerate under ``mode="auto"``."""
    check_coverage: bool = True
    """``synthesize``: append the answers of the parts the synthesis does not hold."""
    name: str | None = "ResponseAggregator"

    def invoke(
        self, input: AggregationInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return self._call_with_config(self._aggregate, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: AggregationInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return await self._acall_with_config(
            self._aaggregate, input, config, run_type="chain", **kwargs
        )

    def resolved_mode(self) -> Literal["synthesize", "enumerate"]:
        """The mode ``mode`` stands for with this model (``auto`` resolved)."""
        if self.mode != "auto":
            return self.mode
        size = getattr(self.llm, "num_parameters", None)
        small = isinstance(size, int) and size < self.small_model_parameters
        return "enumerate" if small else "synthesize"

    def calls_model(self, results: Sequence[SubQueryResult]) -> bool:
        """Whether aggregating ``results`` calls the model (a part passing through or an
        enumerated answer of answered parts does not)."""
        if _passes_through(results):
            return False
        if self.resolved_mode() == "enumerate":
            return any(r.answer is None for r in final_results(results))
        return True

    def format_answers(self, results: Sequence[SubQueryResult]) -> str:
        """The expert answers as the synthesis prompt shows them."""
        lines = []
        for r in results:
            answer = r.answer.strip() if r.answer else f"(no answer: {r.error})"
            lines.append(f"- [{r.expert}] {r.question}\n  {answer}")
        return "\n".join(lines)

    def _aggregate(
        self,
        data: AggregationInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AIMessage:
        return run_steps(self._steps(data, run_manager, config), _stream)

    async def _aaggregate(
        self, data: AggregationInput, run_manager: Any, config: RunnableConfig
    ) -> AIMessage:
        return await arun_steps(self._steps(data, run_manager, config), _astream)

    def _steps(
        self, data: AggregationInput, run_manager: Any, config: RunnableConfig
    ) -> Steps[_Stream, AIMessage]:
        results = data.results
        if _passes_through(results):
            return _written(results[0].answer or "", config)
        parts = final_results(results)
        # The tag lets stream consumers tell the final answer's tokens from other model calls.
        child: RunnableConfig = {**config, "callbacks": run_manager.get_child("complm:aggregate")}
        try:
            if self.resolved_mode() == "enumerate":
                answers: dict[str, str] = {}
                for part in parts:
                    if part.answer is None:
                        ask = _ask_alone(data.query, part)
                        reply = yield _Stream(self.llm, ask, quiet(child), self.timeout)
                        answers[part.id] = _text(reply)
                return _written(_enumerate(results, parts, answers), config)
            messages = self.prompt.format_messages(
                query=data.query, answers=self.format_answers(results)
            )
            reply = yield _Stream(self.llm, messages, child, self.timeout, report=config)
        except TimeoutError as error:
            logger.warning("%s; the answer lists the experts' answers instead", error)
            return _written(self.format_answers(results), config)
        text = _text(reply)
        if missing := self._missing_parts(text, results, parts):
            emit({"type": "token", "content": missing}, config)
        if reply is None:
            return AIMessage(content=missing.strip())
        return AIMessage(
            content=(text + missing).strip(),
            id=reply.id,
            response_metadata=reply.response_metadata,
            usage_metadata=getattr(reply, "usage_metadata", None),
        )

    def _missing_parts(
        self, text: str, results: Sequence[SubQueryResult], parts: Sequence[SubQueryResult]
    ) -> str:
        """The entries of the answered parts ``text`` does not hold, to append to it."""
        if not self.check_coverage:
            return ""
        missing = [p for p in parts if p.answer and not holds_answer(text, p.answer)]
        if not missing:
            return ""
        listed = [f"- {p.question.strip()} {_entry(results, p, p.answer or '')}" for p in missing]
        return "\n\n" + "\n".join(listed)


def final_results(results: Sequence[SubQueryResult]) -> list[SubQueryResult]:
    """The parts of the question: results no other result depends on, in plan order."""
    needed = {d for r in results for d in r.depends_on}
    return [r for r in results if r.id not in needed]


def holds_answer(text: str, answer: str) -> bool:
    """Whether ``text`` holds ``answer``: one of its numbers when it states any, else at
    least a third of the content words of its first sentence."""
    stated = numbers(answer)
    if stated:
        return bool(stated & numbers(text))
    first = re.split(r"(?<=[.!?])\s", answer.strip(), maxsplit=1)[0]
    wanted = content_stems(first)
    return not wanted or len(wanted & content_stems(text)) >= len(wanted) / 3


def _passes_through(results: Sequence[SubQueryResult]) -> bool:
    return len(results) == 1 and results[0].answer is not None


def _written(answer: str, config: RunnableConfig) -> AIMessage:
    """An answer written without a streamed model call, reported as one token event."""
    emit({"type": "token", "content": answer}, config)
    return AIMessage(content=answer)


def _ask_alone(query: str, part: SubQueryResult) -> list[BaseMessage]:
    """What the model is asked for a part no expert answered: the prompt the expert got,
    else its question, or the whole query when the question waits for another answer."""
    if part.prompt:
        return [HumanMessage(content=part.prompt)]
    waits = set(braced_names(part.question)) & set(part.depends_on)
    return [HumanMessage(content=query if waits else part.question)]


def _steps_to(results: Sequence[SubQueryResult], part: SubQueryResult) -> list[SubQueryResult]:
    """The results a part was reached through, in plan order."""
    by_id = {r.id: r for r in results}
    seen: set[str] = set()
    stack = list(part.depends_on)
    while stack:
        sq_id = stack.pop()
        if sq_id not in seen and sq_id in by_id:
            seen.add(sq_id)
            stack.extend(by_id[sq_id].depends_on)
    return [r for r in results if r.id in seen]


def _entry(results: Sequence[SubQueryResult], part: SubQueryResult, answer: str) -> str:
    steps = [
        f"({r.question.strip()} {r.answer.strip()})" for r in _steps_to(results, part) if r.answer
    ]
    return "\n".join([answer.strip(), *steps])


def _enumerate(
    results: Sequence[SubQueryResult],
    parts: Sequence[SubQueryResult],
    answers: dict[str, str],
) -> str:
    """One entry per part; ``answers`` holds those the experts did not give."""
    entries = [_entry(results, p, p.answer or answers.get(p.id, "")) for p in parts]
    if len(entries) == 1:
        return entries[0]
    return "\n\n".join(f"{i}. {entry}" for i, entry in enumerate(entries, 1))


@dataclass(frozen=True)
class _Stream:
    """Stream ``llm``'s reply; with ``report`` (the run's config), each chunk is reported
    as a ``token`` progress event."""

    llm: BaseChatModel
    messages: list[BaseMessage]
    child: RunnableConfig
    timeout: float | None
    report: RunnableConfig | None = None

    def add(self, reply: BaseMessageChunk | None, chunk: BaseMessageChunk) -> BaseMessageChunk:
        if self.report is not None:
            emit({"type": "token", "content": chunk.text}, self.report)
        return chunk if reply is None else reply + chunk


def _text(reply: BaseMessageChunk | None) -> str:
    return reply.text.strip() if reply is not None else ""


def _stream(call: _Stream) -> BaseMessageChunk | None:
    stream = partial(call.llm.stream, call.messages, call.child)
    return stream_with_timeout(stream, call.add, call.timeout, _AGGREGATOR)


async def _astream(call: _Stream) -> BaseMessageChunk | None:
    stream = partial(call.llm.astream, call.messages, call.child)
    return await astream_with_timeout(stream, call.add, call.timeout, _AGGREGATOR)


_AGGREGATOR = "the aggregator model"


__all__ = [
    "SMALL_AGGREGATOR_PARAMETERS",
    "AggregationInput",
    "AggregationMode",
    "ResponseAggregator",
    "final_results",
    "holds_answer",
]
