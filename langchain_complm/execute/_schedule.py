"""Scheduling: which sub-queries of a plan may start now.

One rule serves every mode: a sub-query waits for others to finish (``superstep``: every
sub-query of the level before its own; ``eager``: its own parents; ``sequential``: the one
before it in topological order) and for a free slot under ``max_concurrency``. The schedule
knows nothing of threads, tasks or models; the executor reports what finished and starts what
it is given. Each report costs time in proportion to what it releases, so a plan of thousands
of sub-queries schedules in linear time.
"""

from __future__ import annotations

import heapq
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
        self.limit = limit
        self.model_keys = model_keys
        self.by_id = plan.by_id
        levels = plan.levels()
        self.order = [sq_id for level in levels for sq_id in level]
        """Every sub-query, in topological order."""
        self._position = {sq_id: i for i, sq_id in enumerate(self.order)}
        self.running: set[str] = set()
        self.results: dict[str, SubQueryResult] = {}
        self.aborted = False
        # What each sub-query still waits for, and what finishing one releases.
        self._waiting: dict[str, int] = {}
        self._releases: dict[str, list[str]] = {sq_id: [] for sq_id in self.order}
        if mode == "superstep":
            # A level is released when the one before it has finished: a countdown per level.
            self._levels = levels
            self._level_of = {sq_id: k for k, level in enumerate(levels) for sq_id in level}
            self._left = [len(level) for level in levels]
            self._waiting = {sq_id: int(self._level_of[sq_id] > 0) for sq_id in self.order}
        else:
            parents = (
                {sq_id: self.by_id[sq_id].depends_on for sq_id in self.order}
                if mode == "eager"
                else {sq_id: tuple(self.order[i - 1 : i]) for i, sq_id in enumerate(self.order)}
            )
            for sq_id, deps in parents.items():
                self._waiting[sq_id] = len(deps)
                for dep in deps:
                    self._releases[dep].append(sq_id)
        self._ready = [self._position[i] for i in self.order if not self._waiting[i]]
        heapq.heapify(self._ready)
        self._mode = mode

    @property
    def complete(self) -> bool:
        """Whether every sub-query has a result."""
        return len(self.results) == len(self.order)

    def finish(self, sq_id: str, result: SubQueryResult, *, abort: bool = False) -> None:
        """Record ``result`` (of a sub-query started, or resumed from a checkpoint); with
        ``abort``, sub-queries not yet started will be skipped."""
        self.running.discard(sq_id)
        self.results[sq_id] = result
        self.aborted = self.aborted or abort
        released = self._releases[sq_id]
        if self._mode == "superstep":
            level = self._level_of[sq_id]
            self._left[level] -= 1
            if not self._left[level] and level + 1 < len(self._levels):
                released = self._levels[level + 1]
        for other in released:
            self._waiting[other] -= 1
            if not self._waiting[other]:
                heapq.heappush(self._ready, self._position[other])

    def starts(self) -> list[tuple[str, Start]]:
        """The sub-queries to start now (they count as running until finished)."""
        if self.aborted:
            skipped = [i for i in self.order if i not in self.results and i not in self.running]
            self.running.update(skipped)
            self._ready = []
            return [(sq_id, Start(skip_reason=ABORTED)) for sq_id in skipped]
        room = len(self._ready) if self.limit is None else self.limit - len(self.running)
        started: list[str] = []
        while self._ready and len(started) < room:
            sq_id = self.order[heapq.heappop(self._ready)]
            if sq_id not in self.results:  # not resumed from a checkpoint
                started.append(sq_id)
        self.running.update(started)
        cohorts = self._cohorts(started)
        return [
            (
                sq_id,
                Start(
                    parents={d: self.results[d] for d in self.by_id[sq_id].depends_on},
                    cohort=cohorts.get(sq_id),
                ),
            )
            for sq_id in started
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
