"""A deterministic Sub-query Generator: splits compound queries at their explicit structure.

Small chat models cannot write a JSON decomposition from a few-shot prompt; the trained
generator (:mod:`langchain_complm.decompose.trained`) can, at the cost of a model call.
:class:`StructuralSubQueryGenerator` is the instant, model-free alternative
(``decomposer: structural``): it decomposes compound questions whose parts are marked by their
structure (enumerations, several questions in a row, questions joined by ", and") into
independent sub-queries, and answers anything else whole. It never calls a model.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import Field

from langchain_complm.decompose._split import split_query
from langchain_complm.decompose.repair import repair_plan
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, Plan, SubQuery


class StructuralSubQueryGenerator(RunnableSerializable[str, Plan]):
    """Decomposes a compound query into independent sub-queries at its explicit structure.

    Splits enumerations ("(1) ... (2) ...", "1. ... 2. ...", "a) ... b) ...", "First, ...
    Second, ... Finally, ..."), several questions in a row, and questions joined by ", and",
    "; and", " and also " or " Also, " when both sides are questions. A preamble about the
    request ("I have two questions.") is dropped; multiple-choice options stay with their
    question. Anything else (a single question, or parts that refer back to each other with a
    pronoun) is returned as :meth:`Plan.single`, without a ``fallback_reason``: answering a
    single question whole is a valid result, not a failure.

    Same interface as :class:`~langchain_complm.decompose.SubQueryGenerator`, with no model.

    Example:
        .. code-block:: python

            plan = StructuralSubQueryGenerator().invoke("What is 2+2, and who wrote Hamlet?")
            [sq.question for sq in plan.sub_queries]
            # ['What is 2+2?', 'Who wrote Hamlet?']
    """

    max_sub_queries: int = Field(default=DEFAULT_MAX_SUB_QUERIES, ge=1)
    """Queries with more parts are answered whole."""
    repair: bool = True
    """Split parts that refer back to earlier ones too, and let
    :func:`~langchain_complm.decompose.repair.repair_plan` link them; without repair such
    queries are answered whole."""
    name: str | None = "StructuralSubQueryGenerator"

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> Plan:
        return self._call_with_config(self._decompose, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Plan:
        return self.invoke(input, config, **kwargs)

    def _decompose(
        self, query: str, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Plan:
        parts = split_query(query, self.max_sub_queries, allow_references=self.repair)
        if not parts:
            return Plan.single(query)
        plan = Plan(
            query=query,
            sub_queries=tuple(
                SubQuery(id=f"q{i}", question=part) for i, part in enumerate(parts, start=1)
            ),
        )
        if self.repair:
            # Parts that refer back ("Who wrote Hamlet? When was he born?") get their
            # dependency here; a plan repair cannot make whole falls back to the query.
            plan = repair_plan(plan, self.max_sub_queries)
            if plan.is_fallback:
                return Plan.single(query)
        return plan.validate_dag(self.max_sub_queries)


__all__ = ["StructuralSubQueryGenerator", "split_query"]
