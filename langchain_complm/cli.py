"""The ``complm`` command line.

::

    complm ask "What is 15% of 240, and who wrote Hamlet?"      # prints the answer
    complm ask --show-plan "..."    # also the routed plan, sub-answers and a Mermaid drawing
    complm ask --json "..."         # the whole CompLLMOutput as JSON
    complm plan "..."               # only decompose and route (loads no expert model)
    complm ask --config my.yaml --mode sequential --max-concurrency 2 "..."

Progress (model loading, plan ready, each sub-query routed and answered) goes to stderr,
results to stdout. Exit codes: 0 success, 1 failure while running, 2 bad usage or input,
3 bad config, 4 model files missing, 130 interrupted.

Subcommands are :class:`Command` entries in :data:`COMMANDS`; add one with
:func:`add_command` (a name, a help line, a function adding its arguments and a function
running it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, get_args

from langchain_complm.pipeline import CompLLMOutput, coerce_query
from langchain_complm.config import (
    CompLLMConfig,
    ConfigError,
    ModelNotFoundError,
    build_comp_llm,
    build_planner,
    default_config,
    load_config,
)
from langchain_complm.execute.executor import ScheduleMode
from langchain_complm.plan import Plan

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_MODEL = 4
EXIT_INTERRUPTED = 130

CONFIG_ENV = "COMPLM_CONFIG"
"""Environment variable naming the config file used when ``--config`` is not given."""


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


@dataclass
class Console:
    """Where a command writes: results to ``out``, progress and errors to ``err``."""

    out: TextIO
    err: TextIO
    quiet: bool = False

    def print(self, text: str = "") -> None:
        """Write a result line to stdout."""
        print(text, file=self.out, flush=True)

    def progress(self, message: str) -> None:
        """Write a progress line to stderr (unless quiet)."""
        if not self.quiet:
            print(message, file=self.err, flush=True)

    def error(self, message: str) -> None:
        """Write an error line to stderr."""
        print(f"complm: error: {message}", file=self.err, flush=True)


@dataclass(frozen=True)
class Command:
    """A ``complm`` subcommand."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    """Adds the subcommand's own arguments (the common ones are already there)."""
    run: Callable[[argparse.Namespace, Console], int]
    """Runs it; returns the exit code. May raise the errors :func:`main` maps to codes."""
    aliases: tuple[str, ...] = field(default=())


COMMANDS: list[Command] = []
"""The subcommands, in help order."""


def add_command(command: Command) -> Command:
    """Register a subcommand (replacing one of the same name)."""
    COMMANDS[:] = [c for c in COMMANDS if c.name != command.name]
    COMMANDS.append(command)
    return command


