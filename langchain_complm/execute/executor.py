"""Query Executor: compiles a routed plan into a LangGraph ``StateGraph`` and runs it.

One node per sub-query, bound to its expert; edges follow the dependencies. LangGraph runs
all nodes whose inputs are ready in the same superstep (fan-out) and a node with several
parents waits for all of them (fan-in), so independent sub-queries run in parallel and
dependents see their parents' answers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from functools import partial
from typing import Annotated, Any, Literal

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import merge_configs
from langgraph.config import get_config
from langgraph.errors import GraphBubbleUp
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.pregel import Pregel
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import TypedDict

from langchain_complm.batching import BatchCohort, batch_cohort, batch_group
from langchain_complm.concurrency import (
    DEFAULT_TIMEOUT,
    ExpertLoad,
    await_with_timeout,
    call_with_timeout,
)
from langchain_complm.errors import SubQueryExecutionError
from langchain_complm.events import current_writer, emit
from langchain_complm.experts import Expert, check_experts
from langchain_complm.plan import Plan, SubQuery
from langchain_complm.prompts import SUBQUERY_WITH_CONTEXT

ScheduleMode = Literal["superstep", "eager", "sequential"]
"""How sub-queries are scheduled; all three give the same answers.

- ``superstep``: a ``StateGraph``; each dependency level runs in parallel (LangGraph
  fan-out/fan-in), and a level starts when the previous one has finished.
- ``eager``: LangGraph's functional API; a sub-query starts as soon as its own parents have
  finished, so a dependent of a fast branch does not wait for a slow sibling.
