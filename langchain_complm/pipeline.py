"""The Comp-LLM runnable: decompose -> route -> execute -> aggregate, as a LangGraph graph."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import EmptyInputError
from langgraph.func import entrypoint
from langgraph.pregel import Pregel
from pydantic import BaseModel, Field, computed_field

from langchain_complm.aggregate import AggregationInput, ResponseAggregator
from langchain_complm.decompose.generator import SubQueryGenerator
from langchain_complm.events import emit
from langchain_complm.execute.executor import (
    FailurePolicy,
    QueryExecutor,
    ScheduleMode,
    SubQueryResult,
)
from langchain_complm.experts import Expert, check_experts
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, Plan, RoutingDecision, invalid_text
from langchain_complm.route.router import BaseRouter, EmbeddingRouter

DEFAULT_MAX_QUERY_CHARS = 8000
"""Default limit on the length of a query, in characters."""


class CompLLMOutput(BaseModel):
    """The final answer and the full trace of how it was reached."""

    query: str
    answer: str
    plan: Plan = Field(description="The plan, with every sub-query's routing decision.")
    results: dict[str, SubQueryResult] = Field(description="Per sub-query results, plan order.")
    timings: dict[str, float] = Field(
        description="Seconds per stage: decompose, route, execute, aggregate, total."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def routing(self) -> list[RoutingDecision]:
        """The router's decision for every sub-query."""
        return [sq.route for sq in self.plan.sub_queries if sq.route is not None]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def errors(self) -> dict[str, str]:
        """Why each failed or skipped sub-query did not produce an answer."""
        return {k: r.error or r.status for k, r in self.results.items() if r.status != "ok"}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fallbacks(self) -> list[str]:
        """Every fallback taken: decomposition, routing thresholds, fallback experts."""
        notes = []
        if self.plan.fallback_reason:
            notes.append(f"decomposition fell back to the whole query: {self.plan.fallback_reason}")
        notes += [
            f"{d.sub_query_id}: score {d.score:.2f} under threshold, sent to {d.expert}"
            for d in self.routing
            if d.fallback
        ]
        notes += [
            f"{k}: answered by fallback expert {r.expert}"
            for k, r in self.results.items()
            if r.used_fallback
        ]
        return notes


def coerce_query(value: Any, max_chars: int | None = DEFAULT_MAX_QUERY_CHARS) -> str:
    """The query text from any accepted input form.

    Accepts a string, ``{"query": str}``, ``{"messages": [...]}`` (as in a LangGraph agent's
    state), a list of messages, a single message or a prompt value; messages yield the last
    human message's text.

    Raises:
        TypeError: for any other type (``None`` included).
        ValueError: for an empty query, one longer than ``max_chars``, or one that is not
            valid Unicode text (a lone surrogate, which embeddings and tokenizers fail on).
    """
    if isinstance(value, dict):
        if "query" in value:
            value = value["query"]
        elif "messages" in value:
            value = value["messages"]
        else:
            raise ValueError(
                f"input dict needs a 'query' or 'messages' key, got keys {sorted(value)}"
            )
    if isinstance(value, PromptValue):
        value = value.to_messages()
    if isinstance(value, BaseMessage):
        value = [value]
    if isinstance(value, list) and all(isinstance(m, BaseMessage) for m in value):
        humans = [m for m in value if isinstance(m, HumanMessage)]
        if not humans:
            raise ValueError("the messages contain no human message to answer")
        value = humans[-1].text
    if not isinstance(value, str):
        raise _not_a_query(value)
    query = value.strip()
    if not query:
        raise ValueError("query is empty")
    if max_chars is not None and len(query) > max_chars:
        raise ValueError(f"query is {len(query)} characters long, over the limit of {max_chars}")
    if (problem := invalid_text(query)) is not None:
        raise ValueError(f"query has {problem}")
    return query


def _not_a_query(value: Any) -> TypeError:
    return TypeError(
        f"query must be a string, {{'query': str}}, or chat messages; got {type(value).__name__}"
    )


