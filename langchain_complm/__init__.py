"""Comp-LLM for LangChain and LangGraph.

Answer a query with several small expert LLMs: a Sub-query Generator decomposes it into a
dependency graph of sub-queries, an embedding router assigns each to the most similar expert,
a compiled LangGraph ``StateGraph`` runs them in parallel where dependencies allow, and a
Response Aggregator writes the final answer.

This namespace holds what building and running one takes; each stage's own classes live in
its package (:mod:`~langchain_complm.decompose`, :mod:`~langchain_complm.route`,
:mod:`~langchain_complm.execute`, :mod:`~langchain_complm.aggregate`), the model backends in
:mod:`~langchain_complm.models`, config files in :mod:`~langchain_complm.config` and every error
in :mod:`~langchain_complm.errors`.
"""

from langchain_complm.chat_models import ChatCompLLM
from langchain_complm.config import CompLLMConfig, build_comp_llm, load_config
from langchain_complm.errors import CompLLMError, PlanValidationError
from langchain_complm.events import ProgressEvent
from langchain_complm.execute import FailurePolicy, SubQueryResult
from langchain_complm.experts import Expert, ExpertProfile
from langchain_complm.pipeline import CompLLMOutput, create_comp_llm
from langchain_complm.plan import Plan, RoutingDecision, SubQuery

__all__ = [
    "ChatCompLLM",
    "CompLLMConfig",
    "CompLLMError",
    "CompLLMOutput",
    "Expert",
    "ExpertProfile",
    "FailurePolicy",
    "Plan",
    "PlanValidationError",
    "ProgressEvent",
    "RoutingDecision",
    "SubQuery",
    "SubQueryResult",
    "build_comp_llm",
    "create_comp_llm",
    "load_config",
]