- ``sequential``: a ``StateGraph`` chaining the sub-queries in topological order, one after
  another (the paper's baseline).
"""


PLAN_GRAPH_NAME = "PlanGraph"
"""Run name of the graph compiled from a plan (a child of the ``QueryExecutor`` run)."""


class FailurePolicy(BaseModel):
    """What to do when an expert raises, returns nothing, or times out.

    The assigned expert is tried ``1 + max_retries`` times, then ``fallback_expert`` once.
    If all fail, ``on_failure="continue"`` records the failure, skips the sub-queries that
    depend on it and lets the rest finish; ``"raise"`` stops starting new sub-queries and
    raises :class:`SubQueryExecutionError`, which still carries every result computed.

    Each call gets ``timeout`` seconds (default :data:`~langchain_complm.concurrency.
    DEFAULT_TIMEOUT`; ``None``: no limit). An async call that runs out is cancelled; a sync
    call is abandoned and told so (see :mod:`langchain_complm.concurrency` for what that
    stops): the attempt fails either way and the next one starts at once.
    """

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(default=0, ge=0)
    fallback_expert: str | None = None
    timeout: float | None = Field(
        default=DEFAULT_TIMEOUT, gt=0, description="Seconds per expert call (None: no limit)."
    )
    on_failure: Literal["continue", "raise"] = "continue"


class Attempt(BaseModel):
    """One call of one expert for one sub-query."""

    expert: str
    error: str | None = None
    error_type: str | None = Field(
        default=None, description="Class name of the exception, e.g. 'ServerTimeoutError'."
    )
    duration: float
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="The expert reply's response_metadata (e.g. batch size, tokens, load time).",
    )


class SubQueryResult(BaseModel):
    """What happened to one sub-query."""

    id: str
    question: str = Field(description="The sub-query as planned (placeholders unfilled).")
    depends_on: tuple[str, ...] = ()
    expert: str | None = Field(default=None, description="Expert that answered (or last tried).")
    prompt: str | None = Field(default=None, description="The text sent to the expert.")
    answer: str | None = None
    status: Literal["ok", "failed", "skipped"]
    error: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    started_at: float | None = Field(default=None, description="Unix time the first call began.")
    ended_at: float | None = Field(default=None, description="Unix time the last call ended.")

    @property
    def duration(self) -> float | None:
        """Seconds from the first expert call to the end of the last."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def response_metadata(self) -> dict[str, Any]:
        """Metadata of the reply that answered (batch size, tokens, load time, ...)."""
        return self.attempts[-1].metadata if self.status == "ok" else {}

    @property
    def used_fallback(self) -> bool:
        """Whether a fallback expert (not the routed one) produced the answer."""
        return self.status == "ok" and len({a.expert for a in self.attempts}) > 1


class ExecutionResult(BaseModel):
    """Results of every sub-query of a plan, keyed by id, in plan order."""

    results: dict[str, SubQueryResult]
    started_at: float
    ended_at: float

    @property
    def answers(self) -> dict[str, str]:
        """Answers of the sub-queries that succeeded."""
        return {k: r.answer for k, r in self.results.items() if r.answer is not None}

    @property
    def failed(self) -> dict[str, SubQueryResult]:
        """The sub-queries that failed or were skipped."""
        return {k: r for k, r in self.results.items() if r.status != "ok"}


def _merge(left: dict[str, SubQueryResult], right: dict[str, SubQueryResult]) -> dict:
    return {**left, **right}


class _ExecState(TypedDict):
    results: Annotated[dict[str, SubQueryResult], _merge]


class QueryExecutor(RunnableSerializable[Plan, ExecutionResult]):
    """Runs a routed :class:`Plan` as a compiled LangGraph ``StateGraph``.

    Each sub-query's expert gets the sub-query with its parents' answers filled into ``{id}``
    placeholders and listed as context. ``max_concurrency`` caps how many experts run at
    once (LangGraph's own limit); a per-run ``FailurePolicy`` can be given as
    ``config={"configurable": {"failure_policy": {...}}}``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    experts: dict[str, Expert]
    """Experts by name (a list of experts is accepted)."""
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    max_concurrency: int | None = Field(default=None, ge=1)
    mode: ScheduleMode = "superstep"
    context_template: str = SUBQUERY_WITH_CONTEXT
    """How parents' answers are given to a dependent sub-query (``context``, ``question``)."""
    load: ExpertLoad = Field(default_factory=ExpertLoad)
    """Counts each expert's calls in flight (share one with a least-loaded router)."""
    name: str | None = "QueryExecutor"

    @field_validator("experts", mode="before")
    @classmethod
    def _key_experts(cls, value: Any) -> dict[str, Expert]:
        return check_experts(value.values() if isinstance(value, Mapping) else value)

    @model_validator(mode="after")
    def _check_policy(self) -> QueryExecutor:
        self._checked(self.failure_policy)
        return self

    def _checked(self, policy: FailurePolicy) -> FailurePolicy:
        if policy.fallback_expert is not None and policy.fallback_expert not in self.experts:
            raise ValueError(
                f"fallback expert {policy.fallback_expert!r} is not one of the experts "
                f"({', '.join(self.experts)})"
            )
        return policy

    # --- graph construction ---------------------------------------------------------------

    def compile_plan(
        self, plan: Plan, policy: FailurePolicy | None = None, *, asynchronous: bool = False
    ) -> Pregel:
        """Compile ``plan`` (validated and routed) into the LangGraph graph that runs it.

        ``superstep`` and ``sequential`` give a ``StateGraph`` with one node per sub-query,
        named by its id; ``eager`` gives a functional-API graph with one task per sub-query.
        With ``asynchronous`` the nodes are coroutines (for ``ainvoke``; a sync graph also
        runs under ``ainvoke``, in threads). Each returns ``{"results": {...}}``.
        """
        run = _Run(self, plan, policy or self.failure_policy)
        if self.mode == "eager":
            return run.eager_graph(asynchronous)
        builder = StateGraph(_ExecState)
        for sq in plan.sub_queries:
            # A partial, not a Runnable (which inspects its signature and merges its config
            # on every call) nor a function (whose type hints LangGraph resolves to infer an
            # input schema, 0.3 ms per node at every compile).
            builder.add_node(
                sq.id,
                partial(run.anode if asynchronous else run.node, sq),
                metadata={"complm_sub_query_id": sq.id, "complm_expert": sq.expert},
            )
        if self.mode == "sequential":
            order = plan.topological_order()
            for src, dst in zip([START, *order], [*order, END], strict=True):
                builder.add_edge(src, dst)
        else:
            for sq in plan.sub_queries:
                deps = list(sq.depends_on)
                builder.add_edge(deps if len(deps) > 1 else (deps or [START])[0], sq.id)
                if not plan.dependents(sq.id):
                    builder.add_edge(sq.id, END)
        return builder.compile(name=PLAN_GRAPH_NAME)

    def _check_plan(self, plan: Plan) -> Plan:
        if not isinstance(plan, Plan):
            raise TypeError(f"QueryExecutor expects a Plan, got {type(plan).__name__}")
        plan.validate_dag(max_sub_queries=None)
        for sq in plan.sub_queries:
            if sq.expert is None:
                raise ValueError(f"sub-query {sq.id!r} has no expert: route the plan first")
            if sq.expert not in self.experts:
                raise ValueError(f"sub-query {sq.id!r} is routed to unknown expert {sq.expert!r}")
        return plan

    def _policy(self, config: RunnableConfig) -> FailurePolicy:
        override = (config.get("configurable") or {}).get("failure_policy")
        if override is None:
            return self.failure_policy
        policy = FailurePolicy.model_validate(override)
        if policy.fallback_expert is not None and policy.fallback_expert not in self.experts:
            raise ValueError(
                f"fallback expert {policy.fallback_expert!r} is not one of the experts"
            )
        return policy

    def _graph_config(self, plan: Plan, config: RunnableConfig, run_manager: Any) -> RunnableConfig:
        child: RunnableConfig = {**config, "callbacks": run_manager.get_child()}
        # Without a limit LangGraph sizes its thread pool by the CPU count (6 threads on 2
        # cores), which would split a wider fan-out into two rounds (and its batch in two).
        width = len(plan.sub_queries)
        if self.mode == "eager":
            # The eager loop enforces max_concurrency itself. LangGraph's pool must fit every
            # task plus the waiting entrypoint and LangGraph's own helpers (measured: up to
            # width + 2 still left a sub-query waiting for a thread); threads are created
            # lazily, so headroom costs nothing. A limit of 1 here would deadlock.
            child["max_concurrency"] = 2 * width + 1
        else:
            child["max_concurrency"] = (
                self.max_concurrency or config.get("max_concurrency") or width
            )
            # One superstep per level (per sub-query when sequential): a long chain must
            # not stop at LangGraph's default limit of 25 steps.
            steps = width if self.mode == "sequential" else len(plan.levels())
            child["recursion_limit"] = max(config.get("recursion_limit", 0), steps + 1)
        return child

    # --- running ----------------------------------------------------------------------------

    def invoke(
        self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ExecutionResult:
        return self._call_with_config(self._execute, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ExecutionResult:
        return await self._acall_with_config(
            self._aexecute, input, config, run_type="chain", **kwargs
        )

    def _execute(
        self, plan: Plan, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> ExecutionResult:
        policy = self._policy(config)
        graph = self.compile_plan(self._check_plan(plan), policy)
        started = time.time()
        state = graph.invoke({"results": {}}, self._graph_config(plan, config, run_manager))
        return self._collect(plan, state, started, policy)

    async def _aexecute(
        self, plan: Plan, run_manager: Any, config: RunnableConfig
    ) -> ExecutionResult:
        policy = self._policy(config)
        graph = self.compile_plan(self._check_plan(plan), policy, asynchronous=True)
        started = time.time()
        state = await graph.ainvoke({"results": {}}, self._graph_config(plan, config, run_manager))
        return self._collect(plan, state, started, policy)

    def _collect(
        self, plan: Plan, state: Mapping[str, Any], started: float, policy: FailurePolicy
    ) -> ExecutionResult:
        results = state["results"]
        result = ExecutionResult(
            results={sq.id: results[sq.id] for sq in plan.sub_queries},
            started_at=started,
            ended_at=time.time(),
        )
        failed = [k for k, r in result.results.items() if r.status == "failed"]
        if failed and policy.on_failure == "raise":
            details = "; ".join(f"{k}: {result.results[k].error}" for k in failed)
            raise SubQueryExecutionError(f"sub-queries failed: {details}", result)
        return result


def _tags(sq_id: str, expert: str | None) -> list[str]:
    return [f"complm:sub_query:{sq_id}", f"complm:expert:{expert}"]


class _Run:
    """Per-invocation state shared by the nodes of one compiled plan."""

    def __init__(self, executor: QueryExecutor, plan: Plan, policy: FailurePolicy) -> None:
        self.executor = executor
        self.plan = plan
        # Looked up per sub-query in the scheduling loops: built once, not per lookup.
        self.by_id = plan.by_id
        self.policy = policy
        # Under on_failure="raise" the first failure stops sub-queries not yet started.
        self.aborted = threading.Event()
        self.writer = current_writer()
        # First attempts of sub-queries started together for one model (see batching.py).
        self.cohorts: dict[str, BatchCohort] = {}
        if executor.mode == "superstep":
            for level in plan.levels():
                self.declare_cohorts(level)

    def declare_cohorts(self, started_together: Sequence[str]) -> None:
        groups: dict[Hashable, list[str]] = {}
        for sq_id in started_together:
            expert = self.executor.experts[self.by_id[sq_id].expert]  # type: ignore[index]
            groups.setdefault(batch_group(expert.llm), []).append(sq_id)
        for ids in groups.values():
            if len(ids) > 1:
                cohort = BatchCohort(size=len(ids), label=",".join(ids))
                self.cohorts.update(dict.fromkeys(ids, cohort))

    def eager_graph(self, asynchronous: bool) -> Pregel:
        """A functional-API graph that starts each sub-query once its parents are done."""
        plan, by_id, limit = self.plan, self.by_id, self.executor.max_concurrency

        def make_task(sq: SubQuery) -> Any:
            if asynchronous:

                async def arun(parents: dict[str, SubQueryResult]) -> SubQueryResult:
                    update = await self.anode(sq, {"results": parents}, get_config())
                    return update["results"][sq.id]

                return task(name=sq.id)(arun)  # type: ignore[arg-type]  # overloads too narrow

            def run(parents: dict[str, SubQueryResult]) -> SubQueryResult:
                return self.node(sq, {"results": parents}, get_config())["results"][sq.id]

            return task(name=sq.id)(run)  # type: ignore[arg-type]  # overloads too narrow

        tasks = {sq.id: make_task(sq) for sq in plan.sub_queries}

        def start_ready(results: dict, running: dict, waiting: list[str]) -> None:
            ready = [
                sq_id for sq_id in waiting if all(d in results for d in by_id[sq_id].depends_on)
            ]
            if limit is not None:
                ready = ready[: max(0, limit - len(running))]
            self.declare_cohorts(ready)
            for sq_id in ready:
                waiting.remove(sq_id)
                deps = by_id[sq_id].depends_on
                running[tasks[sq_id]({d: results[d] for d in deps})] = sq_id

        if asynchronous:

            @entrypoint()
            async def eager_async(_: Any) -> dict[str, dict[str, SubQueryResult]]:
                results: dict[str, SubQueryResult] = {}
                running: dict[Any, str] = {}
                waiting = plan.topological_order()
                while waiting or running:
                    start_ready(results, running, waiting)
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        results[running.pop(future)] = future.result()
                return {"results": results}

            eager_async.name = PLAN_GRAPH_NAME
            return eager_async

        @entrypoint()
        def eager(_: Any) -> dict[str, dict[str, SubQueryResult]]:
            results: dict[str, SubQueryResult] = {}
            running: dict[Any, str] = {}
            waiting = plan.topological_order()
            while waiting or running:
                start_ready(results, running, waiting)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    results[running.pop(future)] = future.result()
            return {"results": results}

        eager.name = PLAN_GRAPH_NAME
        return eager

    # Each node reads its parents' results from the graph state and writes its own.

    def node(self, sq: SubQuery, state: _ExecState, config: RunnableConfig) -> dict:
        prepared = self._prepare(sq, state["results"], config)
        if isinstance(prepared, SubQueryResult):
            return {"results": {sq.id: prepared}}
        prompt, messages = prepared
        attempts: list[Attempt] = []
        started = time.time()
        for expert, cohort in self._candidates(sq):
            answer = self._attempt(
                attempts, expert, partial(self._call, expert, messages, sq, config, cohort)
            )
            if answer is not None:
                break
        return {"results": {sq.id: self._finish(sq, prompt, attempts, started, answer, config)}}

    async def anode(self, sq: SubQuery, state: _ExecState, config: RunnableConfig) -> dict:
        prepared = self._prepare(sq, state["results"], config)
        if isinstance(prepared, SubQueryResult):
            return {"results": {sq.id: prepared}}
        prompt, messages = prepared
        attempts: list[Attempt] = []
        started = time.time()
        for expert, cohort in self._candidates(sq):
            answer = await self._aattempt(
                attempts, expert, self._acall(expert, messages, sq, config, cohort)
            )
            if answer is not None:
                break
        return {"results": {sq.id: self._finish(sq, prompt, attempts, started, answer, config)}}

    def _attempt(self, attempts: list[Attempt], expert: str, call: Callable[[], Any]) -> str | None:
        t0 = time.perf_counter()
        try:
            with self.executor.load.track(expert):
                output = call()
        except GraphBubbleUp:
            raise
        except Exception as exc:
            output = exc
        return self._record(attempts, expert, t0, output)

    async def _aattempt(
        self, attempts: list[Attempt], expert: str, call: Awaitable[Any]
    ) -> str | None:
        t0 = time.perf_counter()
        try:
            with self.executor.load.track(expert):
                output = await call
        except GraphBubbleUp:
            raise
        except Exception as exc:
            output = exc
        return self._record(attempts, expert, t0, output)

    def _record(self, attempts: list[Attempt], expert: str, t0: float, outcome: Any) -> str | None:
        """Log one attempt (an expert's output, or the exception it raised); the answer,
        or None if it failed."""
        duration = time.perf_counter() - t0
        try:
            if isinstance(outcome, Exception):
                raise outcome
            answer = _answer_text(outcome)
        except Exception as exc:
            error = _describe(exc, self.policy.timeout)
            attempts.append(
                Attempt(
                    expert=expert, error=error, error_type=type(exc).__name__, duration=duration
                )
            )
            return None
        metadata = dict(getattr(outcome, "response_metadata", None) or {})
        attempts.append(Attempt(expert=expert, duration=duration, metadata=metadata))
        return answer

    async def _acall(
        self,
        expert: str,
        messages: list[BaseMessage],
        sq: SubQuery,
        config: RunnableConfig,
        cohort: BatchCohort | None,
    ) -> Any:
        llm = self.executor.experts[expert].llm
        with batch_cohort(cohort):
            # The task created here copies the context, cohort included.
            call = asyncio.ensure_future(llm.ainvoke(messages, _expert_config(config, sq, expert)))
        return await await_with_timeout(call, self.policy.timeout, f"expert {expert} on {sq.id}")

    def _call(
        self,
        expert: str,
        messages: list[BaseMessage],
        sq: SubQuery,
        config: RunnableConfig,
        cohort: BatchCohort | None,
    ) -> Any:
        llm = self.executor.experts[expert].llm
        call = partial(llm.invoke, messages, _expert_config(config, sq, expert))
        with batch_cohort(cohort):
            return call_with_timeout(call, self.policy.timeout, f"expert {expert} on {sq.id}")

    def _candidates(self, sq: SubQuery) -> list[tuple[str, BatchCohort | None]]:
        """The experts to try in turn, each with its batch cohort (first attempt only:
        retries never wait for others)."""
        assert sq.expert is not None  # checked before compiling
        order = [sq.expert] * (1 + self.policy.max_retries)
        fallback = self.policy.fallback_expert
        if fallback is not None and fallback != sq.expert:
            order.append(fallback)
        cohort = self.cohorts.get(sq.id)
        return [(expert, cohort if i == 0 else None) for i, expert in enumerate(order)]

    def _prepare(
        self, sq: SubQuery, results: Mapping[str, SubQueryResult], config: RunnableConfig
    ) -> SubQueryResult | tuple[str, list[BaseMessage]]:
        """The prompt and messages for ``sq``, or a skipped result if it cannot run."""
        parents = [results[d] for d in sq.depends_on]
        reason = None
        if self.aborted.is_set():
            reason = "not run: another sub-query failed and the failure policy is 'raise'"
        elif bad := [p.id for p in parents if p.status != "ok"]:
            reason = f"not run: depends on {', '.join(bad)}, which did not succeed"
        if reason is not None:
            result = SubQueryResult(
                id=sq.id,
                question=sq.question,
                depends_on=sq.depends_on,
                expert=sq.expert,
                status="skipped",
                error=reason,
            )
            emit(
                {"type": "subquery_error", "sub_query_id": sq.id, "error": reason},
                config,
                self.writer,
            )
            return result
        question = sq.render({p.id: p.answer or "" for p in parents})
        prompt = question
        if parents:
            context = "\n".join(f"- {p.question} -> {(p.answer or '').strip()}" for p in parents)
            prompt = self.executor.context_template.format(context=context, question=question)
        expert = self.executor.experts[sq.expert]  # type: ignore[index]
        messages: list[BaseMessage] = [HumanMessage(content=prompt)]
        if expert.system_prompt:
            messages.insert(0, SystemMessage(content=expert.system_prompt))
        emit(
            {"type": "subquery_start", "sub_query_id": sq.id, "expert": expert.name},
            config,
            self.writer,
        )
        return prompt, messages

    def _finish(
        self,
        sq: SubQuery,
        prompt: str,
        attempts: Sequence[Attempt],
        started: float,
        answer: str | None,
        config: RunnableConfig,
    ) -> SubQueryResult:
        ok = answer is not None
        result = SubQueryResult(
            id=sq.id,
            question=sq.question,
            depends_on=sq.depends_on,
            expert=attempts[-1].expert,
            prompt=prompt,
            answer=answer,
            status="ok" if ok else "failed",
            error=None if ok else "; ".join(f"{a.expert}: {a.error}" for a in attempts),
            attempts=list(attempts),
            started_at=started,
            ended_at=time.time(),
        )
        if ok:
            emit(
                {
                    "type": "subquery_answer",
                    "sub_query_id": sq.id,
                    "expert": result.expert or "",
                    "answer": answer or "",
                    "data": result,
                },
                config,
                self.writer,
            )
        else:
            if self.policy.on_failure == "raise":
                self.aborted.set()
            emit(
                {"type": "subquery_error", "sub_query_id": sq.id, "error": result.error or ""},
                config,
                self.writer,
            )
        return result


def _expert_config(config: RunnableConfig, sq: SubQuery, expert: str) -> RunnableConfig:
    return merge_configs(
        config,
        {
            "run_name": f"expert:{expert}",
            "tags": _tags(sq.id, expert),
            "metadata": {"complm_sub_query_id": sq.id, "complm_expert": expert},
        },
    )


def _answer_text(output: Any) -> str:
    """An expert's output as text; an empty answer counts as a failure."""
    text = output.text if isinstance(output, BaseMessage) else str(output)
    if not text.strip():
        raise ValueError("the expert returned an empty answer")
    return text.strip()


def _describe(error: BaseException, timeout: float | None) -> str:
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return f"timed out after {timeout:g} s"
    return f"{type(error).__name__}: {error}"


__all__ = [
    "Attempt",
    "ExecutionResult",
    "FailurePolicy",
    "QueryExecutor",
    "ScheduleMode",
    "SubQueryExecutionError",
    "SubQueryResult",
]