class _CompLLMGraph(Pregel):
    """The pipeline's graph. LangGraph reads ``None`` as "no input" and, on a thread with
    no checkpoint to resume, fails with its own ``EmptyInputError``; here ``None`` gets the
    error :func:`coerce_query` gives any other input that is not a query. ``invoke``,
    ``batch`` and the event streams all go through these two methods."""

    def stream(self, input: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from super().stream(input, *args, **kwargs)
        except EmptyInputError:
            if input is not None:
                raise
            raise _not_a_query(input) from None

    async def astream(self, input: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for chunk in super().astream(input, *args, **kwargs):
                yield chunk
        except EmptyInputError:
            if input is not None:
                raise
            raise _not_a_query(input) from None


def create_comp_llm(
    experts: Iterable[Expert],
    *,
    generator: Runnable[str, Plan] | BaseChatModel,
    router: BaseRouter | Embeddings,
    aggregator: ResponseAggregator | BaseChatModel | None = None,
    mode: ScheduleMode = "superstep",
    max_concurrency: int | None = None,
    failure_policy: FailurePolicy | None = None,
    routing_threshold: float | None = None,
    fallback_expert: str | None = None,
    max_sub_queries: int = DEFAULT_MAX_SUB_QUERIES,
    max_query_chars: int | None = DEFAULT_MAX_QUERY_CHARS,
    checkpointer: BaseCheckpointSaver | None = None,
    name: str = "CompLLM",
) -> Pregel:
    """Build the Comp-LLM runnable: a compiled LangGraph graph.

    Args:
        experts: The expert models with their profiles; names must be unique.
        generator: A chat model, decomposing with :class:`SubQueryGenerator`'s default prompt,
            or any ``Runnable[str, Plan]`` (a configured :class:`SubQueryGenerator`, the
            :class:`~langchain_complm.decompose.StructuralSubQueryGenerator`, ...).
            :func:`~langchain_complm.config.build_comp_llm` fills in the embedded defaults.
        router: A router (an :class:`EmbeddingRouter`, a
            :class:`~langchain_complm.route.TwoStepRouter`, ...), or an embeddings model to
            build an :class:`EmbeddingRouter` over the experts.
        aggregator: A :class:`ResponseAggregator`, or a chat model to build one. ``None``
            uses the generator's chat model (required when the generator has none).
        mode: How sub-queries are scheduled (see :data:`ScheduleMode`).
        max_concurrency: At most this many experts run at once (default: unlimited).
        failure_policy: Retries, fallback expert, timeout and raise-or-continue for experts.
        routing_threshold: With ``fallback_expert``, sub-queries whose best routing score is
            lower go to the fallback expert (ignored when ``router`` is a router).
        fallback_expert: The expert for low-scoring sub-queries.
        max_sub_queries: Cap on sub-queries per plan (ignored when ``generator`` is a
            SubQueryGenerator, which has its own).
        max_query_chars: Longer queries are rejected with a ``ValueError``.
        checkpointer: Optional LangGraph checkpointer (for threads and resumption).
        name: The run name shown in traces.

    Returns:
        A LangGraph ``Pregel`` runnable. ``invoke("...")`` (or ``{"query": ...}``, or chat
        messages) returns a :class:`CompLLMOutput`; ``stream`` yields
        :class:`~langchain_complm.events.ProgressEvent` dicts (``stream_mode="custom"`` by
        default; any LangGraph stream mode can be asked for); ``astream_events`` reports
        every stage, sub-query and expert as a named child run.

    Raises:
        ValueError: no experts, duplicate expert names, an unknown fallback expert, or no
            model to aggregate with.
    """
    by_name = check_experts(experts)
    if fallback_expert is not None and fallback_expert not in by_name:
        raise ValueError(
            f"fallback expert {fallback_expert!r} is not one of the experts ({', '.join(by_name)})"
        )
    if isinstance(generator, BaseChatModel):
        generator = SubQueryGenerator(llm=generator, max_sub_queries=max_sub_queries)
    if not isinstance(router, BaseRouter):
        router = EmbeddingRouter(
            experts=list(by_name.values()),
            embeddings=router,
            threshold=routing_threshold,
            fallback_expert=fallback_expert if routing_threshold is not None else None,
        )
    unknown = sorted(set(router.expert_names) - set(by_name))
    if unknown:
        raise ValueError(f"the router routes to experts that do not exist: {', '.join(unknown)}")
    if not isinstance(aggregator, ResponseAggregator):
        llm = aggregator or getattr(generator, "llm", None)
        if llm is None:
            raise ValueError(
                "an aggregator (a chat model or a ResponseAggregator) is required when the "
                "generator has no chat model of its own"
            )
        aggregator = ResponseAggregator(llm=llm)
    executor = QueryExecutor(
        experts=by_name,
        mode=mode,
        max_concurrency=max_concurrency,
        failure_policy=failure_policy or FailurePolicy(),
        load=router.load,
    )
    return _compile(generator, router, executor, aggregator, max_query_chars, checkpointer, name)


def _compile(
    generator: Runnable[str, Plan],
    router: BaseRouter,
    executor: QueryExecutor,
    aggregator: ResponseAggregator,
    max_query_chars: int | None,
    checkpointer: BaseCheckpointSaver | None,
    name: str,
) -> Pregel:
    # The functional API rather than a StateGraph here because its input may be any value
    # (a plain string included); the plan's own graph is a StateGraph, built per query.
    @entrypoint(checkpointer=checkpointer)
    def comp_llm(query_input: Any, config: RunnableConfig) -> CompLLMOutput:
        query = coerce_query(query_input, max_query_chars)
        timings: dict[str, float] = {}
        start = last = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal last
            now = time.perf_counter()
            timings[stage] = now - last
            last = now

        plan = generator.invoke(query, config)
        lap("decompose")
        emit({"type": "plan", "data": plan}, config)
        plan = router.invoke(plan, config)
        lap("route")
        execution = executor.run(plan, config)
        lap("execute")
        results = list(execution.results.values())
        answer = aggregator.invoke(AggregationInput(query=query, results=results), config)
        lap("aggregate")
        timings["total"] = last - start
        output = CompLLMOutput(
            query=query, answer=answer, plan=plan, results=execution.results, timings=timings
        )
        emit({"type": "done", "data": output}, config)
        return output

    comp_llm.__class__ = _CompLLMGraph  # the entrypoint builds a plain Pregel
    comp_llm.name = name
    comp_llm.stream_mode = "custom"
    return comp_llm


__all__ = ["CompLLMOutput", "coerce_query", "create_comp_llm"]
