"""Embedding routers: each sub-query goes to the route (expert, or category of experts) whose
labelled texts it is most similar to, by a :mod:`~langchain_complm.route.strategies`
strategy.

:class:`BaseRouter` holds what every router shares: the embeddings, the strategy, fitting on
labelled queries, threshold calibration, evaluation, and the ``Plan -> Plan`` runnable.
:class:`EmbeddingRouter` routes in one step, to experts;
:class:`~langchain_complm.route.two_step.TwoStepRouter` routes to categories, then picks an
expert in the category.

Route profiles (descriptions and examples) and labelled training examples are embedded with
``embed_documents``: they are the collection a query is compared with. Sub-queries are
embedded with ``embed_query``, one call per distinct question, so asymmetric embedding
models (query and passage prompts) are used as they were trained.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Self

from langchain_complm.concurrency import ExpertLoad
from langchain_complm.events import emit
from langchain_complm.experts import ExpertProfile, RouteProfile, check_known, check_unique
from langchain_complm.plan import Plan, RoutingDecision
from langchain_complm.route.calibration import (
    RoutingEvaluation,
    calibrate_thresholds,
    summarize,
)
from langchain_complm.route.strategies import CentroidStrategy, RoutingStrategy, make_strategy

GOLD = "gold"
"""The ``strategy`` of decisions made by :meth:`BaseRouter.route_gold`."""


class BaseRouter(RunnableSerializable[Plan, Plan], ABC):
    """A router over labelled routes: scores sub-queries with ``strategy``, then decides.

    The strategy is fitted on the routes' profile texts the first time it is needed, or on
    those plus labelled queries by :meth:`fit`. Invoked with a :class:`Plan`, a router
    returns the plan with a :class:`RoutingDecision` on every sub-query (and emits a
    ``routed`` progress event per sub-query); :meth:`route` routes raw questions.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    experts: Sequence[ExpertProfile]
    """Every expert a decision can name (``Expert`` objects work too)."""
    embeddings: Embeddings
    """Any LangChain embeddings model."""
    strategy: RoutingStrategy = Field(default_factory=CentroidStrategy)
    """How sub-queries are scored: a strategy, or its kind (``"centroid"``, ``"knn"``,
    ``"head"``). A given instance is copied, so fitting never changes the caller's."""
    threshold: float | None = None
    """Minimum score for every route without a threshold of its own."""
    fallback_expert: str | None = None
    """Expert that receives sub-queries under their threshold (in two steps: the
    generalist)."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _load: ExpertLoad = PrivateAttr(default_factory=ExpertLoad)

    @field_validator("strategy", mode="before")
    @classmethod
    def _make_strategy(cls, value: Any) -> RoutingStrategy:
        return make_strategy(value)

    @model_validator(mode="after")
    def _check_experts(self) -> Self:
        names = self.expert_names
        if not names:
            raise ValueError(f"{type(self).__name__} needs at least one expert")
        check_unique("expert", names)
        check_known("fallback_expert", [self.fallback_expert], names)
        if self._has_threshold() and self.fallback_expert is None:
            raise ValueError("a routing threshold needs a fallback_expert to route to")
        return self

    def _has_threshold(self) -> bool:
        return self.threshold is not None or any(r.threshold is not None for r in self.routes)

    # --- what a router routes to (defined by subclasses) --------------------------------

    @property
    @abstractmethod
    def routes(self) -> Sequence[RouteProfile]:
        """The labels the strategy scores (experts, or categories), in score order."""

    @property
    def expert_names(self) -> list[str]:
        """Every expert a decision can name."""
        return [e.name for e in self.experts]

    @property
    @abstractmethod
    def fallback_route(self) -> str | None:
        """The route a sub-query under its threshold counts as (for calibration and
        evaluation): the fallback expert's route; None without a fallback."""

    @abstractmethod
    def route_of(self, decision: RoutingDecision) -> str:
        """The route ``decision`` counts as, for evaluation."""

    @abstractmethod
    def _decide(
        self, ids: Sequence[str], questions: Sequence[str], scores: np.ndarray, *, gold: bool
    ) -> list[RoutingDecision]:
        """Decisions from a score matrix (rows: questions, columns: routes); with ``gold``
        the scores are one-hot gold labels and no threshold applies."""

    @abstractmethod
    def _store_thresholds(self, thresholds: Mapping[str, float | None]) -> None:
        """Put calibrated thresholds on the routes, replacing every other threshold."""

    def _decision(
        self,
        sq_id: str,
        question: str,
        row: np.ndarray,
        expert: str,
        score: float,
        *,
        fallback: bool,
        gold: bool,
        **steps: Any,
    ) -> RoutingDecision:
        """A decision with the whole score row; ``steps`` are the two-step records."""
        return RoutingDecision(
            sub_query_id=sq_id,
            question=question,
            expert=expert,
            score=score,
            scores={n: float(s) for n, s in zip(self.route_names, row, strict=True)},
            fallback=fallback,
            strategy=GOLD if gold else self.strategy.kind,
            **steps,
        )

    @property
    def route_names(self) -> list[str]:
        """Route names, in score order."""
        return [r.name for r in self.routes]

    @property
    def load(self) -> ExpertLoad:
        """Calls in flight per expert: give it to the executor (``create_comp_llm`` does) so
        a least-loaded selection policy sees them."""
        return self._load

    # --- fitting, calibration, evaluation --------------------------------------------------

    def fit(
        self,
        examples: Sequence[str],
        labels: Sequence[str],
        *,
        include_profiles: bool = True,
    ) -> Self:
        """Fit the strategy on labelled queries (plus the routes' profile texts, unless
        ``include_profiles`` is false), embedded as documents in one call.

        Raises:
            ValueError: a count mismatch, a label that is not a route, or (without
                profiles) a route with no example.
        """
        if len(examples) != len(labels):
            raise ValueError(f"{len(examples)} examples but {len(labels)} labels")
        self._check_labels(labels, allow_fallback=False)
        texts, targets = list(examples), list(labels)
        if include_profiles:
            profiles = [(t, r.name) for r in self.routes for t in r.profile_texts()]
            texts = [t for t, _ in profiles] + texts
            targets = [n for _, n in profiles] + targets
        vectors = np.asarray(self.embeddings.embed_documents(texts)) if texts else np.zeros(0)
        with self._lock:
            self.strategy.fit(vectors, targets, classes=self.route_names)
        return self

    def calibrate(self, examples: Sequence[str], labels: Sequence[str]) -> dict[str, float | None]:
        """Choose every route's threshold from labelled queries (held out from :meth:`fit`)
        so that routing accuracy, with low scores sent to the fallback, is highest; store
        them on the routes (replacing all other thresholds) and return them.

        Raises:
            ValueError: the router has no fallback expert, or a label is not a route.
        """
        fallback = self.fallback_route
        if fallback is None:
            raise ValueError("calibrating thresholds needs a fallback expert to route to")
        self._check_labels(labels, allow_fallback=True)
        scores = self._scores(examples)
        thresholds = calibrate_thresholds(scores, self.route_names, labels, fallback)
        with self._lock:
            self._store_thresholds(thresholds)
        return thresholds

    def evaluate(
        self,
        examples: Sequence[str],
        labels: Sequence[str],
        outcomes: Sequence[Mapping[str, float]] | None = None,
    ) -> RoutingEvaluation:
        """Route labelled queries and compare with their gold routes: accuracy, the
        confusion matrix, per-route precision and recall, and the oracle gap.

        Args:
            outcomes: optional, one per query: how well each expert answered it (e.g. 1.0
                right, 0.0 wrong). Adds the task score of routed, gold-routed and best
                experts (see :class:`~langchain_complm.route.calibration.RoutingEvaluation`).

        Raises:
            ValueError: no queries, a count mismatch, or a label that is not a route.
        """
        if len(examples) != len(labels):
            raise ValueError(f"{len(examples)} examples but {len(labels)} labels")
        self._check_labels(labels, allow_fallback=True)
        decisions = self.route(examples)
        return summarize(
            strategy=self.strategy.kind,
            texts=examples,
            gold=labels,
            predicted=[self.route_of(d) for d in decisions],
            scores=[d.score for d in decisions],
            fallbacks=[d.fallback for d in decisions],
            labels=self.route_names,
            outcomes=outcomes,
            routed_experts=[d.expert for d in decisions],
            gold_experts=[d.expert for d in self.route_gold(examples, labels)]
            if outcomes is not None
            else (),
        )

    def _check_labels(self, labels: Sequence[str], *, allow_fallback: bool) -> None:
        known = set(self.route_names)
        if allow_fallback and self.fallback_route is not None:
            known.add(self.fallback_route)
        unknown = sorted(set(labels) - known)
        if unknown:
            raise ValueError(
                f"labels that are not routes: {', '.join(unknown)} "
                f"(routes: {', '.join(self.route_names)})"
            )

    # --- routing ---------------------------------------------------------------------------

    def route(
        self, questions: Sequence[str], ids: Sequence[str] | None = None
    ) -> list[RoutingDecision]:
        """Route raw questions; ``ids`` label the decisions (default: positions)."""
        if not questions:
            return []
        return self._decide(_ids(questions, ids), questions, self._scores(questions), gold=False)

    async def aroute(
        self, questions: Sequence[str], ids: Sequence[str] | None = None
    ) -> list[RoutingDecision]:
        """:meth:`route` with the embeddings' async methods."""
        if not questions:
            return []
        if not self.strategy.fitted:
            texts, labels = self._profile_texts()
            self._fit_profiles(await self.embeddings.aembed_documents(texts), labels)
        unique = list(dict.fromkeys(questions))
        vectors = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in unique))
        scores = self._score_unique(questions, unique, vectors)
        return self._decide(_ids(questions, ids), questions, scores, gold=False)

    def route_gold(
        self, questions: Sequence[str], labels: Sequence[str], ids: Sequence[str] | None = None
    ) -> list[RoutingDecision]:
        """Decisions for questions whose route is known (gold routing): the first step takes
        the given label, the rest of the decision is made as usual. Embeds nothing.

        Raises:
            ValueError: a count mismatch or a label that is not a route.
        """
        if len(questions) != len(labels):
            raise ValueError(f"{len(questions)} questions but {len(labels)} labels")
        self._check_labels(labels, allow_fallback=False)
        names = self.route_names
        onehot = np.zeros((len(labels), len(names)))
        onehot[np.arange(len(labels)), [names.index(label) for label in labels]] = 1.0
        return self._decide(_ids(questions, ids), questions, onehot, gold=True)

    def _scores(self, questions: Sequence[str]) -> np.ndarray:
        # Double-checked so concurrent first calls embed the profiles only once.
        if not self.strategy.fitted:
            with self._lock:
                if not self.strategy.fitted:
                    texts, labels = self._profile_texts()
                    profiles = np.asarray(self.embeddings.embed_documents(texts))
                    self.strategy.fit(profiles, labels, classes=self.route_names)
        unique = list(dict.fromkeys(questions))
        vectors = [self.embeddings.embed_query(q) for q in unique]
        return self._score_unique(questions, unique, vectors)

    def _score_unique(
        self, questions: Sequence[str], unique: list[str], vectors: Sequence[Sequence[float]]
    ) -> np.ndarray:
        scores = self.strategy.score(np.asarray(vectors))
        row = {q: i for i, q in enumerate(unique)}
        return scores[[row[q] for q in questions]]

    def _profile_texts(self) -> tuple[list[str], list[str]]:
        pairs = [(t, r.name) for r in self.routes for t in r.profile_texts()]
        return [t for t, _ in pairs], [n for _, n in pairs]

    def _fit_profiles(self, vectors: Sequence[Sequence[float]], labels: list[str]) -> None:
        # The lock cannot be held across an await: concurrent first async calls may each
        # embed the profiles, and the first fit is kept.
        with self._lock:
            if not self.strategy.fitted:
                self.strategy.fit(np.asarray(vectors), labels, classes=self.route_names)

    def route_plan(self, plan: Plan) -> Plan:
        """Route every sub-query of ``plan``; returns the annotated plan."""
        return _annotate(
            plan, self.route([sq.question for sq in plan.sub_queries], _plan_ids(plan))
        )

    async def aroute_plan(self, plan: Plan) -> Plan:
        """:meth:`route_plan` with the embeddings' async methods."""
        questions = [sq.question for sq in plan.sub_queries]
        return _annotate(plan, await self.aroute(questions, _plan_ids(plan)))

    # --- runnable --------------------------------------------------------------------------

    def invoke(self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any) -> Plan:
        return self._call_with_config(self._invoke, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Plan:
        return await self._acall_with_config(
            self._ainvoke, input, config, run_type="chain", **kwargs
        )

    def _invoke(
        self, plan: Plan, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Plan:
        return self._emit_routed(self.route_plan(self._checked_plan(plan)), config)

    async def _ainvoke(self, plan: Plan, run_manager: Any, config: RunnableConfig) -> Plan:
        return self._emit_routed(await self.aroute_plan(self._checked_plan(plan)), config)

    def _checked_plan(self, plan: Any) -> Plan:
        if not isinstance(plan, Plan):
            raise TypeError(f"{type(self).__name__} expects a Plan, got {type(plan).__name__}")
        return plan

    def _emit_routed(self, routed: Plan, config: RunnableConfig) -> Plan:
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


class EmbeddingRouter(BaseRouter):
    """Routes each sub-query to the expert it scores highest against (one step).

    With the default centroid strategy an expert's score is the cosine similarity to the
    normalized mean of the embeddings of its description and example questions. A
    sub-query whose best score is under that expert's threshold goes to
    ``fallback_expert`` instead; the threshold is ``thresholds[name]``, else the expert's
    own ``threshold`` (what :meth:`calibrate` sets), else the global ``threshold``.
    """

    thresholds: Mapping[str, float] = Field(default_factory=dict)
    """Per-expert minimum scores (over the experts' own)."""
    name: str | None = "EmbeddingRouter"

    @model_validator(mode="after")
    def _check_thresholds(self) -> EmbeddingRouter:
        check_known("thresholds", sorted(self.thresholds), self.expert_names)
        return self

    def _has_threshold(self) -> bool:
        return bool(self.thresholds) or super()._has_threshold()

    @property
    def routes(self) -> Sequence[ExpertProfile]:
        return self.experts

    @property
    def fallback_route(self) -> str | None:
        return self.fallback_expert

    def route_of(self, decision: RoutingDecision) -> str:
        return decision.expert

    def threshold_of(self, expert: str) -> float | None:
        """The minimum score for ``expert`` (see the class docstring)."""
        if expert in self.thresholds:
            return self.thresholds[expert]
        own = next(e.threshold for e in self.experts if e.name == expert)
        return own if own is not None else self.threshold

    def _store_thresholds(self, thresholds: Mapping[str, float | None]) -> None:
        self.experts = [
            e.model_copy(update={"threshold": thresholds.get(e.name)}) for e in self.experts
        ]
        self.thresholds, self.threshold = {}, None

    def _decide(
        self, ids: Sequence[str], questions: Sequence[str], scores: np.ndarray, *, gold: bool
    ) -> list[RoutingDecision]:
        names = self.expert_names
        minimum = {name: self.threshold_of(name) for name in names}
        decisions = []
        for sq_id, question, row in zip(ids, questions, scores, strict=True):
            best = int(np.argmax(row))
            expert, score = names[best], float(row[best])
            floor = None if gold else minimum[expert]
            fallback = floor is not None and score < floor
            if fallback:
                assert self.fallback_expert is not None  # enforced by _check_experts
                expert = self.fallback_expert
                score = float(row[names.index(expert)])
            decisions.append(
                self._decision(sq_id, question, row, expert, score, fallback=fallback, gold=gold)
            )
        return decisions


def _ids(questions: Sequence[str], ids: Sequence[str] | None) -> list[str]:
    return list(ids) if ids is not None else [str(i) for i in range(len(questions))]


def _plan_ids(plan: Plan) -> list[str]:
    return [sq.id for sq in plan.sub_queries]


def _annotate(plan: Plan, decisions: Sequence[RoutingDecision]) -> Plan:
    return plan.model_copy(
        update={
            "sub_queries": tuple(
                sq.model_copy(update={"route": decision})
                for sq, decision in zip(plan.sub_queries, decisions, strict=True)
            )
        }
    )


__all__ = ["GOLD", "BaseRouter", "EmbeddingRouter", "RoutingDecision"]
