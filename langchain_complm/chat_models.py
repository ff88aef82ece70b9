"""``ChatCompLLM``: the Comp-LLM runnable behind the ``BaseChatModel`` interface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, Field

from langchain_complm.events import ProgressEvent
from langchain_complm.pipeline import CompLLMOutput


class ChatCompLLM(BaseChatModel):
    """Comp-LLM as a chat model, to drop into any chain or agent.

    It answers the last human message of the conversation with the wrapped Comp-LLM
    runnable. The reply's ``response_metadata["complm"]`` holds the full trace (plan,
    routing, sub-answers, timings) as JSON-ready data; streaming yields the aggregator's
    tokens as they come.

    Example:
        .. code-block:: python

            from langchain_complm import ChatCompLLM, create_comp_llm

            chat = ChatCompLLM(comp_llm=create_comp_llm(experts))
            chain = prompt | chat | StrOutputParser()
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    comp_llm: Runnable[Any, Any]
    """A runnable from :func:`~langchain_complm.create_comp_llm` (its ``invoke`` returns a
    :class:`~langchain_complm.CompLLMOutput`, its custom stream yields progress events)."""
    model_name: str = Field(default="comp-llm", alias="model")
    """Name reported to tracing."""
    stop: list[str] | None = None
    """Stop sequences: the answer is cut at the first one."""
    timeout: float | None = None
    """Seconds allowed per expert call (overrides the runnable's failure policy timeout)."""
    max_retries: int | None = None
    """Retries per expert call (overrides the runnable's failure policy)."""

    @property
    def _llm_type(self) -> str:
        return "comp-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "comp_llm": self.comp_llm.get_name()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="complm",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type="chat",
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _config(
        self, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None
    ) -> RunnableConfig:
        overrides = {
            key: value
            for key, value in (("timeout", self.timeout), ("max_retries", self.max_retries))
            if value is not None
        }
        config: RunnableConfig = {"callbacks": _child_callbacks(run_manager)}
        if overrides:
            config["configurable"] = {"failure_policy": overrides}
        return config

    def _result(self, output: CompLLMOutput, stop: list[str] | None) -> ChatResult:
        message = AIMessage(
            content=_cut(output.answer, stop or self.stop),
            response_metadata={
                "model_name": self.model_name,
                "complm": output.model_dump(mode="json"),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(self.comp_llm.invoke(messages, self._config(run_manager)), stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        output = await self.comp_llm.ainvoke(messages, self._config(run_manager))
        return self._result(output, stop)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        cutter = _StopCutter(stop or self.stop)
        for event in self.comp_llm.stream(
            messages, self._config(run_manager), stream_mode="custom"
        ):
            if chunk := self._chunk(event, cutter):
                if run_manager and chunk.text:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        cutter = _StopCutter(stop or self.stop)
        async for event in self.comp_llm.astream(
            messages, self._config(run_manager), stream_mode="custom"
        ):
            if chunk := self._chunk(event, cutter):
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _chunk(self, event: ProgressEvent, cutter: _StopCutter) -> ChatGenerationChunk | None:
        if event["type"] == "token":
            text = cutter.feed(event.get("content", ""))
            return ChatGenerationChunk(message=AIMessageChunk(content=text)) if text else None
        if event["type"] == "done":
            output: CompLLMOutput = event["data"]
            metadata = {"model_name": self.model_name, "complm": output.model_dump(mode="json")}
            return ChatGenerationChunk(
                message=AIMessageChunk(content=cutter.flush(), response_metadata=metadata)
            )
        return None


def _child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> CallbackManager | AsyncCallbackManager | None:
    """Callbacks that nest the pipeline's runs under this chat model's run.

    LLM run managers have no ``get_child`` (model runs are usually leaves); this builds the
    same child manager a chain run would, so traces show the stages inside the model call.
    """
    if run_manager is None:
        return None
    cls = (
        AsyncCallbackManager
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager
    )
    return cls(
        handlers=run_manager.inheritable_handlers,
        inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.run_id,
        tags=run_manager.inheritable_tags,
        inheritable_tags=run_manager.inheritable_tags,
        metadata=run_manager.inheritable_metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )


def _cut(text: str, stop: list[str] | None) -> str:
    positions = [i for s in stop or () if s and (i := text.find(s)) >= 0]
    return text[: min(positions)] if positions else text


class _StopCutter:
    """Applies stop sequences to a token stream, holding back text that may begin one."""

    def __init__(self, stop: list[str] | None) -> None:
        self.stop = [s for s in stop or () if s]
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> str:
        if self.done:
            return ""
        if not self.stop:
            return text
        self.pending += text
        cut = _cut(self.pending, self.stop)
        if len(cut) < len(self.pending):
            self.done = True
            return cut
        hold = max(len(s) - 1 for s in self.stop)
        safe = len(self.pending) - hold
        if safe <= 0:
            return ""
        out, self.pending = self.pending[:safe], self.pending[safe:]
        return out

    def flush(self) -> str:
        """Whatever was held back, at the end of the stream."""
        out, self.pending = ("" if self.done else self.pending), ""
        return out
