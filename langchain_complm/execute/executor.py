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
from langchain_complm.execute._attempts import (
    PlanRun,
    attempts,
    prompt_of,
    run_async,
    run_sync,
)
from langchain_complm.execute._schedule import Schedule, Start
from langchain_complm.execute.results import (
    Attempt,
    ExecutionResult,
    FailurePolicy,
    ScheduleMode,
    SubQueryResult,
)
from langchain_complm.experts import Expert, check_experts, check_known
from langchain_complm.plan import Plan, SubQuery
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
        check_known("fallback_expert", [policy.fallback_expert], self.experts)
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

    def grow(self, config: RunnableConfig) -> GrowingPlanRun:
        """A run of a plan that grows while it runs (plan streaming), inside the LangGraph
        node that calls this (``config`` is the node's), for a sync node."""
        return GrowingPlanRun(self, config, _sync_sub_query, concurrent.futures.Future)

    async def agrow(self, config: RunnableConfig) -> GrowingPlanRun:
        """:meth:`grow` for async nodes."""
        new_future = asyncio.get_running_loop().create_future
        return GrowingPlanRun(self, config, _async_sub_query, new_future)

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
        limit, run = self._settings(config)
        keys = {sq.id: self._batch_key(sq) for sq in plan.sub_queries}
        return Schedule(plan, self.mode, limit, keys), run

    def _settings(self, config: RunnableConfig) -> tuple[int | None, PlanRun]:
        """A run's limit on experts at once, and what its sub-queries share."""
        configurable = config.get("configurable") or {}
        limits = [x for x in (self.max_concurrency, configurable.get(MAX_CONCURRENCY)) if x]
        run = PlanRun(
            experts=self.experts,
            policy=self._policy(configurable),
            context_template=self.context_template,
            writer=current_writer(),
            load=self.load,
        )
        return min(limits, default=None), run

    def _batch_key(self, sq: SubQuery) -> Any:
        return batch_group(self.experts[sq.expert].llm)  # type: ignore[index]

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
            check_known(f"sub-query {sq.id!r}", [sq.expert], self.experts)
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


DROPPED = "not run: the final plan does not have this sub-query as it was streamed"
"""Why a sub-query that was added to a growing plan, and then left out or changed by its
final plan, was skipped."""


