"""What the Query Executor takes besides the plan (schedule mode, failure policy) and what it
gives back (one :class:`SubQueryResult` per sub-query, every attempt recorded)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from langchain_complm.concurrency import DEFAULT_TIMEOUT

ScheduleMode = Literal["superstep", "eager", "sequential"]
"""How sub-queries are scheduled; all three give the same answers.

- ``superstep``: level by level, like LangGraph's supersteps: each dependency level runs in
  parallel, and a level starts when the previous one has finished.
- ``eager``: a sub-query starts as soon as its own parents have finished, so a dependent of
  a fast branch does not wait for a slow sibling.
- ``sequential``: one sub-query after another, in topological order (the paper's baseline).
"""


class FailurePolicy(BaseModel):
    """What to do when an expert raises, returns nothing, or times out.

    The assigned expert is tried ``1 + max_retries`` times, then ``fallback_expert`` once.
    If all fail, ``on_failure="continue"`` records the failure, skips the sub-queries that
    depend on it and lets the rest finish; ``"raise"`` stops starting new sub-queries and
    raises :class:`~langchain_complm.errors.SubQueryExecutionError`, which still carries
    every result computed.

    Each call gets ``timeout`` seconds (default :data:`~langchain_complm.concurrency.
    DEFAULT_TIMEOUT`; ``None``: no limit). An async call that runs out is cancelled; a sync
    call is abandoned and told so (see :mod:`langchain_complm.concurrency` for what that
    stops): the attempt fails either way and the next one starts at once.
    """

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(default=0, ge=0)
    fallback_expert: str | None = None
    timeout: float | None = Field(
        default=DEFAULT_TIMEOUT, gt=0, description="Seconds per expert call (None: no limit)."
    )
    on_failure: Literal["continue", "raise"] = "continue"


class Attempt(BaseModel):
    """One call of one expert for one sub-query."""

    expert: str
    error: str | None = None
    error_type: str | None = Field(
        default=None, description="Class name of the exception, e.g. 'ServerTimeoutError'."
    )
    duration: float
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="The expert reply's response_metadata (e.g. batch size, tokens, load time).",
    )


class SubQueryResult(BaseModel):
    """What happened to one sub-query."""

    id: str
    question: str = Field(description="The sub-query as planned (placeholders unfilled).")
    depends_on: tuple[str, ...] = ()
    expert: str | None = Field(default=None, description="Expert that answered (or last tried).")
    prompt: str | None = Field(default=None, description="The text sent to the expert.")
    answer: str | None = None
    status: Literal["ok", "failed", "skipped"]
    error: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    started_at: float | None = Field(default=None, description="Unix time the first call began.")
    ended_at: float | None = Field(default=None, description="Unix time the last call ended.")

    @property
    def duration(self) -> float | None:
        """Seconds from the first expert call to the end of the last."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    @property
    def response_metadata(self) -> dict[str, Any]:
        """Metadata of the reply that answered (batch size, tokens, load time, ...)."""
        return self.attempts[-1].metadata if self.status == "ok" else {}

    @property
    def used_fallback(self) -> bool:
        """Whether a fallback expert (not the routed one) produced the answer."""
        return self.status == "ok" and len({a.expert for a in self.attempts}) > 1


class ExecutionResult(BaseModel):
    """Results of every sub-query of a plan, keyed by id, in plan order."""

    results: dict[str, SubQueryResult]
    started_at: float
    ended_at: float

    @property
    def answers(self) -> dict[str, str]:
        """Answers of the sub-queries that succeeded."""
        return {k: r.answer for k, r in self.results.items() if r.answer is not None}

    @property
    def failed(self) -> dict[str, SubQueryResult]:
        """The sub-queries that failed or were skipped."""
        return {k: r for k, r in self.results.items() if r.status != "ok"}


__all__ = [
    "Attempt",
    "ExecutionResult",
    "FailurePolicy",
    "ScheduleMode",
    "SubQueryResult",
]
