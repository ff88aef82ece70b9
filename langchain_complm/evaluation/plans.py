"""Plan evaluation beyond the training distribution.

* **Held-out compound questions** (``data/heldout-compound.jsonl``, 126 questions written by
  hand for this purpose, not from the training templates or their vocabularies, each with a
  gold plan): independent parts, implicit references ("twice that number", "that organ",
  "between them"), comparisons, multi-hop chains in "the X of the Y of Z" phrasing, bridge
  comparisons, and single questions that must not be split.
* **Fresh held-out compound questions** (``data/heldout-compound-2.jsonl``, 62, the same
  kinds), written after the plan-repair rules of the seventeenth session and committed
  before any generator or rule had been run on them: the first set's gains partly come
  from rules written after reading its misses; this one measures the rules as they stood.
* **Multi-hop questions** of HotpotQA, MuSiQue and Bamboogle, of a benchmark split (the
  builder's test split by default; training may use the train split, never the same
  questions), with their kind read from their phrasing (:func:`multihop_kind`). They have no
  gold plan; :func:`plan_shape_ok` checks the plan's shape for its kind.

Shapes (deterministic, on the dependency graph only):

* ``chain``: at least two sub-queries, one final sub-query (nothing depends on it), every
  other one among its ancestors, and at least one dependency (a lookup feeds the next hop);
* ``comparison``: one final sub-query depending on at least two independent lookups, and
  when the question names its two items ("..., A or B?") each is looked up in a sub-query
  of its own (one that does not also name the other);
* ``bridge``: one final sub-query whose ancestors hold two chains of at least two hops with
  no sub-query in common (each item's related entity is found, then looked up);
* any other kind (``parallel``, ``reference``, ``single``): the gold plan's graph, up to
  renaming (the same number of sub-queries at each depth with the same numbers of parents
  and dependents).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict

from langchain_complm.decompose.phrasing import MultihopKind, comparison_items, multihop_kind
from langchain_complm.evaluation.metrics import normalize_answer
from langchain_complm.evaluation.multiexpertqa import Split, split_sources
from langchain_complm.evaluation.sources import DataLocation
from langchain_complm.plan import Plan, SubQuery

MULTIHOP_KINDS: tuple[MultihopKind, ...] = ("chain", "comparison", "bridge")

HELDOUT_FILE = "heldout-compound.jsonl"
FRESH_HELDOUT_FILE = "heldout-compound-2.jsonl"


class PlanExample(BaseModel):
    """A question to decompose, with its gold plan when one is known."""

    model_config = ConfigDict(frozen=True)

    query: str
    gold: Plan | None
    """None for multi-hop questions: only their shape is checked."""
    kind: str
    """``parallel``, ``chain`` or ``single`` on benchmark splits; ``reference``,
    ``comparison``, ``bridge`` too on the held-out and multi-hop sets."""
    source: str = ""
    """Where the question comes from (``heldout``, ``hotpotqa``, ``musique``, ...)."""


def heldout_examples(file: str = HELDOUT_FILE) -> list[PlanExample]:
    """The held-out compound questions of ``file`` (the 126 of the first set, or
    :data:`FRESH_HELDOUT_FILE`'s 62) with their gold plans, in file order."""
    text = resources.files("langchain_complm.evaluation").joinpath("data", file)
    examples = []
    for line in text.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        gold = Plan(
            query=row["query"],
            sub_queries=tuple(
                SubQuery(id=s["id"], question=s["question"], depends_on=tuple(s["depends_on"]))
                for s in row["sub_queries"]
            ),
        ).validate_dag()
        examples.append(
            PlanExample(query=row["query"], gold=gold, kind=row["kind"], source="heldout")
        )
    return examples


# --- multi-hop questions by phrasing ------------------------------------------------------------


def multihop_examples(
    n_per_kind: int,
    split: Split = "test",
    seed: int = 0,
    *,
    data_dir: DataLocation = None,
    kinds: Sequence[MultihopKind] = MULTIHOP_KINDS,
) -> list[PlanExample]:
    """Up to ``n_per_kind`` multi-hop questions of each kind, from one split of the
    benchmark builder's HotpotQA/MuSiQue/Bamboogle pool, in pool order (sources
    interleaved). MuSiQue and Bamboogle questions are compositional by construction: the
    ones not phrased as comparisons count as chains."""
    chosen: dict[str, list[PlanExample]] = {k: [] for k in kinds}
    for record in split_sources("general", split, seed, data_dir):
        kind = multihop_kind(record.question)
        if kind is None and record.source in {"musique", "bamboogle"}:
            kind = "chain"
        if kind in chosen and len(chosen[kind]) < n_per_kind:
            chosen[kind].append(
                PlanExample(query=record.question, gold=None, kind=kind, source=record.source)
            )
    return [example for kind in kinds for example in chosen[kind]]


# --- shapes -------------------------------------------------------------------------------------


def _depths(plan: Plan) -> dict[str, int]:
    return {sq_id: depth for depth, level in enumerate(plan.levels()) for sq_id in level}


def _ancestors(plan: Plan, sq_id: str) -> set[str]:
    seen: set[str] = set()
    stack = list(plan.by_id[sq_id].depends_on)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(plan.by_id[node].depends_on)
    return seen


def _sinks(plan: Plan) -> list[str]:
    used = {d for sq in plan.sub_queries for d in sq.depends_on}
    return [sq.id for sq in plan.sub_queries if sq.id not in used]


def _words(text: str) -> set[str]:
    return set(normalize_answer(text).split())


def _names(text: str, wanted: set[str]) -> bool:
    """Whether ``text`` holds at least half of ``wanted`` (an item's own words)."""
    return bool(wanted) and len(_words(text) & wanted) >= max(1, len(wanted) / 2)


def graph_signature(plan: Plan) -> Counter[tuple[int, int, int]]:
    """The plan's graph up to renaming: (depth, parents, dependents) of every sub-query."""
    depth = _depths(plan)
    return Counter(
        (depth[sq.id], len(sq.depends_on), len(plan.dependents(sq.id))) for sq in plan.sub_queries
    )


def plan_shape_ok(plan: Plan, kind: str, gold: Plan | None = None) -> bool:
    """Whether ``plan`` has the shape of its kind (see the module docstring); kinds other
    than chain, comparison and bridge compare with ``gold`` (False without one)."""
    sinks = _sinks(plan)
    if kind == "chain":
        if len(plan.sub_queries) < 2 or len(sinks) != 1:
            return False
        return len(_ancestors(plan, sinks[0])) == len(plan.sub_queries) - 1
    if kind == "comparison":
        if len(sinks) != 1:
            return False
        final = plan.by_id[sinks[0]]
        lookups = [plan.by_id[d] for d in final.depends_on if not plan.by_id[d].depends_on]
        if len(lookups) < 2:
            return False
        items = comparison_items(plan.query)
        if items is None:
            return True
        # Words both items share ("the Amazon River or the Mississippi River"), or every
        # lookup has ("When was the college ... founded?"), tell nothing about which item
        # a lookup asks.
        a, b = (_words(i) for i in items)
        frame = set.intersection(*(_words(s.question) for s in lookups))
        a, b = a - b - frame, b - a - frame
        return any(_names(s.question, a) and not _names(s.question, b) for s in lookups) and any(
            _names(s.question, b) and not _names(s.question, a) for s in lookups
        )
    if kind == "bridge":
        if len(sinks) != 1:
            return False
        parents = plan.by_id[sinks[0]].depends_on
        chains = [
            {p} | _ancestors(plan, p) for p in parents if plan.by_id[p].depends_on
        ]  # a parent that itself depends on a lookup ends a chain of two hops or more
        return any(not (x & y) for i, x in enumerate(chains) for y in chains[i + 1 :])
    return gold is not None and graph_signature(plan) == graph_signature(gold)


def examples_summary(examples: Sequence[PlanExample]) -> dict[str, Any]:
    """How many examples of each kind and source a set holds."""
    return {
        "n": len(examples),
        "by_kind": dict(sorted(Counter(e.kind for e in examples).items())),
        "by_source": dict(sorted(Counter(e.source for e in examples).items())),
    }


__all__ = [
    "FRESH_HELDOUT_FILE",
    "HELDOUT_FILE",
    "MULTIHOP_KINDS",
    "MultihopKind",
    "PlanExample",
    "comparison_items",
    "examples_summary",
    "graph_signature",
    "heldout_examples",
    "multihop_examples",
    "multihop_kind",
    "plan_shape_ok",
]
