"""MultiExpertQA-style compound benchmarks, built deterministically from public sources.

The paper's MultiExpertQA-P and MultiExpertQA-All are not public; these are equivalents:

* ``multiexpertqa-p``: compound questions of 2 or 3 independent parts, each from a different
  domain (math, medicine, law, computer science, physics, history), written as one question
  with a varied connective template. The gold plan has one sub-query per part and no edges.
* ``multiexpertqa-all``: those items mixed with dependent ones:

  - ``chain`` items: a GSM8K problem whose answer feeds a templated follow-up computation
    (exact gold answer), optionally with an independent part from another domain; the gold
    plan's follow-up sub-query uses the ``{qN}`` placeholder and depends on the problem;
  - ``multihop`` items: HotpotQA, MuSiQue and Bamboogle questions. Their sources give no
    decomposition, so the gold plan is ``None`` and only ``hops`` (when the source says) is
    known; there is a single part holding the whole question and its final answer.

Splits keep source questions disjoint: every source is shuffled with the seed and cut into
train/dev/test *before* composing, so a source question of a train item is never in a dev
or test item (of either dataset, with the same seed). Items are composed in order from a
seeded generator, so a smaller ``n`` gives a prefix of a larger one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from itertools import chain, zip_longest
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from langchain_complm.evaluation.sources import (
    HUB,
    MMLU_DOMAIN_SUBJECTS,
    DataLocation,
    Domain,
    SourceRecord,
    load_gsm8k,
    load_medical,
    load_mmlu,
    load_multihop,
    resolve_data_dir,
)
from langchain_complm.plan import Plan, SubQuery, braced_names

DatasetName = Literal["multiexpertqa-p", "multiexpertqa-all"]
Split = Literal["train", "dev", "test"]
ItemKind = Literal["parallel", "chain", "multihop"]
AnswerType = Literal["choice", "number", "text"]

EXPERT_DOMAINS: tuple[Domain, ...] = (
    "math",
    "medicine",
    "law",
    "computer_science",
    "physics",
    "history",
)
"""The domains the parts of compound questions are drawn from (one expert each)."""

SPLIT_FRACTIONS: tuple[tuple[Split, float], ...] = (("train", 0.6), ("dev", 0.1), ("test", 0.3))
"""Share of every source's questions that goes to each split."""

ALL_MIX: dict[ItemKind, float] = {"parallel": 0.4, "chain": 0.3, "multihop": 0.3}
"""Expected share of each item kind in ``multiexpertqa-all``."""

DEFAULT_MAX_PART_CHARS = 1500
"""Source questions (with options) longer than this are left out by default, so compound
questions stay readable and within small experts' context windows."""


