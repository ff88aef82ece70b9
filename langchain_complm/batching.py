"""Batch cohorts: a scheduler's hint to a batching model about calls that start together.

The executor knows what a batching model cannot: which sub-queries for one expert were
started at the same moment (one superstep, or one round of the eager loop). Their calls reach
the model a few milliseconds apart (thread start-up, prompt building), and under CPU contention
sometimes more than the model's collection window, which splits a batch the executor meant to
be one. The executor wraps each such call in :func:`batch_cohort`; a batching model
(:class:`~langchain_complm.models.ChatLocalHuggingFace`) reads :func:`current_cohort` and
waits a little longer for the cohort's missing members, never longer than one generation takes.

Which calls can share a batch is the model's to say: :func:`batch_group` reads a model's
``batch_group`` (a local chat model reports its engine, decoding settings and batch limit, so
LoRA experts of one base form one cohort), else each model object is its own group.

The hint travels in a :mod:`contextvars` variable, so it passes through LangChain's runnables,
callbacks and thread pools without being an argument of any model's API; models that do not
batch ignore it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
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


def batch_group(model: object) -> Hashable:
    """What a scheduler groups ``model``'s calls by to declare cohorts: the model's own
    ``batch_group`` when it has one (models served by one batching engine share it), else
    the model object's identity."""
    group = getattr(model, "batch_group", None)
    return id(model) if group is None else group


__all__ = ["BatchCohort", "batch_cohort", "batch_group", "current_cohort"]
