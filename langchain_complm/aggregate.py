"""Response Aggregator: turns the experts' answers into the final answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, BaseMessageChunk
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
from langchain_complm.events import emit
from langchain_complm.execute.results import SubQueryResult
from langchain_complm.prompts import AGGREGATE_PROMPT

logger = logging.getLogger(__name__)


class AggregationInput(BaseModel):
    """What the aggregator needs: the query and every sub-query's result, in plan order."""

    query: str
    results: Sequence[SubQueryResult]


class ResponseAggregator(RunnableSerializable[AggregationInput, AIMessage]):
    """Synthesizes the final answer from (sub-query, expert, answer) triples with an LLM.

    With a single successful sub-query and nothing failed, its answer passes through
    unchanged (no LLM call). The LLM's output is streamed, so its tokens reach
    ``stream_mode="messages"``, ``astream_events`` and the progress events as they come.
    Returns the answer as an ``AIMessage`` with the id its streamed chunks carried, so a
    stream consumer that saw the tokens recognizes the final message.

    When the LLM takes longer than ``timeout`` it is given up (an async stream is
    cancelled), and the answer lists the experts' answers as the prompt shows them
    (:meth:`format_answers`), so the work already done is not lost; a warning is logged.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: BaseChatModel
    prompt: ChatPromptTemplate = AGGREGATE_PROMPT
    """Prompt with ``query`` and ``answers`` variables."""
    timeout: float | None = Field(default=DEFAULT_TIMEOUT, gt=0)
    """Seconds the LLM may take to write the answer (``None``: no limit)."""
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

    def format_answers(self, results: Sequence[SubQueryResult]) -> str:
        """The expert answers as the prompt shows them."""
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
        if len(data.results) == 1 and (answer := data.results[0].answer) is not None:
            emit({"type": "token", "content": answer}, config)
            return AIMessage(content=answer)
        messages = self.prompt.format_messages(
            query=data.query, answers=self.format_answers(data.results)
        )
        # The tag lets stream consumers tell the final answer's tokens from other model calls.
        child: RunnableConfig = {**config, "callbacks": run_manager.get_child("complm:aggregate")}
        try:
            reply: BaseMessage = yield _Stream(self.llm, messages, child, config, self.timeout)
        except TimeoutError as error:
            logger.warning("%s; the answer lists the experts' answers instead", error)
            answer = self.format_answers(data.results)
            emit({"type": "token", "content": answer}, config)
            return AIMessage(content=answer)
        return AIMessage(
            content=reply.text.strip(),
            id=reply.id,
            response_metadata=reply.response_metadata,
            usage_metadata=getattr(reply, "usage_metadata", None),
        )


@dataclass(frozen=True)
class _Stream:
    """Stream ``llm``'s reply, reporting each chunk as a ``token`` progress event."""

    llm: BaseChatModel
    messages: list[BaseMessage]
    child: RunnableConfig
    config: RunnableConfig
    timeout: float | None

    def add(self, reply: BaseMessageChunk | None, chunk: BaseMessageChunk) -> BaseMessageChunk:
        emit({"type": "token", "content": chunk.text}, self.config)
        return chunk if reply is None else reply + chunk


def _stream(call: _Stream) -> BaseMessageChunk | None:
    stream = partial(call.llm.stream, call.messages, call.child)
    return stream_with_timeout(stream, call.add, call.timeout, _AGGREGATOR)


async def _astream(call: _Stream) -> BaseMessageChunk | None:
    stream = partial(call.llm.astream, call.messages, call.child)
    return await astream_with_timeout(stream, call.add, call.timeout, _AGGREGATOR)


_AGGREGATOR = "the aggregator model"


__all__ = ["AggregationInput", "ResponseAggregator"]
