"""Two-step routing, as in Composition of Experts: a category router, then a
category-to-expert map.

Step one scores each sub-query against the *categories* (each with a profile, like an
expert's) with the router's strategy. When the best category's score is under its threshold
the category is uncertain and the generalist (``fallback_expert``) answers. Otherwise step
two picks one of the category's experts with the selection policy:

* :class:`BudgetPolicy` (``budget``): among the experts that fit a parameter and/or cost
  budget, the largest (default; the most capable one the budget allows) or the smallest;
  when none fits, the smallest, flagged ``within_budget=False``.
* :class:`LeastLoadedPolicy` (``least_loaded``): the expert with the fewest calls in flight
  (the router's :attr:`~BaseRouter.load`, counted by the executor) plus the sub-queries this
  routing call already gave it, so one plan's sub-queries spread over the experts.

Both steps are recorded on every :class:`~langchain_complm.plan.RoutingDecision`:
``category`` (the best category, its score and threshold, whether it was uncertain),
``scores`` (every category's score) and ``selection`` (the policy, the measure it compared,
every candidate's value, and why).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from langchain_complm.concurrency import ExpertLoad
from langchain_complm.experts import ExpertProfile, RouteProfile, check_known, check_unique
from langchain_complm.plan import CategoryChoice, ExpertChoice, RoutingDecision
from langchain_complm.route.router import BaseRouter
from langchain_complm.route.strategies import from_kind


class Category(RouteProfile):
    """A category of sub-queries: a routing profile and the experts that serve it."""

    noun: ClassVar[str] = "category"

    experts: tuple[str, ...] = Field(
        min_length=1, description="Names of the experts that answer this category."
    )


Measure = Literal["parameters", "cost", "order"]


def _measure(candidates: Sequence[ExpertProfile]) -> tuple[Measure, dict[str, float]]:
    """How candidates are sized: parameters when all declare them, else cost when all do,
    else their order in the category (the first counts as the largest)."""
    if all(c.parameters is not None for c in candidates):
        return "parameters", {c.name: float(c.parameters or 0) for c in candidates}
    if all(c.cost is not None for c in candidates):
        return "cost", {c.name: float(c.cost or 0.0) for c in candidates}
    return "order", {c.name: float(i) for i, c in enumerate(candidates)}


class SelectionPolicy(BaseModel, ABC):
    """Picks the expert of a category (step two)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str

    def check(self, category: str, candidates: Sequence[ExpertProfile]) -> None:
        """Raise ``ValueError`` if the policy cannot choose among ``candidates``."""

    @abstractmethod
    def select(
        self, candidates: Sequence[ExpertProfile], in_flight: Mapping[str, int]
    ) -> tuple[str, ExpertChoice]:
        """The chosen expert and the record of the choice; ``in_flight`` counts each
        candidate's calls in flight plus those this routing call already gave it."""


class BudgetPolicy(SelectionPolicy):
    """The largest (or smallest) expert of the category within a parameter/cost budget."""

    kind: Literal["budget"] = "budget"
    max_parameters: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, ge=0)
    prefer: Literal["largest", "smallest"] = "largest"

    def check(self, category: str, candidates: Sequence[ExpertProfile]) -> None:
        if len(candidates) < 2:
            return  # nothing to choose: the only expert answers, whatever its size
        for field, limit in (("parameters", self.max_parameters), ("cost", self.max_cost)):
            missing = [
                c.name for c in candidates if limit is not None and getattr(c, field) is None
            ]
            if missing:
                raise ValueError(
                    f"category {category!r}: a {field} budget needs the {field} of every expert "
                    f"(missing for {', '.join(missing)})"
                )

    def select(
        self, candidates: Sequence[ExpertProfile], in_flight: Mapping[str, int]
    ) -> tuple[str, ExpertChoice]:
        measure, sizes = _measure(candidates)
        fits = [c.name for c in candidates if self._fits(c)]
        budget = self._describe()
        if len(candidates) == 1:
            pick, reason = candidates[0].name, "the category's only expert"
        elif not fits:
            # Never fail a sub-query for want of budget: the cheapest expert answers.
            pick = self._smallest(measure, sizes, [c.name for c in candidates])
            reason = f"no expert within {budget}: the smallest"
        elif measure == "order":
            pick, reason = fits[0], f"the category's first expert within {budget}"
        else:
            ranked = sorted(fits, key=sizes.__getitem__)
            pick = ranked[-1] if self.prefer == "largest" else ranked[0]
            reason = f"the {self.prefer} by {measure} within {budget}"
        return pick, ExpertChoice(
            policy=self.kind,
            measure=measure,
            candidates=sizes,
            within_budget=bool(fits),
            reason=reason,
        )

    def _fits(self, expert: ExpertProfile) -> bool:
        # An unknown size (only possible for a category's only expert) does not exceed.
        if self.max_parameters is not None and (expert.parameters or 0) > self.max_parameters:
            return False
        return self.max_cost is None or (expert.cost or 0.0) <= self.max_cost

    def _describe(self) -> str:
        limits = []
        if self.max_parameters is not None:
            limits.append(f"{self.max_parameters:,} parameters")
        if self.max_cost is not None:
            limits.append(f"cost {self.max_cost:g}")
        return " and ".join(limits) or "no budget"

    @staticmethod
    def _smallest(measure: Measure, sizes: Mapping[str, float], names: list[str]) -> str:
        return names[-1] if measure == "order" else min(names, key=sizes.__getitem__)


