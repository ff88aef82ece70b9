"""Scheduling: which sub-queries of a plan may start now.

One rule serves every mode: a sub-query waits for others to finish (``superstep``: every
sub-query of the level before its own; ``eager``: its own parents; ``sequential``: the one
before it in topological order) and for a free slot under ``max_concurrency``. The schedule
knows nothing of threads, tasks or models; the executor reports what finished and starts what
it is given. Each report costs time in proportion to what it releases, so a plan of thousands
of sub-queries schedules in linear time.

In ``eager`` and ``sequential`` mode the plan may also grow while it runs (plan streaming):
sub-queries are added once their parents are, dropped when the final plan no longer has
them, and the schedule is complete once it is closed and every sub-query has a result.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from langchain_complm.batching import BatchCohort
from langchain_complm.execute.results import ScheduleMode, SubQueryResult
from langchain_complm.plan import Plan, SubQuery

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
    started at the same moment on one model form a :class:`BatchCohort`. Without a plan
    (``plan=None``) the schedule starts empty and open: :meth:`add` and :meth:`drop` change
    it, :meth:`close` says the plan is complete.
    """

    def __init__(
        self,
        plan: Plan | None,
        mode: ScheduleMode,
        limit: int | None,
        model_keys: Mapping[str, Hashable] | None = None,
    ) -> None:
        if plan is None and mode == "superstep":
            raise ValueError(
                "a plan that grows while it runs cannot be run in supersteps (its levels are "
                "only known at its end): use mode 'eager' or 'sequential'"
            )
        self.limit = limit
        self.model_keys = dict(model_keys or {})
        self.by_id: dict[str, SubQuery] = {}
        self.order: list[str] = []
        """Every sub-query, in topological order."""
        self.running: set[str] = set()
        self.results: dict[str, SubQueryResult] = {}
        self.aborted = False
        self.closed = False
        self._mode = mode
        self._positions = itertools.count()
        self._position: dict[str, int] = {}
        self._at: dict[int, str] = {}  # position -> sub-query, for those not dropped
        # What each sub-query still waits for, and what finishing one releases.
        self._waiting: dict[str, int] = {}
        self._releases: dict[str, list[str]] = {}
        self._ready: list[int] = []
        if plan is None:
            return
        levels = plan.levels()
        if mode != "superstep":
            by_id = plan.by_id
            for level in levels:
                for sq_id in level:
                    self.add(by_id[sq_id], self.model_keys.get(sq_id))
            self.closed = True
            return
        self.by_id = plan.by_id
        for sq_id in (sq_id for level in levels for sq_id in level):
            self._place(sq_id)
        # A level is released when the one before it has finished: a countdown per level.
        self._levels = levels
        self._level_of = {sq_id: k for k, level in enumerate(levels) for sq_id in level}
        self._left = [len(level) for level in levels]
        for sq_id in self.order:
            self._waiting[sq_id] = int(self._level_of[sq_id] > 0)
            if not self._waiting[sq_id]:
                self._ready.append(self._position[sq_id])
        heapq.heapify(self._ready)
        self.closed = True

    @property
    def complete(self) -> bool:
        """Whether the plan is complete and every sub-query has a result."""
        return self.closed and len(self.results) == len(self.order)

    def _place(self, sq_id: str) -> None:
        position = next(self._positions)
        self.order.append(sq_id)
        self._position[sq_id] = position
        self._at[position] = sq_id
        self._releases[sq_id] = []

    def add(self, sq: SubQuery, model_key: Hashable) -> None:
        """Add ``sq`` to a growing plan (``eager`` or ``sequential``); its parents must be
        in the plan already."""
        if self.closed:
            raise RuntimeError("the plan is closed: no sub-query can be added")
        if sq.id in self.by_id:
            raise ValueError(f"sub-query {sq.id!r} is in the plan already")
        unknown = [d for d in sq.depends_on if d not in self.by_id]
        if unknown:
            raise ValueError(f"sub-query {sq.id!r} depends on {unknown}, not in the plan yet")
        before = self.order[-1:] if self._mode == "sequential" else list(sq.depends_on)
        self.by_id[sq.id] = sq
        self.model_keys[sq.id] = model_key
        self._place(sq.id)
        waits_for = [p for p in before if p not in self.results]
        for parent in waits_for:
            self._releases[parent].append(sq.id)
        self._waiting[sq.id] = len(waits_for)
        if not waits_for:
            heapq.heappush(self._ready, self._position[sq.id])

    def drop(self, sq_id: str) -> None:
        """Take ``sq_id`` out of a growing plan, with its result if it has one (what it
        released in ``sequential`` order is released; its dependents must be dropped too)."""
        self.order.remove(sq_id)
        del self.by_id[sq_id], self._at[self._position.pop(sq_id)]
        self._waiting.pop(sq_id)
        self.model_keys.pop(sq_id, None)
        self.running.discard(sq_id)
        finished = self.results.pop(sq_id, None) is not None
        if not finished:
            self._release(self._releases[sq_id])
        del self._releases[sq_id]

    def close(self) -> None:
        """Say the plan is complete: no more sub-queries are added."""
        self.closed = True

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
        self._release(released)

    def _release(self, released: list[str]) -> None:
        for other in released:
            if other not in self._waiting:
                continue  # dropped
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
            sq_id = self._at.get(heapq.heappop(self._ready))
            if sq_id is not None and sq_id not in self.results:  # not dropped or resumed
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
