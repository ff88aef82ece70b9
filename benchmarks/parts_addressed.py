"""Share of multi-part questions whose final answer has an entry for every part.

Reads the predictions that ``complm bench accuracy`` kept in a results folder and, for each
system, counts the items with two or more final parts whose answer holds a numbered entry
("1. ...", "(2) ...") for each of them: the form the enumerating aggregator writes, and the
one a monolithic model is asked for. It says whether every part was addressed, not whether
the entries are right (that is the benchmark's part accuracy).

    python benchmarks/parts_addressed.py runs/e2e/accuracy-multiexpertqa-p-test-s0 \
        --dataset multiexpertqa-p --n 50
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from langchain_complm.evaluation.multiexpertqa import build_dataset

_ENTRY = re.compile(r"(?m)^\s*\(?(\d{1,2})[.)]\s")


def addressed(answer: str, parts: int) -> bool:
    """Whether ``answer`` has numbered entries 1..parts, each at the start of a line."""
    numbers = {int(n) for n in _ENTRY.findall(answer or "")}
    return all(n in numbers for n in range(1, parts + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results folder of complm bench accuracy")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    items = {i.id: i for i in build_dataset(args.dataset, args.split, args.n, seed=args.seed)}
    print("| system | multi-part items | every part addressed | share |")
    print("| --- | ---: | ---: | ---: |")
    for path in sorted((args.results / "predictions").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        multi = [
            (row, len(items[row["item_id"]].final_parts))
            for row in rows
            if row["item_id"] in items and len(items[row["item_id"]].final_parts) >= 2
        ]
        ok = sum(addressed(row["answer"], parts) for row, parts in multi)
        share = f"{ok / len(multi):.0%}" if multi else "-"
        print(f"| {rows[0]['system'] if rows else path.stem} | {len(multi)} | {ok} | {share} |")


if __name__ == "__main__":
    main()