class Part(BaseModel):
    """One gold part of a compound question: a sub-question with its gold answer."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Sub-query id in the gold plan ('q1', 'q2', ...).")
    question: str = Field(
        description="The sub-question without options; may hold a '{qN}' placeholder for "
        "the answer of the part it depends on."
    )
    answer: str = Field(description="Gold answer: a number, an option's text, or a string.")
    answer_type: AnswerType
    options: dict[str, str] | None = Field(default=None, description="Options by letter.")
    answer_letter: str | None = Field(default=None, description="The correct option's letter.")
    domain: Domain
    source: str = Field(description="Source dataset, or 'synthetic' for computed follow-ups.")
    source_id: str = Field(description="Id of the source question this part comes from.")
    depends_on: tuple[str, ...] = Field(default=(), description="Ids of parts this one needs.")

    @property
    def prompt(self) -> str:
        """The sub-question as an expert should see it: options listed under it."""
        if not self.options:
            return self.question
        return "\n".join([self.question, *(f"{k}) {v}" for k, v in self.options.items())])

    @property
    def gold_text(self) -> str:
        """The gold answer as text: ``"B) Bladder"`` for multiple choice."""
        return f"{self.answer_letter}) {self.answer}" if self.answer_letter else self.answer


class Item(BaseModel):
    """One benchmark item: a compound question, its gold parts and its gold plan."""

    model_config = ConfigDict(frozen=True)

    id: str
    dataset: DatasetName
    split: Split
    kind: ItemKind
    question: str = Field(description="The compound question, as a user would ask it.")
    parts: tuple[Part, ...] = Field(description="Gold parts, in order of appearance.")
    answer: str = Field(description="Gold final answer: the final parts' answers, by id.")
    gold_plan: Plan | None = Field(
        description="The gold decomposition as an executable plan; None when the source "
        "gives none (multihop items)."
    )
    hops: int | None = Field(
        description="Longest chain of dependent steps in the gold decomposition (1 for "
        "independent parts); for multihop items the source's hop count, None if unknown."
    )

    @property
    def final_parts(self) -> tuple[Part, ...]:
        """Parts no other part depends on: what a final answer must contain."""
        return _final_parts(self.parts)

    @property
    def domains(self) -> tuple[Domain, ...]:
        """Domain of each part, in order."""
        return tuple(part.domain for part in self.parts)


# --- public API -----------------------------------------------------------------------------


def build_dataset(
    name: DatasetName,
    split: Split,
    n: int,
    seed: int = 0,
    data_dir: DataLocation = None,
    max_part_chars: int | None = DEFAULT_MAX_PART_CHARS,
) -> list[Item]:
    """Build ``n`` items of a MultiExpertQA-style benchmark split, deterministically.

    Args:
        name: ``"multiexpertqa-p"`` (independent parts) or ``"multiexpertqa-all"`` (also
            dependent chains and multi-hop questions).
        split: ``"train"``, ``"dev"`` or ``"test"``; source questions never cross splits.
        n: number of items.
        seed: fixes the source splits and the composition.
        data_dir: local data folder, ``"hub"`` for the upstream datasets, or None for
            ``$COMPLM_DATA_DIR`` / ``<repo root>/../shared/data``.
        max_part_chars: leave out source questions (with options) longer than this.

    Raises:
        ValueError: when the split has too few source questions left for ``n`` items.
    """
    location = data_dir if data_dir == HUB else str(resolve_data_dir(data_dir).resolve())
    pools = _split_pools(split, seed, location, max_part_chars)
    draw = _Drawer({domain: iter(records) for domain, records in pools.items()}, split)
    rng = random.Random(f"{name}:{split}:{seed}")
    kinds: list[ItemKind] = list(ALL_MIX)
    items = []
    for index in range(n):
        kind: ItemKind = (
            "parallel"
            if name == "multiexpertqa-p"
            else rng.choices(kinds, weights=[ALL_MIX[k] for k in kinds])[0]
        )
        item_id = f"{name}/{split}/{seed}/{index:05d}"
        if kind == "parallel":
            question, parts, hops = _compose_parallel(rng, draw)
        elif kind == "chain":
            question, parts, hops = _compose_chain(rng, draw)
        else:
            question, parts, hops = _compose_multihop(draw)
        items.append(
            Item(
                id=item_id,
                dataset=name,
                split=split,
                kind=kind,
                question=question,
                parts=parts,
                answer=_final_answer(parts),
                gold_plan=None if kind == "multihop" else _gold_plan(question, parts),
                hops=hops,
            )
        )
    return items


@cache
def _split_pools(
    split: Split, seed: int, location: str, max_part_chars: int | None
) -> dict[Domain, tuple[SourceRecord, ...]]:
    """The source questions of one split, per domain (``general`` holds multi-hop ones).

    Each source (or MMLU subject) is deduplicated within its domain, shuffled with ``seed``
    and cut by :data:`SPLIT_FRACTIONS`; a domain's pool interleaves its sources round-robin
    so that no large source (MedMCQA, professional law) crowds out the others. Over-long
    questions, and the few whose braces would read as plan placeholders, are dropped after
    the cut, so the split of a question never depends on ``max_part_chars``.
    """
    pools = {}
    for domain, sources in _domain_sources(location).items():
        seen: set[str] = set()
        per_source = []
        for key, records in sources:
            # The same question appears under several ids (college and high-school physics
            # share some); kept twice, it could land in two splits.
            unique = []
            for record in records:
                if (dedup_key := _dedup_key(record)) not in seen:
                    seen.add(dedup_key)
                    unique.append(record)
            random.Random(f"{key}:{seed}").shuffle(unique)
            per_source.append(
                [r for r in _split_slice(unique, split) if _usable(r, max_part_chars)]
            )
        pools[domain] = tuple(
            r for r in chain.from_iterable(zip_longest(*per_source)) if r is not None
        )
    return pools


def split_sources(
    domain: Domain,
    split: Split,
    seed: int = 0,
    data_dir: DataLocation = None,
    max_part_chars: int | None = DEFAULT_MAX_PART_CHARS,
) -> tuple[SourceRecord, ...]:
    """The source questions of one domain in one split, as :func:`build_dataset` draws
    them, in its order (``"general"``: the HotpotQA, MuSiQue and Bamboogle questions).
    Questions never cross splits, so training on ``"train"`` (a domain expert, the
    generator) and evaluating on ``"dev"`` or ``"test"`` share none."""
    location = data_dir if data_dir == HUB else str(resolve_data_dir(data_dir).resolve())
    return _split_pools(split, seed, location, max_part_chars)[domain]


def save_items(items: Iterable[Item], path: str | os.PathLike[str]) -> None:
    """Write items as JSON Lines, one item per line."""
    with Path(path).open("w", encoding="utf-8") as f:
        f.writelines(item.model_dump_json() + "\n" for item in items)


def load_items(path: str | os.PathLike[str]) -> list[Item]:
    """Read items written by :func:`save_items`."""
    with Path(path).open(encoding="utf-8") as f:
        return [Item.model_validate_json(line) for line in f if line.strip()]


# --- source pools ---------------------------------------------------------------------------


def _domain_sources(
    location: str,
) -> dict[Domain, list[tuple[str, Sequence[SourceRecord]]]]:
    """(key, records) of every source, by domain, in a fixed order."""
    sources: dict[Domain, list[tuple[str, Sequence[SourceRecord]]]] = {
        "math": [("gsm8k/test", load_gsm8k("test", location))],
        "medicine": [
            (name, load_medical(name, location)) for name in ("medqa", "medmcqa", "pubmedqa")
        ],
    }
    for domain, subjects in MMLU_DOMAIN_SUBJECTS.items():
        sources[domain] = [(f"mmlu/{s}", load_mmlu(s, "test", location)) for s in subjects]
    sources["general"] = [
        (name, load_multihop(name, location)) for name in ("bamboogle", "hotpotqa", "musique")
    ]
    return sources


def _split_slice(records: list[SourceRecord], split: Split) -> list[SourceRecord]:
    start = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        if name == split:
            return records[round(start * len(records)) : round((start + fraction) * len(records))]
        start += fraction
    raise ValueError(f"unknown split {split!r}")


def _dedup_key(record: SourceRecord) -> str:
    # The stem alone: MMLU repeats some questions with reworded or reordered options.
    return " ".join(record.question.lower().split())


def _usable(record: SourceRecord, max_part_chars: int | None) -> bool:
    prompt = part_from_record("q1", record).prompt
    if max_part_chars is not None and len(prompt) > max_part_chars:
        return False
    # Questions with braces such as "{PB}" stay out, as when braces read as placeholders:
    # the splits are the ones the recorded results were measured on.
    return not braced_names(prompt)


class _Drawer:
    """Takes the next unused source question of a domain, failing loudly when none is left."""

    def __init__(self, pools: dict[Domain, Iterator[SourceRecord]], split: Split) -> None:
        self._pools = pools
        self._split = split

    def __call__(self, domain: Domain) -> SourceRecord:
        record = next(self._pools[domain], None)
        if record is None:
            raise ValueError(
                f"the {self._split!r} split has run out of {domain} questions; ask for fewer "
                "items or raise max_part_chars"
            )
        return record


# --- composition ----------------------------------------------------------------------------

_NUMBER_WORDS = {2: "two", 3: "three"}
_ALL_WORDS = {2: "both", 3: "all three"}
_ORDINALS = ("First", "Second", "Third")

# (header, line per part): ways to ask several questions at once. Fields: {n} "two"/"three",
# {all} "both"/"all three", {i} 1-based position, {ordinal} "First", ..., {text} the part.
_CONNECTIVES: tuple[tuple[str, str], ...] = (
    ("Please answer {all}:", "({i}) {text}"),
    ("I have {n} questions.", "{ordinal}, {text}"),
    ("Answer the following {n} questions.", "Question {i}: {text}"),
    ("Here are {n} unrelated questions; answer each of them.", "{i}. {text}"),
    ("Could you help me with {n} things?", "{ordinal}: {text}"),
)

# Follow-up computations on a GSM8K answer x, with parameters a in 2..9 and b in 1..20.
# Only integer operations, so the gold answer is exact.
_FOLLOW_UPS: tuple[tuple[str, Callable[[int, int, int], int]], ...] = (
    ("multiply that result by {a} and subtract {b}", lambda x, a, b: x * a - b),
    ("add {b} to that result and multiply the sum by {a}", lambda x, a, b: (x + b) * a),
    (
        "subtract {b} from that result and multiply the difference by {a}",
        lambda x, a, b: (x - b) * a,
    ),
    ("multiply that result by {a} and add {b}", lambda x, a, b: x * a + b),
)
_FOLLOW_UP_LEADS = ("Then", "After that,", "Next,", "Finally,")

_Composed = tuple[str, tuple[Part, ...], int | None]


def _compose_parallel(rng: random.Random, draw: _Drawer) -> _Composed:
    k = rng.choice((2, 3))
    domains = rng.sample(EXPERT_DOMAINS, k)
    parts = tuple(part_from_record(f"q{i}", draw(domain)) for i, domain in enumerate(domains, 1))
    return _join(rng, [p.prompt for p in parts]), parts, 1


def _compose_chain(rng: random.Random, draw: _Drawer) -> _Composed:
    """A GSM8K problem and a follow-up on its answer, sometimes beside an independent part."""
    other = rng.choice(EXPERT_DOMAINS[1:]) if rng.random() < 0.5 else None
    other_first = other is not None and rng.random() < 0.5
    first = 2 if other_first else 1
    problem = part_from_record(f"q{first}", draw("math"))
    template, compute = rng.choice(_FOLLOW_UPS)
    a, b = rng.randint(2, 9), rng.randint(1, 20)
    instruction = template.format(a=a, b=b)
    follow_up = Part(
        id=f"q{first + 1}",
        question=f"A previous step found the result {{{problem.id}}}. Now {instruction}. "
        "What number do you get?",
        answer=str(compute(int(problem.answer), a, b)),
        answer_type="number",
        domain="math",
        source="synthetic",
        source_id=f"{problem.source_id}#follow-up",
        depends_on=(problem.id,),
    )
    chained = (
        f"{problem.question} {rng.choice(_FOLLOW_UP_LEADS)} {instruction}. What number do you get?"
    )
    if other is None:
        return chained, (problem, follow_up), 2
    independent = part_from_record("q1" if other_first else "q3", draw(other))
    texts = [independent.prompt, chained] if other_first else [chained, independent.prompt]
    parts = (independent, problem, follow_up) if other_first else (problem, follow_up, independent)
    return _join(rng, texts), parts, 2


def _compose_multihop(draw: _Drawer) -> _Composed:
    record = draw("general")
    return record.question, (part_from_record("q1", record),), record.hops


def part_from_record(part_id: str, record: SourceRecord) -> Part:
    """``record`` as the part ``part_id`` of an item: its answer type follows the source
    (choice with options, number for GSM8K, else text)."""
    answer_type: AnswerType = (
        "choice" if record.options else "number" if record.source == "gsm8k" else "text"
    )
    return Part(
        id=part_id,
        question=record.question,
        answer=record.answer,
        answer_type=answer_type,
        options=record.options,
        answer_letter=record.answer_letter,
        domain=record.domain or "general",
        source=record.source,
        source_id=record.id,
    )


def _join(rng: random.Random, texts: Sequence[str]) -> str:
    header, line = rng.choice(_CONNECTIVES)
    k = len(texts)
    lines = [
        line.format(i=i, ordinal=_ORDINALS[i - 1], text=text) for i, text in enumerate(texts, 1)
    ]
    return "\n".join([header.format(n=_NUMBER_WORDS[k], all=_ALL_WORDS[k]), *lines])


def _final_parts(parts: Sequence[Part]) -> tuple[Part, ...]:
    needed = {dep for part in parts for dep in part.depends_on}
    return tuple(part for part in parts if part.id not in needed)


def _final_answer(parts: Sequence[Part]) -> str:
    final = _final_parts(parts)
    if len(final) == 1:
        return final[0].gold_text
    return "\n".join(f"{part.id}: {part.gold_text}" for part in final)


def _gold_plan(question: str, parts: Sequence[Part]) -> Plan:
    return Plan(
        query=question,
        sub_queries=tuple(
            SubQuery(id=part.id, question=part.prompt, depends_on=part.depends_on) for part in parts
        ),
    ).validate_dag()
