"""What every ``complm`` subcommand shares: the console, the command record, exit codes,
the common arguments and the config/question helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from langchain_complm.config import (
    CONFIG_ENV,
    CompLLMConfig,
    default_config,
    load_config,
)
from langchain_complm.errors import (
    ModelNotServedError,
    RemoteModelError,
    ServerHTTPError,
    ServerTimeoutError,
    ServerUnreachableError,
    UsageError,
)
from langchain_complm.pipeline import coerce_query

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_MODEL = 4
EXIT_UNREACHABLE = 5
EXIT_NOT_SERVED = 6
EXIT_HTTP = 7
EXIT_TIMEOUT = 8
EXIT_INTERRUPTED = 130

SERVED_MODEL_EXIT_CODES: dict[type[RemoteModelError], int] = {
    ServerUnreachableError: EXIT_UNREACHABLE,
    ModelNotServedError: EXIT_NOT_SERVED,
    ServerHTTPError: EXIT_HTTP,
    ServerTimeoutError: EXIT_TIMEOUT,
}
"""Exit code per kind of served-model error (:mod:`langchain_complm.errors`)."""


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


# --- shared arguments and helpers -------------------------------------------------------------


def positive_int(text: str) -> int:
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
        type=positive_int,
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
        mode=getattr(args, "mode", None),
        max_concurrency=getattr(args, "max_concurrency", None),
        stream_plan=getattr(args, "stream_plan", None) or None,
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
