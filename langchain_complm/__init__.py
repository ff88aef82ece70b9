"""Comp-LLM for LangChain and LangGraph.

Answer a query with several small expert LLMs: a Sub-query Generator decomposes it into a
dependency graph of sub-queries, an embedding router assigns each to the most similar expert,
a compiled LangGraph ``StateGraph`` runs them in parallel where dependencies allow, and a
Response Aggregator writes the final answer.
"""

from langchain_complm.aggregate import AggregationInput, ResponseAggregator
from langchain_complm.chat_models import ChatCompLLM
from langchain_complm.concurrency import (
    ConcurrencyLimiter,
    limit_concurrency,
    set_device_concurrency,
)
from langchain_complm.config import (
    CompLLMConfig,
    EmbeddingsSpec,
    ExecutionConfig,
    ExpertSpec,
    ModelSpec,
    RoutingConfig,
    build_comp_llm,
    build_planner,
    default_config,
    load_config,
    load_default_experts,
)
from langchain_complm.decompose.generator import SubQueryGenerator, parse_plan
from langchain_complm.decompose.structural import StructuralSubQueryGenerator
from langchain_complm.errors import (
    ConfigError,
    MemoryBudgetError,
    ModelNotFoundError,
    PlanValidationError,
    SubQueryExecutionError,
)
from langchain_complm.events import PROGRESS_EVENT, ProgressEvent
from langchain_complm.execute.executor import (
    Attempt,
    ExecutionResult,
    FailurePolicy,
    QueryExecutor,
    SubQueryResult,
)
from langchain_complm.experts import Expert, ExpertProfile
from langchain_complm.models.pool import ModelPool
from langchain_complm.pipeline import CompLLMOutput, coerce_query, create_comp_llm
from langchain_complm.plan import Plan, RoutingDecision, SubQuery
from langchain_complm.route.router import EmbeddingRouter

__all__ = [
    "PROGRESS_EVENT",
    "AggregationInput",
    "Attempt",
    "ChatCompLLM",
    "CompLLMConfig",
    "CompLLMOutput",
    "ConcurrencyLimiter",
    "ConfigError",
    "EmbeddingRouter",
    "EmbeddingsSpec",
    "ExecutionConfig",
    "ExecutionResult",
    "Expert",
    "ExpertProfile",
    "ExpertSpec",
    "FailurePolicy",
    "MemoryBudgetError",
    "ModelNotFoundError",
    "ModelPool",
    "ModelSpec",
    "Plan",
    "PlanValidationError",
    "ProgressEvent",
    "QueryExecutor",
    "ResponseAggregator",
    "RoutingConfig",
    "RoutingDecision",
    "StructuralSubQueryGenerator",
    "SubQuery",
    "SubQueryExecutionError",
    "SubQueryGenerator",
    "SubQueryResult",
    "build_comp_llm",
    "build_planner",
    "coerce_query",
    "create_comp_llm",
    "default_config",
    "limit_concurrency",
    "load_config",
    "load_default_experts",
    "parse_plan",
    "set_device_concurrency",
]
