"""``complm train-generator``, ``complm eval-generator``, ``complm train-shape-router``,
``complm train-expert`` and ``complm eval-expert``.

::

    complm train-generator --n-train 3000 --epochs 1 --out runs/subquery-generator
    complm train-generator --out runs/subquery-generator --resume     # after an interruption
    complm train-generator --dump-data pairs.jsonl --n-train 3000      # only write the pairs
    complm eval-generator runs/subquery-generator --split dev --n 200
    complm eval-generator --curve 0,250,1000,3000 --curve-dir runs/curve --docs docs/curve
    complm train-shape-router --out runs/shape_router.json --n-train 3000
    complm train-expert math --out runs/expert-math --n-train 800 --max-steps 100  # + eval
    complm eval-expert runs/expert-math --n 100 --report runs/expert-math/eval.json

"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from langchain_complm.cli._common import EXIT_OK, Command, Console, positive_int
from langchain_complm.errors import UsageError
from langchain_complm.models.embedded import EMBEDDED_CHAT_MODEL, EMBEDDED_EMBEDDINGS
from langchain_complm.training.data import (
    DEFAULT_MIX,
    SPLIT_SEED,
    build_training_pairs,
    pair_statistics,
    save_pairs,
    split_seed_of,
)

DEFAULT_OUT = "runs/subquery-generator"


def _configure_train(parser: argparse.ArgumentParser) -> None:
    _add_training_arguments(parser, out=DEFAULT_OUT, n_train=3000)
    parser.add_argument("--data", metavar="JSONL", help="train on these pairs instead")
    parser.add_argument(
        "--split-seed",
        type=int,
        default=SPLIT_SEED,
        metavar="SEED",
        help=f"the benchmark split built pairs draw sources from (default {SPLIT_SEED}, the one "
        "the evaluation sets are built with; --seed changes only the draws)",
    )
    parser.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="KIND=SHARE",
        help="share of a kind of built pair (repeatable; others keep the default mix, "
        "0 leaves a kind out)",
    )
    parser.add_argument(
        "--dump-data",
        metavar="JSONL",
        help="only build the training pairs, write them and their statistics, and exit",
    )


def run_train(args: argparse.Namespace, console: Console) -> int:
    """``complm train-generator``: build the pairs and fine-tune the base model."""
    mix = _mix(args.mix)
    if mix and args.data:
        raise UsageError("--mix shapes built pairs: it cannot be used with --data")
    config = _train_config(args, args.out, data_path=args.data, mix=mix, split_seed=args.split_seed)
    if args.dump_data:
        pairs = build_training_pairs(
            args.n_train,
            args.seed,
            split_seed=args.split_seed,
            data_dir=args.data_dir,
            mix=mix,
        )
        save_pairs(pairs, args.dump_data)
        console.progress(f"wrote {len(pairs)} pairs to {args.dump_data}")
        console.print(json.dumps(pair_statistics(pairs), indent=2))
        return EXIT_OK

    from langchain_complm.training.train import train_generator

    console.progress(f"Training a Sub-query Generator on {config.base} -> {config.out}")
    result = train_generator(config, resume=args.resume)
    summary = {k: result.metadata[k] for k in ("steps", "final_loss", "train_seconds")}
    if args.json:
        console.print(json.dumps(result.metadata, indent=2))
    else:
        console.print(f"saved {result.out} ({json.dumps(summary)})")
    return EXIT_OK


def _configure_shape_router(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="JSON", help="where to write the router")
    parser.add_argument("--n-train", type=positive_int, default=3000, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--data-dir", metavar="DIR", help="benchmark data folder, or 'hub'")
    parser.add_argument(
        "--embeddings",
        default=EMBEDDED_EMBEDDINGS,
        metavar="MODEL",
        help="sentence-transformers model (default: the embedded all-MiniLM-L6-v2)",
    )


def run_shape_router(args: argparse.Namespace, console: Console) -> int:
    """``complm train-shape-router``: fit the generator's shape router on training pairs."""
    from langchain_complm.models.embedded import embeddings_for
    from langchain_complm.training.shapes import MULTIHOP_KINDS, fit_shape_router, shape_pairs

    pairs = shape_pairs(args.n_train, args.seed, split_seed=args.split_seed, data_dir=args.data_dir)
    multihop = sum(pair.kind in MULTIHOP_KINDS for pair in pairs)
    console.progress(f"fitting on {len(pairs)} pairs ({multihop} multi-hop)")
    router = fit_shape_router(pairs, embeddings_for(args.embeddings))
    router.save(args.out, args.embeddings)
    console.print(f"saved {args.out} ({len(router.idf)} grams)")
    return EXIT_OK


