"""``ChatCompLLM``: the Comp-LLM runnable behind the ``BaseChatModel`` interface."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langgraph.constants import TAG_NOSTREAM
from pydantic import ConfigDict, Field

from langchain_complm.events import ProgressEvent
from langchain_complm.execute.executor import FAILURE_POLICY, MAX_CONCURRENCY
from langchain_complm.pipeline import CompLLMGraph, CompLLMOutput
from langchain_complm.text import StopCutter, truncate_at_stop

_CALLER = "complm_caller_config"
"""Keyword through which ``invoke``/``stream`` hand the caller's config down to ``_generate``
and ``_stream`` (a chat model's run does not otherwise see its config)."""

_SUB_ANSWER_CHARS = 200
"""Sub-answers in the summary trace are cut to this many characters."""


@dataclass(frozen=True)
class _CallerConfig:
    """What a chat-model call forwards to the pipeline from its caller's config: the
    ``configurable`` values (thread id, checkpoint namespace, ...), the limits, and what
    the pipeline's runs need to nest under this model's run when no run manager reaches
    ``_stream`` (``BaseChatModel.stream`` passes none)."""

    configurable: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    config: RunnableConfig = field(default_factory=dict)  # type: ignore[assignment]

    @classmethod
    def of(cls, config: RunnableConfig) -> _CallerConfig:
        limits: dict[str, Any] = {
            k: v for k in ("recursion_limit", "max_concurrency") if (v := config.get(k)) is not None
        }
        return cls(dict(config.get("configurable") or {}), limits, config)

    @classmethod
    def ensure(cls, config: RunnableConfig | None) -> tuple[RunnableConfig, _CallerConfig]:
        """``config`` completed (with the config of the runnable or graph node we run inside,
        and a run id for this model's run) and what the pipeline gets of it."""
        config = ensure_config(config)
        config["run_id"] = config.get("run_id") or uuid.uuid4()
        return config, cls.of(config)

    def __repr__(self) -> str:  # shown in traces as an invocation parameter
        return f"CallerConfig(thread_id={self.configurable.get('thread_id')!r})"


class ChatCompLLM(BaseChatModel):
    """Comp-LLM as a chat model, to drop into any chain or agent.

    It answers the last human message with the wrapped Comp-LLM runnable; the decomposer
    also sees the conversation before it (system messages and earlier turns). The caller's
    config reaches the runnable (so a checkpointed runnable gets its thread id); the reply's
    ``usage_metadata`` sums every model call of the pipeline, and
    ``response_metadata["complm"]`` holds a small trace (plan, experts, statuses, timings;
    ``trace="full"`` for everything, ``"none"`` for nothing). Streaming yields the final
    answer's tokens only.

    It does not call tools; to let an agent use Comp-LLM, give the agent
    :meth:`as_tool` (a tool that returns the answer).

    Example:
        .. code-block:: python

            from langchain_complm import ChatCompLLM, create_comp_llm

            chat = ChatCompLLM(comp_llm=create_comp_llm(experts))
            chain = prompt | chat | StrOutputParser()
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    comp_llm: Runnable[Any, Any]
    """A runnable from :func:`~langchain_complm.create_comp_llm` (its ``invoke`` returns the
    output state, its custom stream yields progress events)."""
    model_name: str = Field(default="comp-llm", alias="model")
    """Name reported to tracing."""
    stop: list[str] | None = None
    """Stop sequences: the answer is cut at the first one."""
    timeout: float | None = None
    """Seconds allowed per expert call (overrides the runnable's failure policy timeout)."""
    max_retries: int | None = None
    """Retries per expert call (overrides the runnable's failure policy)."""
    trace: Literal["summary", "full", "none"] = "summary"
    """What ``response_metadata["complm"]`` holds: a summary that keeps checkpoints and
    agent state small, the whole :class:`~langchain_complm.CompLLMOutput`, or nothing."""

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

    # --- the caller's config ----------------------------------------------------------------

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, kwargs[_CALLER] = _CallerConfig.ensure(config)
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config, kwargs[_CALLER] = _CallerConfig.ensure(config)
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config, kwargs[_CALLER] = _CallerConfig.ensure(config)
        return super().stream(input, config, stop=stop, **kwargs)

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, kwargs[_CALLER] = _CallerConfig.ensure(config)
        return super().astream(input, config, stop=stop, **kwargs)

    def _config(
        self,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        usage: _Usage,
        caller: _CallerConfig | None,
    ) -> RunnableConfig:
        caller = caller or _CallerConfig.of(ensure_config())
        configurable = dict(caller.configurable)
        overrides = {
            key: value
            for key, value in (("timeout", self.timeout), ("max_retries", self.max_retries))
            if value is not None
        }
        if overrides:
            configurable[FAILURE_POLICY] = overrides
        if "max_concurrency" in caller.limits:
            configurable.setdefault(MAX_CONCURRENCY, caller.limits["max_concurrency"])
        config: RunnableConfig = {
            "callbacks": self._child_callbacks(run_manager, usage, caller),
            "configurable": configurable,
        }
        if "recursion_limit" in caller.limits:
            config["recursion_limit"] = caller.limits["recursion_limit"]
        return config

    def _child_callbacks(
        self,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        usage: _Usage,
        caller: _CallerConfig,
    ) -> CallbackManager:
        """Callbacks that nest the pipeline's runs under this chat model's run.

        LLM run managers have no ``get_child`` (model runs are usually leaves); this builds
        the same child manager a chain run would, so traces show the stages inside the
        model call. Without a run manager (``stream``/``astream``), the run is the one
        ``caller`` named, its handlers those the caller's config gives. ``usage`` sees every
        model call of the pipeline. The pipeline's model runs are not streamed to a
        ``stream_mode="messages"`` consumer around this model: its answer tokens come from
        this model's run.
        """
        if run_manager is None:
            config = caller.config
            configured = CallbackManager.configure(
                config.get("callbacks"),
                self.callbacks,
                self.verbose,
                config.get("tags"),
                self.tags,
                config.get("metadata"),
                self.metadata,
            )
            parent, handlers = config.get("run_id"), configured.inheritable_handlers
            tags, metadata = configured.inheritable_tags, configured.inheritable_metadata
        else:
            parent, handlers = run_manager.run_id, run_manager.inheritable_handlers
            tags, metadata = run_manager.inheritable_tags, run_manager.inheritable_metadata
        handlers = [*handlers, usage]
        tags = [*tags, TAG_NOSTREAM]
        # A sync manager serves async runs too: LangChain adapts it to the caller.
        return CallbackManager(
            handlers=handlers,
            inheritable_handlers=handlers,
            parent_run_id=parent,
            tags=tags,
            inheritable_tags=tags,
            metadata=metadata,
            inheritable_metadata=metadata,
        )

    # --- answering --------------------------------------------------------------------------

    def _reply(self, output: CompLLMOutput, usage: _Usage, content: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"model_name": self.model_name}
        if self.trace != "none":
            metadata["complm"] = (
                output.model_dump(mode="json") if self.trace == "full" else _summary(output)
            )
        fields: dict[str, Any] = {"content": content, "response_metadata": metadata}
        if usage.total:
            fields["usage_metadata"] = usage.total
        return fields

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        usage = _Usage()
        config = self._config(run_manager, usage, kwargs.get(_CALLER))
        output = CompLLMOutput.model_validate(self.comp_llm.invoke(messages, config))
        return self._result(output, usage, stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        usage = _Usage()
        config = self._config(run_manager, usage, kwargs.get(_CALLER))
        output = CompLLMOutput.model_validate(await self.comp_llm.ainvoke(messages, config))
        return self._result(output, usage, stop)

    def _result(self, output: CompLLMOutput, usage: _Usage, stop: list[str] | None) -> ChatResult:
        fields = self._reply(output, usage, truncate_at_stop(output.answer, stop or self.stop)[0])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(**fields))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        usage = _Usage()
        config = self._config(run_manager, usage, kwargs.get(_CALLER))
        cutter = StopCutter(stop or self.stop)
        for event in self.comp_llm.stream(messages, config, stream_mode="custom"):
            if chunk := self._chunk(event, cutter, usage):
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
        usage = _Usage()
        config = self._config(run_manager, usage, kwargs.get(_CALLER))
        cutter = StopCutter(stop or self.stop)
        async for event in self.comp_llm.astream(messages, config, stream_mode="custom"):
            if chunk := self._chunk(event, cutter, usage):
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _chunk(
        self, event: ProgressEvent, cutter: StopCutter, usage: _Usage
    ) -> ChatGenerationChunk | None:
        if event["type"] == "token":
            text = cutter.feed(event.get("content", ""))
            return ChatGenerationChunk(message=AIMessageChunk(content=text)) if text else None
        if event["type"] == "done":
            fields = self._reply(event["data"], usage, cutter.flush())
            return ChatGenerationChunk(message=AIMessageChunk(**fields))
        return None

    # --- tools ------------------------------------------------------------------------------

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        raise NotImplementedError(
            "ChatCompLLM answers with its experts and does not call tools. To let an agent "
            "use Comp-LLM, give it Comp-LLM as a tool: tools=[chat.as_tool()] (a tool that "
            "takes a question and returns the answer), with another chat model as the agent's."
        )

    def as_tool(self, *args: Any, **kwargs: Any) -> BaseTool:  # type: ignore[override]
        """A tool that takes a ``query`` and returns the answer text (see
        :meth:`~langchain_complm.pipeline.CompLLMGraph.as_tool`)."""
        if not isinstance(self.comp_llm, CompLLMGraph):
            raise TypeError("as_tool() needs comp_llm to be a runnable from create_comp_llm")
        return self.comp_llm.as_tool(*args, **kwargs)


class _Usage(BaseCallbackHandler):
    """Sums the token usage of every model call it sees (whatever the model's name)."""

    run_inline = True  # summed in the calling thread, so the total is complete at the end

    def __init__(self) -> None:
        self.total: UsageMetadata | None = None
        self._lock = threading.Lock()

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if usage:
                    with self._lock:
                        self.total = usage if self.total is None else add_usage(self.total, usage)


def _summary(output: CompLLMOutput) -> dict[str, Any]:
    """The trace without prompts, attempts and routing scores: what an agent's state or a
    checkpoint can carry on every turn."""
    return {
        "query": output.query,
        "answer": output.answer,
        "plan": {
            "sub_queries": [
                {
                    "id": sq.id,
                    "question": sq.question,
                    "depends_on": list(sq.depends_on),
                    "expert": sq.expert,
                }
                for sq in output.plan.sub_queries
            ]
        },
        "results": {
            k: {
                "expert": r.expert,
                "status": r.status,
                "answer": (r.answer or "")[:_SUB_ANSWER_CHARS],
                "error": r.error,
            }
            for k, r in output.results.items()
        },
        "timings": output.timings,
        "errors": output.errors,
        "fallbacks": output.fallbacks,
    }