class GrowingPlanRun:
    """A plan run whose routed sub-queries are given while it runs (plan streaming).

    Made by :meth:`QueryExecutor.grow` (sync) or :meth:`QueryExecutor.agrow` (async) in the
    LangGraph node that runs the plan: every sub-query is a task of that node, as under
    :meth:`QueryExecutor.run`. :meth:`add` adds a routed sub-query whose parents are in the
    plan, and calls its task at once: tasks are called in the order sub-queries are added,
    so a resumed run that adds them in the same order finds the finished ones in its
    checkpoint. :meth:`end` gives the final plan. The caller waits for any of the futures
    :meth:`advance` returns (and its own) and reports those done to :meth:`advance`, until
    :attr:`complete`; then :meth:`result`. ``eager`` and ``sequential`` mode only.

    The final plan decides. A sub-query added before keeps its task and result only when the
    final plan has it unchanged (question, dependencies, expert) with all its parents kept;
    the others are dropped (a task not started is skipped with :data:`DROPPED`, a running one
    finishes and its answer is not used) and the final plan's version runs. Every result is
    checked against the prompt and expert its sub-query has in this run: a task whose result
    comes from an earlier run's checkpoint, for a plan that asked something else there, runs
    again as a new task.
    """

    def __init__(
        self,
        executor: QueryExecutor,
        config: RunnableConfig,
        body: Callable[..., Any],
        new_future: Callable[[], Any],
    ) -> None:
        limit, self._run = executor._settings(config)
        self.schedule = Schedule(None, executor.mode, limit)
        self.new_future = new_future
        """Makes a future of the kind the run waits on (asyncio's for an async node)."""
        self.asynchronous = body is _async_sub_query
        """Whether the run is in an async node (its tasks are coroutines)."""
        self.started = time.time()
        self._executor = executor
        self._body = body
        self._gates: dict[str, Any] = {}
        self._futures: dict[str, Any] = {}
        self._ids: dict[Any, str] = {}  # task future -> the sub-query it runs
        self._starts: dict[str, Start] = {}  # the go-ahead each started sub-query got
        self._stale: set[Any] = set()  # tasks of dropped sub-queries, still running
        self._plan: Plan | None = None

    @property
    def complete(self) -> bool:
        """Whether the final plan was given and every sub-query of it has a result."""
        return self.schedule.complete and not self._stale

    def add(self, sq: SubQuery) -> None:
        """Add the routed sub-query ``sq`` (its parents were added) and call its task."""
        check_known(f"sub-query {sq.id!r}", [sq.expert], self._executor.experts)
        self.schedule.add(sq, self._executor._batch_key(sq))
        self._call(sq)

    def _call(self, sq: SubQuery) -> None:
        gate = self.new_future()
        future = task(name=sq.id)(partial(self._body, self._run, sq, gate))()  # type: ignore[call-overload]
        self._ids.pop(self._futures.get(sq.id), None)
        self._gates[sq.id], self._futures[sq.id], self._ids[future] = gate, future, sq.id

    def keep_routes(self, plan: Plan) -> Plan:
        """``plan`` (the final plan, not routed) with the routes of the sub-queries that
        keep the version added before: only the others need routing."""
        kept, added = self._kept(plan), self.schedule.by_id
        return plan.model_copy(
            update={
                "sub_queries": tuple(
                    added[sq.id] if sq.id in kept else sq for sq in plan.sub_queries
                )
            }
        )

    def end(self, plan: Plan) -> None:
        """The final, routed plan: drop what it changed, add what is new, close the plan."""
        plan = self._executor._check_plan(plan)
        kept = self._kept(plan)
        for sq_id in reversed(self.schedule.order):  # dependents before their parents
            if sq_id not in kept:
                self._drop(sq_id)
        by_id = plan.by_id
        for sq_id in (sq_id for level in plan.levels() for sq_id in level):
            if sq_id not in kept:
                self.add(by_id[sq_id])
        self.schedule.close()
        self._plan = plan

    def _kept(self, plan: Plan) -> set[str]:
        kept: set[str] = set()
        final = plan.by_id
        for sq_id in self.schedule.order:  # parents first
            old, new = self.schedule.by_id[sq_id], final.get(sq_id)
            if (
                new is not None
                and (new.question, new.depends_on) == (old.question, old.depends_on)
                and (new.route is None or new.expert == old.expert)
                and all(d in kept for d in old.depends_on)
            ):
                kept.add(sq_id)
        return kept

    def _drop(self, sq_id: str) -> None:
        gate, future = self._gates.pop(sq_id), self._futures.pop(sq_id)
        del self._ids[future]
        self._starts.pop(sq_id, None)
        if not gate.done():
            gate.set_result(Start(skip_reason=DROPPED))
        if not future.done():
            self._stale.add(future)
        self.schedule.drop(sq_id)

    def advance(self, done: set[Any]) -> set[Any]:
        """Record the tasks in ``done``, start what may start; the futures still running."""
        for future in done:
            self._stale.discard(future)
            sq_id = self._ids.get(future)
            if sq_id is None:
                continue
            result, start = _result_of(future), self._starts[sq_id]
            if not self._answers(sq_id, start, result):
                # A result the checkpoint held for this task, from a plan that asked
                # something else: run the sub-query again, as a new task.
                self._call(self.schedule.by_id[sq_id])
                self._gates[sq_id].set_result(start)
                continue
            abort = result.status == "failed" and self._run.policy.on_failure == "raise"
            self.schedule.finish(sq_id, result, abort=abort)
        for sq_id, start in self.schedule.starts():
            self._starts[sq_id] = start
            self._gates[sq_id].set_result(start)
        return {self._futures[sq_id] for sq_id in self.schedule.running} | self._stale

    def _answers(self, sq_id: str, start: Start, result: SubQueryResult) -> bool:
        """Whether ``result`` is what ``sq_id``'s attempts give for ``start``: always so for
        a task that ran, not for one whose result is from an earlier run's checkpoint."""
        sq = self.schedule.by_id[sq_id]
        if (result.id, result.question, result.depends_on) != (sq.id, sq.question, sq.depends_on):
            return False
        parents = [] if start.skip_reason else [start.parents[d] for d in sq.depends_on]
        if result.status == "skipped":
            return bool(start.skip_reason) or any(p.status != "ok" for p in parents)
        return (
            bool(result.attempts)
            and result.attempts[0].expert == sq.expert
            and result.prompt == prompt_of(self._run, sq, parents)
        )

    def result(self) -> ExecutionResult:
        """Every sub-query's result, in the final plan's order (raises as
        :meth:`QueryExecutor.run` does under ``on_failure="raise"``)."""
        assert self._plan is not None and self.complete
        return self._executor._collect(self._plan, self.schedule, self.started, self._run.policy)

    def close(self) -> None:
        """No task may be left waiting for a go-ahead when the run stops, early or not."""
        for gate in self._gates.values():
            gate.cancel()


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
    "DROPPED",
    "FAILURE_POLICY",
    "MAX_CONCURRENCY",
    "Attempt",
    "ExecutionResult",
    "FailurePolicy",
    "GrowingPlanRun",
    "QueryExecutor",
    "ScheduleMode",
    "SubQueryExecutionError",
    "SubQueryResult",
    "langgraph_config",
]
