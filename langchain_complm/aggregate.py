"""Response Aggregator: turns the experts' answers into the final answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field

from langchain_complm.concurrency import (
    DEFAULT_TIMEOUT,
    await_with_timeout,
    call_with_timeout,
    current_cancellation,
)
from langchain_complm.events import emit
from langchain_complm.execute.executor import SubQueryResult
from langchain_complm.prompts import AGGREGATE_PROMPT

logger = logging.getLogger(__name__)

_AGGREGATOR = "the aggregator model"


class AggregationInput(BaseModel):
    """What the aggregator needs: the query and every sub-query's result, in plan order."""

    query: str
    results: Sequence[SubQueryResult]


class ResponseAggregator(RunnableSerializable[AggregationInput, str]):
    """Synthesizes the final answer from (sub-query, expert, answer) triples with an LLM.

    With a single successful sub-query and nothing failed, its answer passes through
    unchanged (no LLM call). The LLM's output is streamed, so its tokens reach
    ``stream_mode="messages"``, ``astream_events`` and the progress events as they come.

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
    ) -> str:
        return self._call_with_config(self._aggregate, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: AggregationInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> str:
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

    def _passthrough(self, data: AggregationInput, config: RunnableConfig) -> str | None:
        if len(data.results) != 1 or data.results[0].answer is None:
            return None
        answer = data.results[0].answer
        emit({"type": "token", "content": answer}, config)
        return answer

    def _messages(self, data: AggregationInput) -> list[BaseMessage]:
        return self.prompt.format_messages(
            query=data.query, answers=self.format_answers(data.results)
        )

    def _aggregate(
        self,
        data: AggregationInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> str:
        if (answer := self._passthrough(data, config)) is not None:
            return answer
        child = _llm_config(config, run_manager)

        def write() -> str:
            cancellation = current_cancellation()
            parts = []
            for chunk in self.llm.stream(self._messages(data), child):
                if cancellation is not None and cancellation.cancelled:
                    break  # given up: no more tokens after the fallback answer's
                parts.append(chunk.text)
                emit({"type": "token", "content": chunk.text}, config)
            return "".join(parts).strip()

        try:
            return call_with_timeout(write, self.timeout, _AGGREGATOR)
        except TimeoutError as error:
            return self._timed_out(data, error, config)

    async def _aaggregate(
        self, data: AggregationInput, run_manager: Any, config: RunnableConfig
    ) -> str:
        if (answer := self._passthrough(data, config)) is not None:
            return answer
        child = _llm_config(config, run_manager)

        async def write() -> str:
            parts = []
            async for chunk in self.llm.astream(self._messages(data), child):
                parts.append(chunk.text)
                emit({"type": "token", "content": chunk.text}, config)
            return "".join(parts).strip()

        try:
            return await await_with_timeout(write(), self.timeout, _AGGREGATOR)
        except TimeoutError as error:
            return self._timed_out(data, error, config)

    def _timed_out(
        self, data: AggregationInput, error: TimeoutError, config: RunnableConfig
    ) -> str:
        logger.warning("%s; the answer lists the experts' answers instead", error)
        answer = self.format_answers(data.results)
        emit({"type": "token", "content": answer}, config)
        return answer


def _llm_config(config: RunnableConfig, run_manager: Any) -> RunnableConfig:
    # The tag lets stream consumers tell the final answer's tokens from other model calls.
    return {**config, "callbacks": run_manager.get_child("complm:aggregate")}


__all__ = ["AggregationInput", "ResponseAggregator"]