def _mix(items: list[str]) -> dict[str, float] | None:
    """The training mix of ``--mix KIND=SHARE`` items over :data:`DEFAULT_MIX`."""
    if not items:
        return None
    mix = dict(DEFAULT_MIX)
    for item in items:
        kind, _, share = item.partition("=")
        if kind not in DEFAULT_MIX:
            raise UsageError(
                f"--mix {item!r}: unknown kind {kind!r}; kinds: {', '.join(DEFAULT_MIX)}"
            )
        try:
            mix[kind] = float(share)
        except ValueError:
            raise UsageError(f"--mix {item!r}: the share must be a number") from None
        if not (math.isfinite(mix[kind]) and mix[kind] >= 0):
            raise UsageError(f"--mix {item!r}: the share must be a finite number, 0 or more")
    if not any(mix.values()):
        raise UsageError("--mix leaves no kind of pair")
    return mix


def _configure_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        metavar="PATH_OR_ID",
        help="trained generator folder or hub id (not needed with --curve)",
    )
    parser.add_argument(
        "--split",
        choices=("dev", "test", "heldout", "heldout-2", "multihop", "multihop-dev"),
        default="dev",
        help="a benchmark split; heldout: the 126 held-out compound questions; heldout-2: "
        "the 62 fresh ones; multihop: "
        "HotpotQA/MuSiQue/Bamboogle test-split questions by kind (--n per kind); "
        "multihop-dev: the same from the dev split",
    )
    parser.add_argument("--n", type=int, default=200, help="evaluation examples")
    parser.add_argument(
        "--free-decoding",
        action="store_true",
        help="let the model write its JSON freely (default: decoding held to the plan grammar)",
    )
    parser.add_argument(
        "--no-repair", action="store_true", help="score the plans as parsed, without plan repair"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="default: the split seed of its training data"
    )
    parser.add_argument("--max-chars", type=int, default=None, help="skip longer queries")
    parser.add_argument("--device", help="cpu, cuda:0, ...")
    parser.add_argument("--data-dir", metavar="DIR", help="benchmark data folder, or 'hub'")
    parser.add_argument("--report", metavar="JSON", help="write the full report here")
    parser.add_argument(
        "--replies",
        metavar="JSON",
        help="score the replies kept in this --report file instead of generating (same "
        "--split, --n and --seed): to rescore after a parser change",
    )
    parser.add_argument(
        "--curve",
        metavar="SIZES",
        help="comma-separated training-set sizes: train and evaluate one model per size",
    )
    parser.add_argument("--curve-dir", default="runs/curve", metavar="DIR")
    parser.add_argument("--base", default=EMBEDDED_CHAT_MODEL, help="base model for --curve")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs for --curve")
    parser.add_argument(
        "--docs",
        metavar="PREFIX",
        help="with --curve: write PREFIX.md and PREFIX.png (e.g. docs/trained-generator-curve)",
    )
    parser.add_argument("--title", default=None, help="title of the curve")


