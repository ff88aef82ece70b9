"""``complm ask`` and ``complm plan``: answer a question, or only decompose and route it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from typing import Any, get_args

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command as Resume

from langchain_complm.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    SERVED_MODEL_EXIT_CODES,
    Command,
    Console,
    add_question_argument,
    load_cli_config,
    positive_int,
    print_json,
    read_question,
)
from langchain_complm.config import (
    build_comp_llm,
    build_planner,
)
from langchain_complm.errors import (
    AggregationError,
    PlanReviewError,
    RemoteModelError,
    UsageError,
)
from langchain_complm.execute.executor import ScheduleMode, SubQueryResult
from langchain_complm.pipeline import CHECKPOINT_TYPES, CompLLMOutput
from langchain_complm.plan import Plan


def describe_event(event: dict[str, Any]) -> str | None:
    """A one-line progress message for a stream event (``None``: nothing to show)."""
    kind = event.get("type")
    sq_id = event.get("sub_query_id", "?")
    if kind == "plan":
        plan: Plan = event["data"]
        count = len(plan.sub_queries)
        line = f"Plan ready: {_plural(count, 'sub-query', 'sub-queries')}"
        if plan.width > 1:
            line += f", up to {plan.width} in parallel"
        if plan.fallback_reason:
            line += f" (not decomposed: {plan.fallback_reason})"
        return line
    if kind == "routed":
        return f"  {sq_id} -> {event.get('expert')} ({event.get('score', 0.0):.2f})"
    if kind == "subquery_start":
        return f"  {sq_id}: {event.get('expert')} started"
    if kind == "subquery_answer":
        result = event.get("data")
        took = getattr(result, "duration", None)
        timing = f" in {took:.1f} s" if took is not None else ""
        return f"  {sq_id}: answered by {event.get('expert')}{timing}"
    if kind == "subquery_error":
        return f"  {sq_id}: failed: {event.get('error')}"
    if kind == "done":
        return "Aggregated the final answer"
    return None


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def format_output(output: CompLLMOutput) -> str:
    """The ``--show-plan`` report: plan with routing scores, sub-answers with experts and
    timings, notes, a Mermaid drawing and the answer."""
    plan = output.plan
    count, depth = len(plan.sub_queries), len(plan.levels())
    lines = [f"Plan ({_plural(count, 'sub-query', 'sub-queries')}, {_plural(depth, 'level')}):"]
    lines += ["  " + row for row in plan.to_text().splitlines()]
    lines += ["", "Sub-answers:", *_result_lines(output.results)]
    notes = output.fallbacks
    if notes:
        lines += ["", "Fallbacks:"] + [f"  {note}" for note in notes]
    timings = ", ".join(f"{stage} {sec:.1f} s" for stage, sec in output.timings.items())
    lines += ["", f"Timings: {timings}", "", "Plan drawing (Mermaid):", plan.to_mermaid()]
    lines += ["", "Answer:", output.answer]
    return "\n".join(lines)


def _result_lines(results: dict[str, SubQueryResult]) -> list[str]:
    lines = []
    for sq_id, result in results.items():
        took = f", {result.duration:.1f} s" if result.duration is not None else ""
        head = f"  {sq_id} [{result.expert or '-'}{took}]"
        if result.status == "ok":
            body = " ".join((result.answer or "").split())
        else:
            body = f"{result.status.upper()}: {result.error or ''}"
        lines.append(f"{head}: {body}")
    return lines


# --- ask --------------------------------------------------------------------------------------


def _configure_ask(parser: argparse.ArgumentParser) -> None:
    add_question_argument(parser)
    parser.add_argument(
        "--show-plan",
        action="store_true",
        help="also print the routed plan, every sub-answer with its expert and timing, and "
        "a Mermaid drawing of the plan",
    )
    parser.add_argument(
        "--mode",
        choices=get_args(ScheduleMode),
        help="how sub-queries are scheduled (overrides the config)",
    )
    parser.add_argument(
        "--max-concurrency",
        metavar="N",
        type=positive_int,
        help="at most N experts run at once (overrides the config)",
    )
    parser.add_argument(
        "--stream-plan",
        action="store_true",
        help="start each sub-query as soon as the decomposer has written it and its parents "
        "(needs --mode eager or sequential; overrides the config)",
    )
    parser.add_argument(
        "--review",
        action="store_true",
        help="show the routed plan before any expert runs, and approve, edit or replace it "
        "(answers are read from stdin)",
    )


REVIEW_PROMPT = (
    "Run this plan? Enter (or y) runs it, q quits, or type a JSON edit, e.g. "
    '{"action": "edit", "sub_queries": {"q1": {"expert": "math"}}}: '
)


def run_ask(args: argparse.Namespace, console: Console) -> int:
    """``complm ask``: answer a question with the full pipeline.

    When a served model stops the run (the aggregator's server is down, say), the
    sub-answers already computed are still printed before the error. When it only fails
    some sub-queries, the answer is printed and the exit code names the first failure.
    """
    config = load_cli_config(args)
    question = read_question(args, config)
    answered: dict[str, SubQueryResult] = {}
    try:
        if args.review:
            saver = InMemorySaver(
                serde=JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)
            )
            comp_llm = build_comp_llm(
                config, progress=console.progress, review_plan=True, checkpointer=saver
            )
            console.progress("Decomposing the question...")
            thread: RunnableConfig = {"configurable": {"thread_id": "complm-ask"}}
            reviewed = _reviewed(comp_llm, question, thread, console, answered)
            if reviewed is None:
                console.error("plan not approved; no expert was run")
                return EXIT_INTERRUPTED
            output = reviewed
        else:
            comp_llm = build_comp_llm(config, progress=console.progress)
            console.progress("Decomposing the question...")
            output = _stream(comp_llm.stream(question), console, answered)
    except AggregationError as exc:
        cause = exc.__cause__
        if not isinstance(cause, RemoteModelError):
            raise
        # A served aggregator that failed: its own error (and exit code), after what was done.
        _print_answered(args, console, question, exc.output.results, cause)
        raise cause from None
    except RemoteModelError as exc:
        _print_answered(args, console, question, answered, exc)
        raise
    if args.json:
        print_json(console, output.model_dump(mode="json"))
    elif args.show_plan:
        console.print(format_output(output))
    else:
        console.print(output.answer)
    return _served_failures(output, console)


def _stream(
    events: Iterable[Any], console: Console, answered: dict[str, SubQueryResult]
) -> CompLLMOutput:
    """The run's output; ``answered`` collects each sub-answer as it comes."""
    if (output := _report(events, console, answered)) is None:
        raise RuntimeError("the pipeline finished without a final output")
    return output


def _report(
    events: Iterable[Any], console: Console, answered: dict[str, SubQueryResult]
) -> CompLLMOutput | None:
    """Show the progress events; the final output, or ``None`` if the run paused."""
    output = None
    for event in events:
        if not isinstance(event, dict):
            continue
        if (line := describe_event(event)) is not None:
            console.progress(line)
        if event.get("type") == "subquery_answer":
            answered[event["sub_query_id"]] = event["data"]
        if event.get("type") == "done":
            output = event["data"]
    return output if isinstance(output, CompLLMOutput) else None


def _reviewed(
    comp_llm: Any,
    question: str,
    thread: RunnableConfig,
    console: Console,
    answered: dict[str, SubQueryResult],
) -> CompLLMOutput | None:
    """Run ``question``, asking the reviewer on stdin about the plan; ``None`` if they quit."""
    output = _report(comp_llm.stream(question, thread), console, answered)
    while output is None:
        (pending,) = comp_llm.get_state(thread).interrupts
        request = pending.value
        if error := request.get("error"):
            console.error(error)
        print(f"Plan:\n{request['text']}", file=console.err, flush=True)
        while True:
            print(REVIEW_PROMPT, end="", file=console.err, flush=True)
            line = sys.stdin.readline()
            if not line:
                raise UsageError("no answer to the plan review (stdin is closed)")
            answer = _review_answer(line.strip())
            if answer is None:
                return None
            try:
                events = comp_llm.stream(Resume(resume=answer), thread)
                output = _report(events, console, answered)
                break
            except PlanReviewError as exc:
                console.error(str(exc))
    return output


def _review_answer(line: str) -> Any:
    """The resume value for a reviewer's line (``None``: quit)."""
    if line.lower() in ("q", "quit", "n", "no"):
        return None
    if line.lower() in ("", "y", "yes", "approve"):
        return "approve"
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return line  # the pipeline says why it is not a valid answer


def _print_answered(
    args: argparse.Namespace,
    console: Console,
    question: str,
    answered: dict[str, SubQueryResult],
    error: RemoteModelError,
) -> None:
    """What a run stopped by ``error`` had computed: its sub-answers."""
    if args.json:
        failure = {"type": type(error).__name__, "message": str(error), "model": error.model}
        results = {k: r.model_dump(mode="json") for k, r in answered.items()}
        print_json(console, {"query": question, "error": failure, "results": results})
    elif answered:
        console.print("Sub-answers computed before the failure:")
        console.print("\n".join(_result_lines(answered)))


def _served_failures(output: CompLLMOutput, console: Console) -> int:
    """Report sub-queries a served model failed; the exit code of the first, else 0."""
    codes = {cls.__name__: code for cls, code in SERVED_MODEL_EXIT_CODES.items()}
    first = None
    for sq_id, result in output.results.items():
        code = next((codes[a.error_type] for a in result.attempts if a.error_type in codes), None)
        if code is not None and result.status == "failed":
            console.error(f"sub-query {sq_id} failed: {result.error}")
            first = first if first is not None else code
    return first if first is not None else EXIT_OK


# --- plan -------------------------------------------------------------------------------------


def _configure_plan(parser: argparse.ArgumentParser) -> None:
    add_question_argument(parser)
    parser.add_argument(
        "--mermaid", action="store_true", help="print a Mermaid drawing instead of the text plan"
    )


def run_plan(args: argparse.Namespace, console: Console) -> int:
    """``complm plan``: decompose and route only; prints the routed plan."""
    config = load_cli_config(args)
    question = read_question(args, config)
    planner = build_planner(config, progress=console.progress)
    console.progress("Decomposing the question...")
    started = time.perf_counter()
    plan: Plan = planner.invoke(question)
    console.progress(describe_event({"type": "plan", "data": plan}) or "")
    console.progress(f"Planned in {time.perf_counter() - started:.1f} s")
    if args.json:
        print_json(console, plan.model_dump(mode="json"))
    elif args.mermaid:
        console.print(plan.to_mermaid())
    else:
        console.print(plan.to_text())
    return EXIT_OK


COMMANDS = (
    Command(
        name="ask",
        help="answer a question: decompose, route, run the experts, aggregate",
        configure=_configure_ask,
        run=run_ask,
    ),
    Command(
        name="plan",
        help="only decompose and route a question; print the plan",
        configure=_configure_plan,
        run=run_plan,
    ),
)

__all__ = ["COMMANDS", "describe_event", "format_output", "run_ask", "run_plan"]