# --- shared arguments and helpers -------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def common_arguments() -> argparse.ArgumentParser:
    """The arguments every subcommand takes (config, output format, verbosity)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        default=None,
        help=f"config file (.yaml, .yml, .toml or .json); default ${CONFIG_ENV}, else the "
        "embedded offline setup (SmolLM2 + MiniLM + the default experts)",
    )
    group.add_argument("--json", action="store_true", help="print machine-readable JSON")
    group.add_argument(
        "--max-new-tokens",
        metavar="N",
        type=_positive_int,
        help="cap every model's generated tokens at N (overrides the config)",
    )
    group.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    group.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    return common


def add_question_argument(parser: argparse.ArgumentParser) -> None:
    """The ``QUESTION`` positional (several words are joined; ``-`` reads stdin)."""
    parser.add_argument(
        "question",
        nargs="+",
        metavar="QUESTION",
        help="the question (quote it, or pass several words; '-' reads it from stdin)",
    )


def read_question(args: argparse.Namespace, config: CompLLMConfig) -> str:
    """The question from the arguments (or stdin), checked like the pipeline checks it.

    Raises:
        UsageError: empty or over ``execution.max_query_chars``.
    """
    words: list[str] = args.question
    text = sys.stdin.read() if words == ["-"] else " ".join(words)
    try:
        return coerce_query(text, config.execution.max_query_chars)
    except ValueError as exc:
        raise UsageError(f"bad question: {exc}") from None


def load_cli_config(args: argparse.Namespace) -> CompLLMConfig:
    """The config of ``--config`` (or ``$COMPLM_CONFIG``, or the default) with the
    command-line overrides applied.

    Raises:
        ConfigError: invalid config file or overrides.
        ModelNotFoundError: a local model path in the config does not exist.
    """
    path = args.config or (Path(p) if (p := os.environ.get(CONFIG_ENV)) else None)
    config = load_config(path) if path is not None else default_config()
    config = config.with_overrides(
        mode=getattr(args, "mode", None), max_concurrency=getattr(args, "max_concurrency", None)
    )
    if args.max_new_tokens is not None:
        models = {
            name: spec.model_copy(update={"max_new_tokens": args.max_new_tokens})
            for name, spec in config.models.items()
        }
        config = config.model_copy(update={"models": models})
    return config


def print_json(console: Console, data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    console.print(json.dumps(data, indent=2, ensure_ascii=False))


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
    lines += ["", "Sub-answers:"]
    for sq_id, result in output.results.items():
        took = f", {result.duration:.1f} s" if result.duration is not None else ""
        head = f"  {sq_id} [{result.expert or '-'}{took}]"
        if result.status == "ok":
            body = " ".join((result.answer or "").split())
        else:
            body = f"{result.status.upper()}: {result.error or ''}"
        lines.append(f"{head}: {body}")
    notes = output.fallbacks
    if notes:
        lines += ["", "Fallbacks:"] + [f"  {note}" for note in notes]
    timings = ", ".join(f"{stage} {sec:.1f} s" for stage, sec in output.timings.items())
    lines += ["", f"Timings: {timings}", "", "Plan drawing (Mermaid):", plan.to_mermaid()]
    lines += ["", "Answer:", output.answer]
    return "\n".join(lines)


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
        type=_positive_int,
        help="at most N experts run at once (overrides the config)",
    )


def run_ask(args: argparse.Namespace, console: Console) -> int:
    """``complm ask``: answer a question with the full pipeline."""
    config = load_cli_config(args)
    question = read_question(args, config)
    comp_llm = build_comp_llm(config, progress=console.progress)
    console.progress("Decomposing the question...")
    output = _stream(comp_llm.stream(question), console)
    if args.json:
        print_json(console, output.model_dump(mode="json"))
    elif args.show_plan:
        console.print(format_output(output))
    else:
        console.print(output.answer)
    return EXIT_OK


def _stream(events: Iterable[Any], console: Console) -> CompLLMOutput:
    output = None
    for event in events:
        if not isinstance(event, dict):
            continue
        if (line := describe_event(event)) is not None:
            console.progress(line)
        if event.get("type") == "done":
            output = event["data"]
    if not isinstance(output, CompLLMOutput):
        raise RuntimeError("the pipeline finished without a final output")
    return output


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


add_command(
    Command(
        name="ask",
        help="answer a question: decompose, route, run the experts, aggregate",
        configure=_configure_ask,
        run=run_ask,
    )
)
add_command(
    Command(
        name="plan",
        help="only decompose and route a question; print the plan",
        configure=_configure_plan,
        run=run_plan,
    )
)

from langchain_complm.benchmarks import cli as _bench  # noqa: E402

add_command(Command("bench", _bench.HELP, _bench.configure_bench, _bench.run_bench))

# Registers train-generator and eval-generator (on import, so either import order works).
from langchain_complm.training import cli as _training_cli  # noqa: E402, F401

# --- entry point ------------------------------------------------------------------------------


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The ``complm`` argument parser with a subparser per command."""
    parser = argparse.ArgumentParser(
        prog="complm",
        description="Comp-LLM: answer a question with several small expert LLMs "
        "(decompose, route, run in parallel, aggregate).",
        epilog="exit codes: 0 ok, 1 failure, 2 bad usage or input, 3 bad config, "
        "4 model files missing",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_arguments()
    for command in commands if commands is not None else COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            aliases=list(command.aliases),
            help=command.help,
            description=command.help,
            parents=[common],
        )
        command.configure(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``complm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's usage error (code 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    console = Console(out=sys.stdout, err=sys.stderr, quiet=args.quiet)
    try:
        return int(args.handler(args, console))
    except UsageError as exc:
        return _fail(console, args, exc, str(exc), EXIT_USAGE)
    except ConfigError as exc:
        return _fail(console, args, exc, f"bad config: {exc}", EXIT_CONFIG)
    except ModelNotFoundError as exc:
        return _fail(console, args, exc, f"model files missing: {exc}", EXIT_MODEL)
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        return _fail(console, args, exc, f"{type(exc).__name__}: {message}", EXIT_FAILURE)


def _fail(
    console: Console, args: argparse.Namespace, exc: BaseException, message: str, code: int
) -> int:
    if args.debug:
        traceback.print_exception(exc, file=console.err)
    console.error(message)
    return code


__all__ = [
    "COMMANDS",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "Console",
    "UsageError",
    "add_command",
    "build_parser",
    "common_arguments",
    "describe_event",
    "format_output",
    "main",
]