def run_eval(args: argparse.Namespace, console: Console) -> int:
    """``complm eval-generator``: plan metrics of a trained generator, or a learning curve."""
    from langchain_complm.training.evaluate import (
        eval_examples,
        evaluate_generator,
        learning_curve,
        write_curve,
    )

    max_new = args.max_new_tokens or 768
    if args.curve:
        try:
            sizes = [int(s) for s in args.curve.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--curve takes comma-separated integers: {args.curve!r}") from None
        seed = args.seed or 0
        examples = eval_examples(
            args.split, args.n, seed, max_chars=args.max_chars, data_dir=args.data_dir
        )
        points = learning_curve(
            sizes,
            args.curve_dir,
            examples=examples,
            train_options={
                "base": args.base,
                "seed": seed,
                "epochs": args.epochs,
                "data_dir": args.data_dir,
                "progress": not args.quiet,
            },
            generator_options={
                "device": args.device,
                "max_new_tokens": max_new,
                "constrained": not args.free_decoding,
            },
            progress=console.progress,
        )
        if args.docs:
            title = args.title or f"Sub-query Generator learning curve ({args.split}, n={args.n})"
            write_curve(points, f"{args.docs}.md", f"{args.docs}.png", title=title)
        console.print(json.dumps(points, indent=2))
        return EXIT_OK

    if args.replies:
        report, model = _rescore(args)
    else:
        if not args.model:
            raise UsageError("give a trained generator (PATH_OR_ID), --replies JSON or --curve")
        from langchain_complm.models.trained import load_trained_generator, read_metadata

        seed = args.seed if args.seed is not None else split_seed_of(read_metadata(args.model))
        console.progress(f"Loading {args.model}...")
        generator = load_trained_generator(
            args.model,
            device=args.device,
            max_new_tokens=max_new,
            constrained=not args.free_decoding,
        )
        examples = eval_examples(
            args.split, args.n, seed, max_chars=args.max_chars, data_dir=args.data_dir
        )
        # The report file keeps each raw reply, to rescore (--replies) or inspect later.
        report = evaluate_generator(
            generator,
            examples,
            keep_replies=bool(args.report),
            progress=console.progress,
            repair=not args.no_repair,
        )
        model = args.model
    data: dict[str, Any] = report.to_dict() | {
        "model": model,
        "split": args.split,
        # Rescored replies keep the decoding of the run that made them.
        "decoding": None if args.replies else "free" if args.free_decoding else "constrained",
        "repair": not args.no_repair,
    }
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    if args.json:
        console.print(json.dumps(data, indent=2))
    else:
        console.print(json.dumps({"n": report.n, **report.metrics, "by_kind": report.by_kind}))
    return EXIT_OK


def _rescore(args: argparse.Namespace) -> tuple[Any, str]:
    from langchain_complm.training.evaluate import eval_examples, rescore_replies

    try:
        with open(args.replies, encoding="utf-8") as f:
            kept = json.load(f)
        replies = {row["query"]: row["reply"] for row in kept["rows"]}
    except OSError as exc:
        raise UsageError(f"--replies {args.replies}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"--replies {args.replies}: not a report with kept replies (write one with --report)"
        ) from None
    examples = eval_examples(
        args.split, args.n, args.seed or 0, max_chars=args.max_chars, data_dir=args.data_dir
    )
    try:
        report = rescore_replies(replies, examples, repair=not args.no_repair)
        return report, kept.get("model", args.replies)
    except ValueError as exc:
        raise UsageError(f"--replies {args.replies}: {exc}") from None


def _add_training_arguments(parser: argparse.ArgumentParser, out: str | None, n_train: int) -> None:
    """The fine-tuning arguments shared by train-generator and train-expert."""
    parser.add_argument(
        "--base",
        metavar="PATH_OR_ID",
        default=EMBEDDED_CHAT_MODEL,
        help=f"base causal LM: hub id, local folder, or {EMBEDDED_CHAT_MODEL} (default)",
    )
    parser.add_argument(
        "--n-train", type=int, default=n_train, metavar="N", help="training examples"
    )
    parser.add_argument("--epochs", type=float, default=1.0, metavar="E")
    parser.add_argument(
        "--lora-r", type=int, default=16, metavar="R", help="LoRA rank; 0: full fine-tune"
    )
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    parser.add_argument("--micro-batch-size", type=int, default=1, help="sequences per forward")
    parser.add_argument("--max-seq-len", type=int, default=1024, metavar="TOKENS")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N")
    parser.add_argument(
        "--stop-at-step",
        type=int,
        default=None,
        metavar="N",
        help="end early at step N of the run's schedule and save the model (resumable)",
    )
    parser.add_argument(
        "--init-from",
        metavar="PATH_OR_ID",
        default=None,
        help="start from this trained LoRA adapter (continued fine-tuning), "
        "e.g. embedded:subquery-generator",
    )
    parser.add_argument("--save-every", type=int, default=50, metavar="STEPS")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data and its order (train-generator: --split-seed fixes the split)",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="benchmark data folder, or 'hub'")
    parser.add_argument("--device", help="cpu, cuda:0, ... (default: CUDA when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--out", default=out, metavar="DIR", help=f"output folder (default {out or 'per run'})"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoint if present"
    )


def _train_config(args: argparse.Namespace, out: str, **extra: Any) -> Any:
    """The :class:`~langchain_complm.training.train.TrainConfig` of the training arguments."""
    if args.n_train < 1 or args.epochs <= 0 or args.lora_r < 0:
        raise UsageError("--n-train and --epochs must be positive and --lora-r at least 0")
    if args.stop_at_step is not None and args.stop_at_step < 1:
        raise UsageError(f"--stop-at-step must be at least 1, got {args.stop_at_step}")
    if args.init_from and args.lora_r == 0:
        raise UsageError("--init-from continues a LoRA adapter: it needs --lora-r above 0")
    from langchain_complm.training.train import TrainConfig

    return TrainConfig(
        base=args.base,
        out=out,
        n_train=args.n_train,
        data_dir=args.data_dir,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        lr=args.lr,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        max_seq_len=args.max_seq_len,
        init_from=args.init_from,
        max_steps=args.max_steps,
        stop_at_step=args.stop_at_step,
        save_every=args.save_every,
        device=args.device,
        threads=args.threads,
        progress=not args.quiet,
        **extra,
    )


def _expert_name(name: str) -> str:
    from langchain_complm.training.experts import EXPERT_DOMAINS

    if name not in EXPERT_DOMAINS:
        raise UsageError(f"unknown expert {name!r}: choose from {', '.join(EXPERT_DOMAINS)}")
    return name


def _configure_train_expert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "expert",
        metavar="EXPERT",
        help="math, medicine, science, law, computer_science or history",
    )
    _add_training_arguments(parser, out=None, n_train=800)
    parser.add_argument(
        "--eval-n",
        type=int,
        default=100,
        metavar="N",
        help="then evaluate expert and base on N held-out (dev) questions; 0: skip",
    )


