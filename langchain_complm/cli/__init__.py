"""The ``complm`` command line.

::

    complm ask "What is 15% of 240, and who wrote Hamlet?"      # prints the answer
    complm ask --show-plan "..."    # also the routed plan, sub-answers and a Mermaid drawing
    complm ask --json "..."         # the whole CompLLMOutput as JSON
    complm plan "..."               # only decompose and route (loads no expert model)
    complm ask --config my.yaml --mode sequential --max-concurrency 2 "..."

Progress (model loading, plan ready, each sub-query routed and answered) goes to stderr,
results to stdout. Exit codes: 0 success, 1 failure while running, 2 bad usage or input,
3 bad config, 4 model files missing, 130 interrupted; a served model's failure (whether it
stopped the run or only failed some sub-queries) 5 server unreachable, 6 model not served,
7 HTTP error, 8 timeout.

Subcommands are :class:`Command` entries declared in one place, :data:`COMMANDS`: each module
of this package (``ask``, ``bench``, ``train``) lists its own; :func:`build_parser` takes any
other list (a name, a help line, a function adding its arguments and a function running it).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from langchain_complm.cli import ask, bench, train
from langchain_complm.cli._common import (
    CONFIG_ENV,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_HTTP,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_NOT_SERVED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    SERVED_MODEL_EXIT_CODES,
    Command,
    Console,
    common_arguments,
)
from langchain_complm.cli.ask import describe_event, format_output
from langchain_complm.errors import ConfigError, ModelNotFoundError, RemoteModelError, UsageError

COMMANDS: tuple[Command, ...] = (*ask.COMMANDS, *bench.COMMANDS, *train.COMMANDS)
"""The subcommands, in help order."""

# --- entry point ------------------------------------------------------------------------------


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The ``complm`` argument parser with a subparser per command."""
    parser = argparse.ArgumentParser(
        prog="complm",
        description="Comp-LLM: answer a question with several small expert LLMs "
        "(decompose, route, run in parallel, aggregate).",
        epilog="exit codes: 0 ok, 1 failure, 2 bad usage or input, 3 bad config, "
        "4 model files missing; a served model: 5 server unreachable, 6 model not served, "
        "7 HTTP error, 8 timeout",
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
    except RemoteModelError as exc:
        codes = (c for kind, c in SERVED_MODEL_EXIT_CODES.items() if isinstance(exc, kind))
        code = next(codes, EXIT_FAILURE)
        return _fail(console, args, exc, f"{type(exc).__name__}: {exc}", code)
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
    "CONFIG_ENV",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_HTTP",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_NOT_SERVED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "SERVED_MODEL_EXIT_CODES",
    "Command",
    "Console",
    "build_parser",
    "common_arguments",
    "describe_event",
    "format_output",
    "main",
]
