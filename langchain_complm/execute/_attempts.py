"""One sub-query's attempts: its prompt, the experts tried in turn, and its result.

The loop is written once, as a generator that yields each expert call to make and is sent
the call's output (or has the call's exception thrown in); how one expert call is made
(:func:`_call_sync`, :func:`_call_async`) is the only code that differs between ``invoke``
and ``ainvoke``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_complm.batching import BatchCohort, batch_cohort
from langchain_complm.concurrency import (
    ExpertLoad,
    Steps,
    arun_steps,
    await_with_timeout,
    call_with_timeout,
    run_steps,
)
from langchain_complm.events import emit, quiet
from langchain_complm.execute._schedule import Start
from langchain_complm.execute.results import Attempt, FailurePolicy, SubQueryResult
from langchain_complm.experts import Expert
from langchain_complm.plan import SubQuery


@dataclass(frozen=True)
class PlanRun:
    """What the sub-queries of one plan run share."""

    experts: Mapping[str, Expert]
    policy: FailurePolicy
    context_template: str
    writer: Callable[[Any], None] | None
    """The stream writer of the run the user reads (see
    :func:`~langchain_complm.events.current_writer`)."""
    load: ExpertLoad
    """Counts each expert's calls in flight (what a least-loaded router reads)."""


@dataclass(frozen=True)
class ExpertCall:
    """One call the loop asks its driver to make."""

    llm: Runnable[Any, Any]
    messages: list[BaseMessage]
    config: RunnableConfig
    cohort: BatchCohort | None
    timeout: float | None
    what: str
    """Names the call in a timeout's message."""
    expert: str
    load: ExpertLoad


Attempts = Steps[ExpertCall, SubQueryResult]


def attempts(run: PlanRun, sq: SubQuery, start: Start, config: RunnableConfig) -> Attempts:
    """The attempt loop of ``sq``: the routed expert ``1 + max_retries`` times, then the
    fallback expert, until one answers; returns the sub-query's result (skipped when
    ``start`` says so or a parent did not succeed)."""
    reason = start.skip_reason
    parents = [] if reason else [start.parents[d] for d in sq.depends_on]
    if bad := [p.id for p in parents if p.status != "ok"]:
        reason = f"not run: depends on {', '.join(bad)}, which did not succeed"
    if reason is not None:
        emit({"type": "subquery_error", "sub_query_id": sq.id, "error": reason}, config, run.writer)
        return SubQueryResult(
            id=sq.id,
            question=sq.question,
            depends_on=sq.depends_on,
            expert=sq.expert,
            status="skipped",
            error=reason,
        )
    prompt = prompt_of(run, sq, parents)
    assert sq.expert is not None  # the executor checks the plan is routed
    messages: list[BaseMessage] = [HumanMessage(content=prompt)]
    if system_prompt := run.experts[sq.expert].system_prompt:
        messages.insert(0, SystemMessage(content=system_prompt))
    emit({"type": "subquery_start", "sub_query_id": sq.id, "expert": sq.expert}, config, run.writer)

    tried: list[Attempt] = []
    started = time.time()
    answer = None
    for expert, cohort in _candidates(sq.expert, start.cohort, run.policy):
        t0 = time.perf_counter()
        try:
            output = yield ExpertCall(
                llm=run.experts[expert].llm,
                messages=messages,
                config=_expert_config(config, sq.id, expert),
                cohort=cohort,
                timeout=run.policy.timeout,
                what=f"expert {expert} on {sq.id}",
                expert=expert,
                load=run.load,
            )
            answer = _answer_text(output)
        except Exception as exc:
            tried.append(
                Attempt(
                    expert=expert,
                    error=_describe(exc, run.policy.timeout),
                    error_type=type(exc).__name__,
                    duration=time.perf_counter() - t0,
                )
            )
            continue
        metadata = dict(getattr(output, "response_metadata", None) or {})
        tried.append(Attempt(expert=expert, duration=time.perf_counter() - t0, metadata=metadata))
        break

    ok = answer is not None
    result = SubQueryResult(
        id=sq.id,
        question=sq.question,
        depends_on=sq.depends_on,
        expert=tried[-1].expert,
        prompt=prompt,
        answer=answer,
        status="ok" if ok else "failed",
        error=None if ok else "; ".join(f"{a.expert}: {a.error}" for a in tried),
        attempts=tried,
        started_at=started,
        ended_at=time.time(),
    )
    if ok:
        event = {
            "type": "subquery_answer",
            "sub_query_id": sq.id,
            "expert": result.expert or "",
            "answer": answer or "",
            "data": result,
        }
    else:
        event = {"type": "subquery_error", "sub_query_id": sq.id, "error": result.error or ""}
    emit(event, config, run.writer)  # type: ignore[arg-type]
    return result