class LeastLoadedPolicy(SelectionPolicy):
    """The expert of the category with the fewest calls in flight; ties go to the smaller
    (by parameters or cost), then to the category's order."""

    kind: Literal["least_loaded"] = "least_loaded"

    def select(
        self, candidates: Sequence[ExpertProfile], in_flight: Mapping[str, int]
    ) -> tuple[str, ExpertChoice]:
        measure, sizes = _measure(candidates)
        order = {c.name: i for i, c in enumerate(candidates)}
        tie_break = sizes if measure != "order" else order
        loads = {c.name: float(in_flight.get(c.name, 0)) for c in candidates}
        pick = min(loads, key=lambda n: (loads[n], tie_break[n], order[n]))
        return pick, ExpertChoice(
            policy=self.kind,
            measure="load",
            candidates=loads,
            reason=f"the fewest calls in flight ({loads[pick]:g})",
        )


Policy = Annotated[BudgetPolicy | LeastLoadedPolicy, Field(discriminator="kind")]
"""Any built-in selection policy, chosen by its ``kind`` (how config files name one)."""

_POLICIES: dict[str, type[SelectionPolicy]] = {
    "budget": BudgetPolicy,
    "least_loaded": LeastLoadedPolicy,
}


def make_policy(spec: SelectionPolicy | str | Mapping[str, Any]) -> SelectionPolicy:
    """A policy from an instance (any :class:`SelectionPolicy`, kept as is), a kind
    (``"least_loaded"``) or a mapping with ``kind`` and settings.

    Raises:
        ValueError: an unknown kind or setting.
    """
    if isinstance(spec, SelectionPolicy):
        return spec
    return from_kind(_POLICIES, spec, "selection policy")


class TwoStepRouter(BaseRouter):
    """Routes each sub-query to a category, then to one of the category's experts.

    ``categories`` are what the strategy scores (their profiles, and :meth:`fit` labels, are
    category names); ``experts`` are every expert the categories name (and the generalist),
    with the ``parameters`` or ``cost`` the policy compares. A best-category score under the
    category's ``threshold`` (else the global ``threshold``) is uncertain and goes to
    ``fallback_expert``, the generalist. :meth:`calibrate` stores thresholds on the
    categories.
    """

    categories: Sequence[Category]
    policy: SelectionPolicy = Field(default_factory=BudgetPolicy)
    """How the expert of a category is chosen: a policy, or its kind (``"budget"``,
    ``"least_loaded"``)."""
    name: str | None = "TwoStepRouter"

    @field_validator("policy", mode="before")
    @classmethod
    def _make_policy(cls, value: Any) -> SelectionPolicy:
        return make_policy(value)

    @model_validator(mode="after")
    def _check_categories(self) -> TwoStepRouter:
        if not self.categories:
            raise ValueError("TwoStepRouter needs at least one category")
        check_unique("category", [c.name for c in self.categories])
        for category in self.categories:
            check_known(f"category {category.name!r}", category.experts, self.expert_names)
            self.policy.check(category.name, self._candidates(category))
        return self

    @property
    def routes(self) -> Sequence[Category]:
        return self.categories

    @property
    def fallback_route(self) -> str | None:
        """The first category that lists the generalist, else the generalist's name."""
        if self.fallback_expert is None:
            return None
        return next(
            (c.name for c in self.categories if self.fallback_expert in c.experts),
            self.fallback_expert,
        )

    def route_of(self, decision: RoutingDecision) -> str:
        if decision.fallback or decision.category is None:
            return self.fallback_route or decision.expert
        return decision.category.name

    def _candidates(self, category: Category) -> list[ExpertProfile]:
        by_name = {e.name: e for e in self.experts}
        return [by_name[n] for n in category.experts]

    def _store_thresholds(self, thresholds: Mapping[str, float | None]) -> None:
        self.categories = [
            c.model_copy(update={"threshold": thresholds.get(c.name)}) for c in self.categories
        ]
        self.threshold = None

    def _decide(
        self, ids: Sequence[str], questions: Sequence[str], scores: np.ndarray, *, gold: bool
    ) -> list[RoutingDecision]:
        names = self.route_names
        given: Counter[str] = Counter()
        decisions = []
        for sq_id, question, row in zip(ids, questions, scores, strict=True):
            category = self.categories[int(np.argmax(row))]
            score = float(row[names.index(category.name)])
            floor = category.threshold if category.threshold is not None else self.threshold
            uncertain = not gold and floor is not None and score < floor
            if uncertain:
                assert self.fallback_expert is not None  # enforced by _check_experts
                expert = self.fallback_expert
                selection = ExpertChoice(
                    policy="generalist",
                    measure="order",
                    candidates={expert: 0.0},
                    reason=f"category {category.name!r} uncertain: {score:.3f} < {floor:.3f}",
                )
            else:
                in_flight = _in_flight(self.load, category.experts, given)
                expert, selection = self.policy.select(self._candidates(category), in_flight)
            given[expert] += 1
            step_one = CategoryChoice(
                name=category.name, score=score, threshold=floor, uncertain=uncertain
            )
            decisions.append(
                self._decision(
                    sq_id,
                    question,
                    row,
                    expert,
                    score,
                    fallback=uncertain,
                    gold=gold,
                    category=step_one,
                    selection=selection,
                )
            )
        return decisions


def _in_flight(load: ExpertLoad, experts: Sequence[str], given: Counter[str]) -> dict[str, int]:
    return {name: load[name] + given[name] for name in experts}


__all__ = [
    "BudgetPolicy",
    "Category",
    "LeastLoadedPolicy",
    "Policy",
    "SelectionPolicy",
    "TwoStepRouter",
    "make_policy",
]
