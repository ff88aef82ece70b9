"""Plan quality of a Sub-query Generator on questions it was not trained on.

Generates once per decoding (``free``: the model writes its JSON as it was trained;
``constrained``: decoding held to the plan's JSON grammar) on the held-out compound
questions and on HotpotQA/MuSiQue/Bamboogle test-split questions by kind (``--sets`` adds
``multihop-dev``: the same from the dev split, a sample no repair rule was written for),
keeps every reply
in ``<out>/<decoding>-<set>.json`` (reused when present, so an interrupted run resumes and
a finished one only rescores), and scores each reply with and without plan repair. Prints
a Markdown table; ``--md FILE`` also writes it.

    python benchmarks/bench_plans.py --out runs/plans --md runs/plans/table.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from langchain_complm.training.evaluate import (
    eval_examples,
    evaluate_generator,
    rescore_replies,
)

SETS = ("heldout", "multihop")
DECODINGS = ("free", "constrained")
COLUMNS = ("json_valid", "count_match", "sub_query_f1", "edge_f1", "shape")


def replies_for(
    out: Path, decoding: str, split: str, examples: list[Any], generator: Any
) -> dict[str, str]:
    """The model's reply to each example: kept from an earlier run, or generated now."""
    path = out / f"{decoding}-{split}.json"
    if path.is_file():
        kept = json.loads(path.read_text())
        replies = {row["query"]: row["reply"] for row in kept["rows"]}
        if all(e.query in replies for e in examples):
            return replies
    model = generator.model_copy(update={"structured_output": decoding == "constrained"})
    started = time.perf_counter()
    report = evaluate_generator(
        model, examples, keep_replies=True, progress=lambda m: print(f"  {decoding} {split}: {m}")
    )
    data = report.to_dict() | {"decoding": decoding, "split": split}
    data["generate_seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(data, indent=2))
    return {row["query"]: row["reply"] for row in report.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:subquery-generator")
    parser.add_argument("--out", default="runs/plans", help="folder for the kept replies")
    parser.add_argument("--multihop-n", type=int, default=30, help="questions per kind")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--decodings", default=",".join(DECODINGS))
    parser.add_argument("--device", default=None)
    parser.add_argument("--md", default=None, help="also write the table to this file")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = None
    lines = [
        f"model: {args.model}",
        "",
        "| set | kind | n | decoding | repair | " + " | ".join(COLUMNS) + " |",
        "| --- | --- | ---: | --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " |",
    ]
    for split in args.sets.split(","):
        examples = eval_examples(split, args.multihop_n if "multihop" in split else 1000)
        for decoding in args.decodings.split(","):
            path = out / f"{decoding}-{split}.json"
            if generator is None and not path.is_file():
                from langchain_complm.models.trained import load_trained_generator

                generator = load_trained_generator(args.model, device=args.device)
            replies = replies_for(out, decoding, split, examples, generator)
            for repair in (False, True):
                report = rescore_replies(replies, examples, repair=repair)
                groups = [("all", report.n, report.metrics)] + [
                    (kind, sum(r["kind"] == kind for r in report.rows), metrics)
                    for kind, metrics in report.by_kind.items()
                ]
                for kind, n, metrics in groups:
                    cells = [f"{metrics[c]:.2f}" if c in metrics else "" for c in COLUMNS]
                    lines.append(
                        f"| {split} | {kind} | {n} | {decoding} | {'yes' if repair else 'no'} | "
                        + " | ".join(cells)
                        + " |"
                    )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.md:
        Path(args.md).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
