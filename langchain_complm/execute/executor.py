"""Query Executor: runs a routed plan's sub-queries as LangGraph tasks.

Every sub-query is one LangGraph task, named by its id, so its result is a checkpointed
write of the graph run it belongs to: a run resumed on the same thread gets the finished
sub-queries' results back from the checkpoint and only runs the others. The tasks are
called in plan order, so a resumed run finds each finished one under the same task id; each
waits for the go-ahead of the :class:`~langchain_complm.execute._schedule.Schedule`
(superstep, eager or sequential, within ``max_concurrency``) before its attempts start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Generator, Mapping
from functools import partial
from typing import Any

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableSerializable
from langgraph.config import get_config
from langgraph.func import task
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from typing_extensions import TypedDict

from langchain_complm.batching import batch_group
from langchain_complm.concurrency import (
    ExpertLoad,
    Steps,
    afirst_done,
    arun_steps,
    first_done,
    run_steps,
)
from langchain_complm.errors import SubQueryExecutionError
from langchain_complm.events import current_writer
from langchain_complm.execute._attempts import PlanRun, attempts, run_async, run_sync
from langchain_complm.execute._schedule import Schedule, Start
from langchain_complm.execute.results import (
    Attempt,
    ExecutionResult,
    FailurePolicy,
    ScheduleMode,
    SubQueryResult,
)
from langchain_complm.experts import Expert, check_experts
from langchain_complm.plan import Plan
from langchain_complm.prompts import SUBQUERY_WITH_CONTEXT

MAX_CONCURRENCY = "max_concurrency"
"""``config["configurable"]`` key: at most this many experts run at once in this run
(:func:`langgraph_config` moves a caller's ``config["max_concurrency"]`` here)."""

FAILURE_POLICY = "failure_policy"
"""``config["configurable"]`` key: a :class:`FailurePolicy` (or its fields) for this run."""

THREAD_POOL_SIZE = 1024
"""Upper bound of LangGraph's thread pool for the package's own graphs. A sync run holds one
thread per sub-query (each waits for its go-ahead), plus the node that schedules them and
LangGraph's stream waiter; threads are only created when needed, so the bound costs nothing,
and a caller's ``max_concurrency`` (which limits experts, not threads) can never starve the
node that releases them."""


def langgraph_config(config: RunnableConfig | None) -> RunnableConfig:
    """``config`` for running one of the package's graphs: a ``max_concurrency`` the caller
    set limits how many experts run at once (as ``configurable["max_concurrency"]``, unless
    one is there), and LangGraph's own thread pool is sized by :data:`THREAD_POOL_SIZE`."""
    out: dict[str, Any] = dict(config or {})
    limit = out.pop("max_concurrency", None)
    configurable = dict(out.get("configurable") or {})
    if limit is not None:
        configurable.setdefault(MAX_CONCURRENCY, limit)
    out["configurable"] = configurable
    out["max_concurrency"] = THREAD_POOL_SIZE
    return out  # type: ignore[return-value]


class _ExecutorState(TypedDict, total=False):
    plan: Plan
    result: ExecutionResult


class QueryExecutor(RunnableSerializable[Plan, ExecutionResult]):
    """Runs a routed :class:`Plan`: each sub-query asks its expert, independent ones in
    parallel, dependents after their parents (see :data:`ScheduleMode`).

    Each sub-query's expert gets the sub-query with its parents' answers filled into ``{id}``
    placeholders and listed as context. ``max_concurrency`` caps how many experts run at
    once (a run's ``config["max_concurrency"]`` too); a per-run ``FailurePolicy`` can be given
    as ``config={"configurable": {"failure_policy": {...}}}``.

    ``invoke``/``ainvoke`` run the plan in a LangGraph graph of their own (a subgraph, with
    the caller's checkpointer, when called from a graph's node); :meth:`run`/:meth:`arun`
    run it inside the calling graph's node, which is how the Comp-LLM pipeline runs it.
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

    _graph: Pregel | None = PrivateAttr(default=None)

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

    # --- running on its own -----------------------------------------------------------------

    def invoke(
        self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ExecutionResult:
        state = self._own_graph().invoke({"plan": input}, langgraph_config(config), **kwargs)
        return state["result"]  # type: ignore[no-any-return]

    async def ainvoke(
        self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any
    ) -> ExecutionResult:
        graph = self._own_graph()
        state = await graph.ainvoke({"plan": input}, langgraph_config(config), **kwargs)
        return state["result"]  # type: ignore[no-any-return]

    def _own_graph(self) -> Pregel:
        if self._graph is None:
            builder = StateGraph(_ExecutorState)
            builder.add_node(
                "execute",
                RunnableLambda(
                    lambda s, config: {"result": self._execute(s["plan"], config)},
                    afunc=self._anode,
                    name="execute",
                ),
            )
            builder.set_entry_point("execute")
            self._graph = builder.compile(name=self.name)
        return self._graph

    async def _anode(self, state: _ExecutorState, config: RunnableConfig) -> _ExecutorState:
        return {"result": await self._aexecute(state["plan"], config)}

    # --- running inside a graph's node ------------------------------------------------------

    def run(self, plan: Plan, config: RunnableConfig) -> ExecutionResult:
        """Run ``plan`` inside the LangGraph node that calls this (``config`` is the node's):
        its sub-queries become tasks of that node, checkpointed with it."""
        return self._call_with_config(self._run, plan, config, run_type="chain")

    async def arun(self, plan: Plan, config: RunnableConfig) -> ExecutionResult:
        """:meth:`run` for async nodes: the sub-queries are asyncio tasks, no thread is held."""
        return await self._acall_with_config(self._arun, plan, config, run_type="chain")

    def _run(
        self, plan: Plan, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> ExecutionResult:
        return self._execute(plan, config)

    async def _arun(self, plan: Plan, run_manager: Any, config: RunnableConfig) -> ExecutionResult:
        return await self._aexecute(plan, config)

    # --- the plan run -----------------------------------------------------------------------

    def _execute(self, plan: Plan, config: RunnableConfig) -> ExecutionResult:
        steps = self._plan_run(plan, config, _sync_sub_query, concurrent.futures.Future)
        return run_steps(steps, first_done)

    async def _aexecute(self, plan: Plan, config: RunnableConfig) -> ExecutionResult:
        new_gate = asyncio.get_running_loop().create_future
        return await arun_steps(
            self._plan_run(plan, config, _async_sub_query, new_gate), afirst_done
        )

    def _plan_run(
        self, plan: Plan, config: RunnableConfig, body: Any, new_gate: Callable[[], Any]
    ) -> Steps[set[Any], ExecutionResult]:
        """The plan run, for both drivers: calls the tasks, then yields the futures still
        running and is sent those that finished (see :func:`_drive`)."""
        started = time.time()
        schedule, run = self._prepare(plan, config)
        gates = {sq_id: new_gate() for sq_id in schedule.order}
        futures = self._call_tasks(schedule, partial(body, run), gates)
        try:
            yield from _drive(schedule, gates, futures, run.policy)
        finally:
            # No task may be left waiting for a go-ahead when the run stops early (a gate
            # opened, or of a sub-query resumed from a checkpoint, is not affected).
            for gate in gates.values():
                gate.cancel()
        return self._collect(plan, schedule, started, run.policy)

    def _prepare(self, plan: Plan, config: RunnableConfig) -> tuple[Schedule, PlanRun]:
        plan = self._check_plan(plan)
        configurable = config.get("configurable") or {}
        policy = self._policy(configurable)
        limits = [x for x in (self.max_concurrency, configurable.get(MAX_CONCURRENCY)) if x]
        keys = {sq.id: batch_group(self.experts[sq.expert].llm) for sq in plan.sub_queries}  # type: ignore[index]
        schedule = Schedule(plan, self.mode, min(limits, default=None), keys)
        run = PlanRun(
            experts=self.experts,
            policy=policy,
            context_template=self.context_template,
            writer=current_writer(),
            load=self.load,
        )
        return schedule, run

    @staticmethod
    def _call_tasks(schedule: Schedule, body: Any, gates: Mapping[str, Any]) -> dict[str, Any]:
        # In plan order, every time: a task's id depends on when it is called, and a resumed
        # run must find each finished sub-query under the id it was saved with.
        by_id = schedule.by_id
        return {
            sq_id: task(name=sq_id)(partial(body, by_id[sq_id], gates[sq_id]))()  # type: ignore[call-overload]
            for sq_id in schedule.order
        }

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

    def _policy(self, configurable: Mapping[str, Any]) -> FailurePolicy:
        override = configurable.get(FAILURE_POLICY)
        if override is None:
            return self.failure_policy
        return self._checked(FailurePolicy.model_validate(override))

    def _collect(
        self, plan: Plan, schedule: Schedule, started: float, policy: FailurePolicy
    ) -> ExecutionResult:
        result = ExecutionResult(
            results={sq.id: schedule.results[sq.id] for sq in plan.sub_queries},
            started_at=started,
            ended_at=time.time(),
        )
        failed = [k for k, r in result.results.items() if r.status == "failed"]
        if failed and policy.on_failure == "raise":
            details = "; ".join(f"{k}: {result.results[k].error}" for k in failed)
            raise SubQueryExecutionError(f"sub-queries failed: {details}", result)
        return result


class _NotDone(Exception):
    """A sub-query that did not succeed under ``on_failure="raise"``: raised from its task so
    that LangGraph does not keep the result, and a resumed run tries it again."""

    def __init__(self, result: SubQueryResult) -> None:
        super().__init__(result.error)
        self.result = result


def _keep(result: SubQueryResult, policy: FailurePolicy) -> SubQueryResult:
    if result.status != "ok" and policy.on_failure == "raise":
        raise _NotDone(result)
    return result


def _sync_sub_query(
    run: PlanRun, sq: Any, gate: concurrent.futures.Future[Start]
) -> SubQueryResult:
    start = gate.result()
    return _keep(run_sync(attempts(run, sq, start, get_config())), run.policy)


async def _async_sub_query(run: PlanRun, sq: Any, gate: asyncio.Future[Start]) -> SubQueryResult:
    start = await gate
    return _keep(await run_async(attempts(run, sq, start, get_config())), run.policy)


def _drive(
    schedule: Schedule,
    gates: Mapping[str, Any],
    futures: Mapping[str, Any],
    policy: FailurePolicy,
) -> Generator[set[Any], set[Any], None]:
    """The scheduling loop, for both drivers: opens the gates of the sub-queries the schedule
    starts, yields the futures still running, and is sent those that finished."""
    by_future = {future: sq_id for sq_id, future in futures.items()}
    done = {future for future in futures.values() if future.done()}  # resumed from a checkpoint
    while True:
        for future in done:
            result = _result_of(future)
            abort = result.status == "failed" and policy.on_failure == "raise"
            schedule.finish(by_future[future], result, abort=abort)
        if schedule.complete:
            return
        for sq_id, start in schedule.starts():
            gates[sq_id].set_result(start)
        done = yield {futures[sq_id] for sq_id in schedule.running}


def _result_of(future: Any) -> SubQueryResult:
    try:
        return future.result()  # type: ignore[no-any-return]
    except _NotDone as not_done:
        return not_done.result


__all__ = [
    "FAILURE_POLICY",
    "MAX_CONCURRENCY",
    "Attempt",
    "ExecutionResult",
    "FailurePolicy",
    "QueryExecutor",
    "ScheduleMode",
    "SubQueryExecutionError",
    "SubQueryResult",
    "langgraph_config",
]
