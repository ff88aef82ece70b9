"""Stage 3, the Query Executor: a routed plan becomes a LangGraph graph whose nodes ask the
experts, in parallel wherever the dependencies allow."""

from langchain_complm.errors import SubQueryExecutionError
from langchain_complm.execute.executor import (
    Attempt,
    ExecutionResult,
    FailurePolicy,
    QueryExecutor,
    ScheduleMode,
    SubQueryResult,
)

__all__ = [
    "Attempt",
    "ExecutionResult",
    "FailurePolicy",
    "QueryExecutor",
    "ScheduleMode",
    "SubQueryExecutionError",
    "SubQueryResult",
]
