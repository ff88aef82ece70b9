"""``complm bench accuracy``: the MultiExpertQA-style accuracy benchmark from the command line.

::

    complm bench accuracy --dataset multiexpertqa-p --system complm --n 30
    complm bench accuracy --dataset multiexpertqa-all --system all --n 30 --max-new-tokens 48
    complm bench accuracy --dataset multiexpertqa-p --system monolithic --model ./qwen --n 30
    complm bench accuracy --dataset multiexpertqa-p --n 30 --report-only

Predictions are appended to ``<out>/predictions/<system>.jsonl`` item by item, so an
interrupted run resumes where it stopped; the report (``results.md``, ``results.json``,
``accuracy_vs_parameters.png``) covers every system with predictions in ``<out>``. The
summary table goes to stdout (``--json``: the summaries as JSON), progress to stderr.

Heavy modules are imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from langchain_complm.cli._common import Command, Console

BENCHMARKS = ("accuracy",)
DEFAULT_RESULTS_DIR = Path("benchmarks") / "results"
"""Results go to ``<this>/accuracy-<dataset>-<split>-s<seed>`` unless ``--out`` is given."""
DEFAULT_N = 20
HELP = "run a benchmark (accuracy: MultiExpertQA-style datasets, Comp-LLM and its baselines)"


def configure_bench(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` arguments (the common ``--config``, ``--json``,
    ``--max-new-tokens``, ``-q`` come from the main CLI)."""
    from langchain_complm.benchmarks.systems import SYSTEM_NAMES
    from langchain_complm.cli._common import positive_int
    from langchain_complm.config import Decomposer
    from langchain_complm.evaluation.multiexpertqa import DatasetName, Split

    parser.add_argument("benchmark", choices=BENCHMARKS, help="which benchmark to run")
    parser.add_argument(
        "--dataset", choices=get_args(DatasetName), default="multiexpertqa-p", help="dataset"
    )
    parser.add_argument(
        "--system",
        action="append",
        metavar="NAME",
        help=f"system to run: {', '.join(SYSTEM_NAMES)} or all; repeat or comma-separate "
        "for several (default: complm)",
    )
    parser.add_argument("--n", type=positive_int, default=DEFAULT_N, help="number of items")
    parser.add_argument("--split", choices=get_args(Split), default="test", help="split")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help=f"results folder (default {DEFAULT_RESULTS_DIR}/accuracy-DATASET-SPLIT-sSEED)",
    )
    parser.add_argument(
        "--model",
        metavar="PATH_OR_ID",
        action="append",
        help="model for the monolithic baseline (repeatable; default: every distinct chat "
        "model of the config)",
    )
    parser.add_argument(
        "--decomposer",
        choices=get_args(Decomposer),
        help="how Comp-LLM decomposes (overrides the config's decomposer): the generator "
        "model's prompt (llm), the config's trained_generator (trained), the rule-based splitter "
        "(structural), or auto",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="benchmark source data (default $COMPLM_DATA_DIR)"
    )
    parser.add_argument(
        "--on-error",
        choices=("record", "raise"),
        default="record",
        help="a system failing on an item: record it as wrong and go on, or stop",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rescore the predictions in the results folder and rewrite the report",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG")


def parse_systems(values: list[str] | None) -> list[str]:
    """System names from repeated / comma-separated ``--system`` values (``all``: every one).

    Raises:
        ValueError: an unknown name.
    """
    from langchain_complm.benchmarks.systems import SYSTEM_NAMES

    names = [v.strip() for value in values or ["complm"] for v in value.split(",") if v.strip()]
    if "all" in names:
        return list(SYSTEM_NAMES)
    unknown = [n for n in names if n not in SYSTEM_NAMES]
    if unknown:
        raise ValueError(
            f"unknown system {', '.join(unknown)} (systems: {', '.join(SYSTEM_NAMES)}, all)"
        )
    return list(dict.fromkeys(names))


def run_bench(args: argparse.Namespace, console: Console) -> int:
    """``complm bench accuracy``: run the systems, score them and write the report."""
    from langchain_complm.benchmarks.runner import run_benchmark, summarize_dir, write_report
    from langchain_complm.benchmarks.systems import (
        build_systems,
        domain_expert_map,
        load_components,
    )
    from langchain_complm.cli._common import EXIT_OK, load_cli_config, print_json
    from langchain_complm.config import ModelSpec, load_chat_model
    from langchain_complm.errors import UsageError
    from langchain_complm.evaluation.multiexpertqa import build_dataset

    try:
        names = parse_systems(args.system)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.model and "monolithic" not in names:
        raise UsageError("--model is for the monolithic baseline: add --system monolithic")
    config = load_cli_config(args)
    if args.decomposer is not None:
        config = config.model_copy(update={"decomposer": args.decomposer})
    out = args.out or DEFAULT_RESULTS_DIR / f"accuracy-{args.dataset}-{args.split}-s{args.seed}"
    console.progress(f"Building {args.n} {args.dataset} {args.split} items (seed {args.seed})...")
    try:
        items = build_dataset(args.dataset, args.split, args.n, args.seed, data_dir=args.data_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"cannot build the dataset: {exc}") from None
    domain_experts = domain_expert_map(config.route_names)
    notes = [
        f"dataset {args.dataset}, split {args.split}, seed {args.seed}, {len(items)} items",
        f"decomposer: {config.resolved_decomposer}",
    ]
    title = f"{args.dataset} ({args.split}, seed {args.seed}, n={len(items)})"
    if args.report_only:
        summaries = summarize_dir(out, items, domain_experts)
        write_report(out, summaries, title=title, notes=notes, plot=not args.no_plot)
    else:
        components = load_components(config, progress=console.progress)
        monolithic = None
        if args.model:
            # A served default model may leave the limit to its server.
            tokens = config.models["default"].max_new_tokens or ModelSpec().max_new_tokens
            monolithic = [
                (Path(m).name, load_chat_model(m, ModelSpec(model_id=m, max_new_tokens=tokens)))
                for m in args.model
            ]
        try:
            systems = build_systems(names, components, monolithic_models=monolithic)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        summaries = run_benchmark(
            systems,
            items,
            out,
            domain_experts=domain_experts,
            progress=not args.quiet,
            on_error=args.on_error,
            title=title,
            notes=notes,
            plot=not args.no_plot,
        )
    if args.json:
        print_json(console, [s.model_dump(mode="json") for s in summaries])
    else:
        from langchain_complm.benchmarks.runner import summary_table

        console.print(summary_table(summaries))
    console.progress(f"Report: {Path(out) / 'results.md'}")
    return EXIT_OK


COMMANDS = (Command("bench", HELP, configure_bench, run_bench),)


__all__ = [
    "BENCHMARKS",
    "COMMANDS",
    "DEFAULT_RESULTS_DIR",
    "HELP",
    "configure_bench",
    "parse_systems",
    "run_bench",
]
