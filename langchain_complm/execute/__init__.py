"""Stage 3, the Query Executor: each sub-query of a routed plan is a LangGraph task that asks
its expert, in parallel wherever the dependencies allow.

Three separate units: :mod:`~langchain_complm.execute._schedule` decides which sub-queries
start when (superstep, eager, sequential, within ``max_concurrency``);
:mod:`~langchain_complm.execute._attempts` is one sub-query's attempt loop (retries, fallback,
timeout, per-attempt records), written once for sync and async; :mod:`.executor` turns them
into LangGraph tasks; :class:`GrowingPlanRun` runs a plan whose sub-queries arrive while it
runs (plan streaming).
"""

from langchain_complm.errors import SubQueryExecutionError
from langchain_complm.execute.executor import (
    DROPPED,
    Attempt,
    ExecutionResult,
    FailurePolicy,
    GrowingPlanRun,
    QueryExecutor,
    ScheduleMode,
    SubQueryResult,
)

__all__ = [
    "DROPPED",
    "Attempt",
    "ExecutionResult",
    "FailurePolicy",
    "GrowingPlanRun",
    "QueryExecutor",
    "ScheduleMode",
    "SubQueryExecutionError",
    "SubQueryResult",
]
