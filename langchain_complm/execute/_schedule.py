"""Scheduling: which sub-queries of a plan may start now.

One rule serves every mode: a sub-query waits for a set of others (``superstep``: every
sub-query of a lower level; ``eager``: its own parents; ``sequential``: the one before it in
topological order) and for a free slot under ``max_concurrency``. The schedule knows nothing
of threads, tasks or models; the executor reports what finished and starts what it is given.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from langchain_complm.batching import BatchCohort
from langchain_complm.execute.results import ScheduleMode, SubQueryResult
from langchain_complm.plan import Plan

ABORTED = "not run: another sub-query failed and the failure policy is 'raise'"
"""Why a sub-query not yet started when the first failure happened under ``"raise"`` was
skipped."""


@dataclass(frozen=True)
class Start:
    """The go-ahead for one sub-query: its parents' results, the batch cohort its first
    attempt belongs to, or why it must not run at all."""

    parents: dict[str, SubQueryResult] = field(default_factory=dict)
    cohort: BatchCohort | None = None
    skip_reason: str | None = None


class Schedule:
    """The start order of one plan run.

    ``model_keys`` identifies each sub-query's model (the routed expert's): sub-queries
    started at the same moment on one model form a :class:`BatchCohort`.
    """

    def __init__(
        self,
        plan: Plan,
        mode: ScheduleMode,
        limit: int | None,
        model_keys: Mapping[str, Hashable],
    ) -> None:
        self.plan = plan
        self.limit = limit
        self.model_keys = model_keys
        self.pending = plan.topological_order()
        self.running: set[str] = set()
        self.results: dict[str, SubQueryResult] = {}
        self.aborted = False
        self.waits_for = _waits_for(plan, mode)

    @property
    def complete(self) -> bool:
        """Whether every sub-query has a result."""
        return not self.pending and not self.running

    def finish(self, sq_id: str, result: SubQueryResult, *, abort: bool = False) -> None:
        """Record ``result``; with ``abort``, sub-queries not yet started will be skipped."""
        self.running.discard(sq_id)
        if sq_id in self.pending:  # finished before it was started: resumed from a checkpoint
            self.pending.remove(sq_id)
        self.results[sq_id] = result
        self.aborted = self.aborted or abort

    def starts(self) -> list[tuple[str, Start]]:
        """The sub-queries to start now (they count as running until finished)."""
        if self.aborted:
            skipped, self.pending = self.pending, []
            self.running.update(skipped)
            return [(sq_id, Start(skip_reason=ABORTED)) for sq_id in skipped]
        ready = [i for i in self.pending if self.waits_for[i] <= self.results.keys()]
        if self.limit is not None:
            ready = ready[: max(0, self.limit - len(self.running))]
        for sq_id in ready:
            self.pending.remove(sq_id)
        self.running.update(ready)
        cohorts = self._cohorts(ready)
        return [
            (
                sq_id,
                Start(
                    parents={d: self.results[d] for d in self.plan.by_id[sq_id].depends_on},
                    cohort=cohorts.get(sq_id),
                ),
            )
            for sq_id in ready
        ]

    def _cohorts(self, started: list[str]) -> dict[str, BatchCohort]:
        groups: dict[Hashable, list[str]] = {}
        for sq_id in started:
            groups.setdefault(self.model_keys[sq_id], []).append(sq_id)
        cohorts: dict[str, BatchCohort] = {}
        for ids in groups.values():
            if len(ids) > 1:
                cohorts.update(dict.fromkeys(ids, BatchCohort(size=len(ids), label=",".join(ids))))
        return cohorts


def _waits_for(plan: Plan, mode: ScheduleMode) -> dict[str, frozenset[str]]:
    if mode == "eager":
        return {sq.id: frozenset(sq.depends_on) for sq in plan.sub_queries}
    if mode == "sequential":
        order = plan.topological_order()
        return {sq_id: frozenset(order[:i][-1:]) for i, sq_id in enumerate(order)}
    waits: dict[str, frozenset[str]] = {}
    below: frozenset[str] = frozenset()
    for level in plan.levels():
        waits.update(dict.fromkeys(level, below))
        below = below | set(level)
    return waits