def prompt_of(run: PlanRun, sq: SubQuery, parents: list[SubQueryResult]) -> str:
    """What ``sq``'s expert is asked: its question with the parents' answers filled in, and
    the parents' questions and answers as context."""
    prompt = question = sq.render({p.id: p.answer or "" for p in parents})
    if parents:
        context = "\n".join(f"- {p.question} -> {(p.answer or '').strip()}" for p in parents)
        prompt = run.context_template.format(context=context, question=question)
    return prompt


def run_sync(loop: Attempts) -> SubQueryResult:
    """Drive ``loop`` with blocking expert calls."""
    return run_steps(loop, _call_sync)


async def run_async(loop: Attempts) -> SubQueryResult:
    """Drive ``loop`` with awaited expert calls (no thread is held while an expert works)."""
    return await arun_steps(loop, _call_async)


async def _call_async(call: ExpertCall) -> Any:
    with call.load.track(call.expert):
        with batch_cohort(call.cohort):
            # The task created here copies the context, cohort included.
            pending = asyncio.ensure_future(call.llm.ainvoke(call.messages, call.config))
        return await await_with_timeout(pending, call.timeout, call.what)


def _call_sync(call: ExpertCall) -> Any:
    with call.load.track(call.expert), batch_cohort(call.cohort):
        # A timed call runs in a thread of its own, in a copy of this context (cohort
        # included); see call_with_timeout for what a timeout stops.
        return call_with_timeout(
            partial(call.llm.invoke, call.messages, call.config), call.timeout, call.what
        )


def _candidates(
    expert: str, cohort: BatchCohort | None, policy: FailurePolicy
) -> list[tuple[str, BatchCohort | None]]:
    """The experts to try in turn, each with its batch cohort (first attempt only: retries
    never wait for others)."""
    order = [expert] * (1 + policy.max_retries)
    if policy.fallback_expert is not None and policy.fallback_expert != expert:
        order.append(policy.fallback_expert)
    return [(name, cohort if i == 0 else None) for i, name in enumerate(order)]


def _expert_config(config: RunnableConfig, sq_id: str, expert: str) -> RunnableConfig:
    # What merge_configs would give (this config adds no callbacks), without its copies.
    return quiet(
        {
            **config,
            "run_name": f"expert:{expert}",
            "tags": [
                *(config.get("tags") or ()),
                f"complm:sub_query:{sq_id}",
                f"complm:expert:{expert}",
            ],
            "metadata": {
                **(config.get("metadata") or {}),
                "complm_sub_query_id": sq_id,
                "complm_expert": expert,
            },
        }
    )


def _answer_text(output: Any) -> str:
    """An expert's output as text; an empty answer counts as a failure."""
    text = output.text if isinstance(output, BaseMessage) else str(output)
    if not text.strip():
        raise ValueError("the expert returned an empty answer")
    return text.strip()


def _describe(error: BaseException, timeout: float | None) -> str:
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return f"timed out after {timeout:g} s"
    return f"{type(error).__name__}: {error}"