def run_train_expert(args: argparse.Namespace, console: Console) -> int:
    """``complm train-expert``: fine-tune a LoRA domain expert, then compare it with the
    base on held-out questions (``<out>/expert_eval.json``)."""
    from langchain_complm.training.experts import train_expert
    from langchain_complm.training.train import finished_run

    expert = _expert_name(args.expert)
    config = _train_config(args, args.out or f"runs/expert-{expert}")
    metadata = finished_run(config)
    if metadata is None:
        console.progress(f"Training the {expert} expert on {config.base} -> {config.out}")
        metadata = train_expert(expert, config, resume=args.resume).metadata
    else:
        console.progress(f"{config.out} is already trained with these settings")
    summary = {k: metadata[k] for k in ("steps", "final_loss", "train_seconds")}
    console.progress(f"saved {config.out} ({json.dumps(summary)})")
    if args.eval_n > 0:
        # Seed and base: the run's own, from its metadata.
        _evaluate_expert(args, console, config.out, args.eval_n, seed=None, base=None, report=None)
    else:
        console.print(json.dumps(summary))
    return EXIT_OK


def _configure_eval_expert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="DIR", help="a train-expert output folder")
    parser.add_argument("--n", type=int, default=100, help="held-out (dev) questions")
    parser.add_argument("--seed", type=int, default=None, help="default: the training seed")
    parser.add_argument("--base", default=None, help="default: the base it was trained on")
    parser.add_argument("--device", help="cpu, cuda:0, ...")
    parser.add_argument("--data-dir", metavar="DIR", help="benchmark data folder, or 'hub'")
    parser.add_argument(
        "--report", metavar="JSON", help="default: <model>/expert_eval.json, with the replies"
    )


def run_eval_expert(args: argparse.Namespace, console: Console) -> int:
    """``complm eval-expert``: accuracy of a trained expert and of its base on the same
    held-out questions of its domain."""
    _evaluate_expert(
        args, console, args.model, args.n, seed=args.seed, base=args.base, report=args.report
    )
    return EXIT_OK


def _evaluate_expert(
    args: argparse.Namespace,
    console: Console,
    model: str,
    n: int,
    *,
    seed: int | None,
    base: str | None,
    report: str | None,
) -> None:
    """Evaluate expert ``model`` and its base on ``n`` held-out questions; print the
    accuracies and write the report (default ``<model>/expert_eval.json``, with the replies).
    ``args`` gives the device, the data folder and the token cap."""
    from pathlib import Path

    from langchain_complm.models.trained import read_metadata
    from langchain_complm.training.experts import (
        evaluate_expert,
        heldout_records,
        load_expert_and_base,
    )

    metadata = read_metadata(model)
    expert = _expert_name(str(metadata.get("expert")))
    seed = seed if seed is not None else metadata.get("seed", 0)
    records = heldout_records(expert, n, seed, args.data_dir)
    console.progress(f"Evaluating {model} and its base on {len(records)} {expert} questions")
    models = load_expert_and_base(
        model, base=base, device=args.device, max_new_tokens=args.max_new_tokens
    )
    evaluation = evaluate_expert(models, expert, records)
    path = Path(report or Path(model) / "expert_eval.json")
    data = evaluation.to_dict() | {"model": str(model), "split": "dev", "seed": seed}
    path.write_text(json.dumps(data | {"rows": evaluation.rows}, indent=2) + "\n", "utf-8")
    console.print(json.dumps(data, indent=2) if args.json else json.dumps(data))


COMMANDS = (
    Command(
        name="train-generator",
        help="fine-tune a small LM into a Sub-query Generator (LoRA by default)",
        configure=_configure_train,
        run=run_train,
    ),
    Command(
        name="eval-generator",
        help="plan metrics of a trained Sub-query Generator on dev/test, or a learning curve",
        configure=_configure_eval,
        run=run_eval,
    ),
    Command(
        name="train-shape-router",
        help="fit the router that hands each question's shape to its generator adapter",
        configure=_configure_shape_router,
        run=run_shape_router,
    ),
    Command(
        name="train-expert",
        help="fine-tune a LoRA domain expert (math, medicine, science, ...) and compare it "
        "with its base on held-out questions",
        configure=_configure_train_expert,
        run=run_train_expert,
    ),
    Command(
        name="eval-expert",
        help="accuracy of a trained LoRA expert and of its base on held-out domain questions",
        configure=_configure_eval_expert,
        run=run_eval_expert,
    ),
)


__all__ = [
    "COMMANDS",
    "run_eval",
    "run_eval_expert",
    "run_shape_router",
    "run_train",
    "run_train_expert",
]
