"""Embedding router: assigns each sub-query to the expert whose profile is most similar."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from langchain_complm.events import emit
from langchain_complm.experts import ExpertProfile
from langchain_complm.plan import Plan, RoutingDecision


class EmbeddingRouter(RunnableSerializable[Plan, Plan]):
    """Routes each sub-query to the expert with the most similar profile (cosine similarity).

    An expert's profile vector is the normalized mean of the embeddings of its description
    and example questions (examples route better than a description alone). Profiles are
    embedded once, on first use; all sub-queries of a plan are embedded in one batched call.
    A sub-query whose best score is under the threshold (per-expert, else global) goes to
    ``fallback_expert`` instead.

    Invoked with a :class:`Plan`, returns the plan with a :class:`RoutingDecision` (expert,
    score, the whole score vector) on every sub-query; :meth:`route` routes raw questions.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    experts: Sequence[ExpertProfile]
    """Expert profiles (``Expert`` objects work too)."""
    embeddings: Embeddings
    """Any LangChain embeddings model."""
    threshold: float | None = None
    """Minimum similarity for every expert (unless overridden in ``thresholds``)."""
    thresholds: Mapping[str, float] = Field(default_factory=dict)
    """Per-expert minimum similarity."""
    fallback_expert: str | None = None
    """Expert that receives sub-queries under the threshold."""
    name: str | None = "EmbeddingRouter"

    _profile_matrix: np.ndarray | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _check(self) -> EmbeddingRouter:
        names = [e.name for e in self.experts]
        if not names:
            raise ValueError("EmbeddingRouter needs at least one expert")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate expert names: {', '.join(duplicates)}")
        if self.fallback_expert is not None and self.fallback_expert not in names:
            raise ValueError(
                f"fallback expert {self.fallback_expert!r} is not one of the experts "
                f"({', '.join(names)})"
            )
        unknown = sorted(set(self.thresholds) - set(names))
        if unknown:
            raise ValueError(f"thresholds name unknown experts: {', '.join(unknown)}")
        if (self.threshold is not None or self.thresholds) and self.fallback_expert is None:
            raise ValueError("a routing threshold needs a fallback_expert to route to")
        return self

    @property
    def expert_names(self) -> list[str]:
        """Expert names in profile-matrix order."""
        return [e.name for e in self.experts]

    def _profiles(self) -> np.ndarray:
        # Double-checked so concurrent first calls embed the profiles only once.
        if self._profile_matrix is None:
            with self._lock:
                if self._profile_matrix is None:
                    texts = [e.profile_texts() for e in self.experts]
                    flat = [t for group in texts for t in group]
                    vectors = _normalize(np.asarray(self.embeddings.embed_documents(flat)))
                    rows, start = [], 0
                    for group in texts:
                        rows.append(vectors[start : start + len(group)].mean(axis=0))
                        start += len(group)
                    self._profile_matrix = _normalize(np.stack(rows))
        return self._profile_matrix

    def route(
        self, questions: Sequence[str], ids: Sequence[str] | None = None
    ) -> list[RoutingDecision]:
        """Route raw questions; ``ids`` label the decisions (default: positions)."""
        if not questions:
            return []
        ids = list(ids) if ids is not None else [str(i) for i in range(len(questions))]
        queries = _normalize(np.asarray(self.embeddings.embed_documents(list(questions))))
        similarity = queries @ self._profiles().T
        names = self.expert_names
        decisions = []
        for sq_id, question, row in zip(ids, questions, similarity, strict=True):
            best = int(np.argmax(row))
            expert, score = names[best], float(row[best])
            minimum = self.thresholds.get(expert, self.threshold)
            fallback = minimum is not None and score < minimum
            if fallback:
                assert self.fallback_expert is not None  # enforced by _check
                expert = self.fallback_expert
                score = float(row[names.index(expert)])
            decisions.append(
                RoutingDecision(
                    sub_query_id=sq_id,
                    question=question,
                    expert=expert,
                    score=score,
                    scores={n: float(s) for n, s in zip(names, row, strict=True)},
                    fallback=fallback,
                )
            )
        return decisions

    def route_plan(self, plan: Plan) -> Plan:
        """Route every sub-query of ``plan`` in one batch; returns the annotated plan."""
        decisions = self.route(
            [sq.question for sq in plan.sub_queries], [sq.id for sq in plan.sub_queries]
        )
        return plan.model_copy(
            update={
                "sub_queries": tuple(
                    sq.model_copy(update={"route": decision})
                    for sq, decision in zip(plan.sub_queries, decisions, strict=True)
                )
            }
        )

    def invoke(self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any) -> Plan:
        return self._call_with_config(self._invoke, input, config, run_type="chain", **kwargs)

    def _invoke(
        self, plan: Plan, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Plan:
        if not isinstance(plan, Plan):
            raise TypeError(f"EmbeddingRouter expects a Plan, got {type(plan).__name__}")
        routed = self.route_plan(plan)
        for decision in (sq.route for sq in routed.sub_queries if sq.route):
            emit(
                {
                    "type": "routed",
                    "sub_query_id": decision.sub_query_id,
                    "expert": decision.expert,
                    "score": decision.score,
                    "data": decision,
                },
                config,
            )
        return routed


def _normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


__all__ = ["EmbeddingRouter", "RoutingDecision"]
