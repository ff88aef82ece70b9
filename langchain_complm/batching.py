"""Batch cohorts: a scheduler's hint to a batching model about calls that start together.

The executor knows what a batching model cannot: which sub-queries for one expert were
started at the same moment (one superstep, or one round of the eager loop). Their calls reach
the model a few milliseconds apart (thread start-up, prompt building), and under CPU contention
sometimes more than the model's collection window, which splits a batch the executor meant to
be one. The executor wraps each such call in :func:`batch_cohort`; a batching model
(:class:`~langchain_complm.models.ChatLocalHuggingFace`) reads :func:`current_cohort` and
waits a little longer for the cohort's missing members, never longer than one generation takes.

The hint travels in a :mod:`contextvars` variable, so it passes through LangChain's runnables,
callbacks and thread pools without being an argument of any model's API; models that do not
batch ignore it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)
class BatchCohort:
    """``size`` model calls started together; members are recognized by identity."""

    size: int
    label: str = field(default="")
    """For logs and debugging only (e.g. ``"q2,q3 -> math"``)."""


_current: ContextVar[BatchCohort | None] = ContextVar("complm_batch_cohort", default=None)


def current_cohort() -> BatchCohort | None:
    """The cohort the current model call belongs to, if a scheduler declared one."""
    return _current.get()


@contextlib.contextmanager
def batch_cohort(cohort: BatchCohort | None) -> Iterator[None]:
    """Model calls made inside this block belong to ``cohort`` (``None``: to none)."""
    token = _current.set(cohort)
    try:
        yield
    finally:
        _current.reset(token)


__all__ = ["BatchCohort", "batch_cohort", "current_cohort"]
