"""Loaders for the public question-answering sources the benchmarks are built from.

Every loader returns a tuple of :class:`SourceRecord` (one typed shape for all sources) and
reads either a local folder laid out like ``shared/data`` (see that folder's README) or,
for users with internet access, the upstream Hugging Face dataset (:data:`HUB_DATASETS`).

Where the data comes from (``data_dir``):

* a path: that folder;
* ``"hub"``, or the upstream dataset name of the source (e.g. ``"openai/gsm8k"``): the
  Hugging Face Hub, through ``datasets.load_dataset`` (``pip install datasets``);
* ``None``: the ``COMPLM_DATA_DIR`` environment variable, else ``<repo root>/../shared/data``
  when that folder exists.

Loaded sources are cached per (source, split, location), so repeated calls are free.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Domain = Literal["math", "medicine", "law", "computer_science", "physics", "history", "general"]
"""Knowledge domains; every domain but ``general`` stands for one expert of the benchmark."""

MedicalSource = Literal["medqa", "medmcqa", "pubmedqa", "mmlu"]
MultihopSource = Literal["hotpotqa", "musique", "bamboogle"]

DataLocation = str | os.PathLike[str] | None
"""A local data folder, ``"hub"`` or an upstream dataset name, or None for the default."""

HUB = "hub"
"""Pass as ``data_dir`` to load every source from its upstream Hugging Face dataset."""

HUB_DATASETS: dict[str, str] = {
    "gsm8k": "openai/gsm8k",
    "medqa": "GBaker/MedQA-USMLE-4-options",
    "medmcqa": "openlifescienceai/medmcqa",
    "pubmedqa": "qiaojin/PubMedQA",
    "mmlu": "cais/mmlu",
    "hotpotqa": "hotpotqa/hotpot_qa",
    "musique": "dgslibisey/MuSiQue",
    "bamboogle": "chiayewken/bamboogle",
}
"""Upstream Hugging Face dataset of each source."""

MEDICAL_MMLU_SUBJECTS: tuple[str, ...] = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
"""The six MMLU subjects in ``medical/mmlu.jsonl``."""

MMLU_DOMAIN_SUBJECTS: dict[Domain, tuple[str, ...]] = {
    "law": ("professional_law", "international_law", "jurisprudence"),
    "computer_science": (
        "college_computer_science",
        "high_school_computer_science",
        "computer_security",
        "machine_learning",
    ),
    "physics": ("college_physics", "high_school_physics", "conceptual_physics", "astronomy"),
    "history": (
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "prehistory",
    ),
}
"""MMLU subjects that stand for each benchmark domain."""

_SUBJECT_DOMAIN: dict[str, Domain] = {
    subject: domain for domain, subjects in MMLU_DOMAIN_SUBJECTS.items() for subject in subjects
}
_LETTERS = "ABCDEFGHIJ"


class SourceRecord(BaseModel):
    """One question of a public source, in the shape every benchmark builder consumes."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="Source name, e.g. 'gsm8k', 'medqa', 'mmlu', 'hotpotqa'.")
    id: str = Field(description="Stable id, unique across sources, e.g. 'gsm8k/test:12'.")
    question: str = Field(description="The question text, without the options.")
    answer: str = Field(
        description="Gold answer: the number for GSM8K, the correct option's text for "
        "multiple choice, the answer string otherwise."
    )
    options: dict[str, str] | None = Field(
        default=None, description="Multiple-choice options keyed by letter ('A', 'B', ...)."
    )
    answer_letter: str | None = Field(default=None, description="The correct option's letter.")
    domain: Domain | None = Field(default=None, description="Benchmark domain, if any.")
    subject: str | None = Field(default=None, description="MMLU subject, for MMLU questions.")
    hops: int | None = Field(
        default=None, description="Reasoning hops, for multi-hop sources that say so."
    )
    solution: str | None = Field(
        default=None, description="The worked solution, where the source gives one (GSM8K)."
    )

    @model_validator(mode="after")
    def _check_choice(self) -> SourceRecord:
        # A mismatched letter would silently corrupt every metric computed on the record.
        if (self.options is None) != (self.answer_letter is None):
            raise ValueError(f"{self.id}: options and answer_letter go together")
        if self.options is not None and self.options.get(self.answer_letter or "") != self.answer:
            raise ValueError(f"{self.id}: answer is not the text of option {self.answer_letter}")
        return self


# --- public loaders -------------------------------------------------------------------------


def load_gsm8k(
    split: Literal["train", "test"] = "test", data_dir: DataLocation = None
) -> tuple[SourceRecord, ...]:
    """GSM8K grade-school math problems; the answer is the number after ``#### ``."""
    return _load("gsm8k", split, _location(data_dir, "gsm8k"))


def load_medical(name: MedicalSource, data_dir: DataLocation = None) -> tuple[SourceRecord, ...]:
    """A medical multiple-choice source: MedQA-USMLE, MedMCQA, PubMedQA (yes/no/maybe, the
    abstract is part of the question) or the six medical MMLU subjects."""
    return _load(f"medical/{name}", "test", _location(data_dir, name))


def load_mmlu(
    subject: str, split: Literal["test", "dev"] = "test", data_dir: DataLocation = None
) -> tuple[SourceRecord, ...]:
    """One MMLU subject (e.g. ``"jurisprudence"``); ``dev`` is the 5-shot split."""
    return _load(f"mmlu/{subject}", split, _location(data_dir, "mmlu"))


def load_multihop(name: MultihopSource, data_dir: DataLocation = None) -> tuple[SourceRecord, ...]:
    """Multi-hop questions with their gold final answer (HotpotQA and MuSiQue dev sets,
    Bamboogle). The sources give no decomposition; ``hops`` is set where the source says
    (HotpotQA and Bamboogle are 2-hop, MuSiQue only from the Hub, where ids carry it)."""
    return _load(f"multihop/{name}", "test", _location(data_dir, name))


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local data folder: ``data_dir``, else ``$COMPLM_DATA_DIR``, else
    ``<repo root>/../shared/data`` when it exists.

    Raises:
        FileNotFoundError: when no folder is given and the default does not exist.
    """
    if data_dir is not None:
        return Path(data_dir)
    if env := os.environ.get("COMPLM_DATA_DIR"):
        return Path(env)
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    if default.is_dir():
        return default
    raise FileNotFoundError(
        "no benchmark data folder: pass data_dir, set COMPLM_DATA_DIR, or pass "
        f"data_dir={HUB!r} to download the upstream datasets"
    )


# --- dispatch -------------------------------------------------------------------------------


def _location(data_dir: DataLocation, hub_source: str) -> str:
    """A hashable cache key: ``"hub"`` or an absolute folder path."""
    if isinstance(data_dir, str) and data_dir in (HUB, HUB_DATASETS[hub_source]):
        return HUB
    return str(resolve_data_dir(data_dir).resolve())


@cache
def _load(source: str, split: str, location: str) -> tuple[SourceRecord, ...]:
    group, _, name = source.partition("/")
    if location == HUB:
        return tuple(_from_hub(group, name, split))
    root = Path(location)
    if group == "gsm8k":
        return tuple(_gsm8k(_jsonl(root / "gsm8k" / f"{split}.jsonl"), split))
    if group == "medical":
        return tuple(
            _medical(name, row, str(row["realidx"]))
            for row in _jsonl(root / "medical" / f"{name}.jsonl")
        )
    if group == "mmlu":
        with (root / "mmlu" / split / f"{name}_{split}.csv").open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return tuple(
            _mmlu(
                name,
                split,
                i,
                row["question"],
                [row[f"choice{c}"] for c in range(4)],
                int(row["answer"]),
            )
            for i, row in enumerate(rows)
        )
    if group == "multihop":
        file = {"hotpotqa": "hotpotqa_dev", "musique": "musique_dev"}.get(name, name)
        return tuple(
            _multihop(
                name,
                row["extra_info"]["index"],
                row["extra_info"]["question"],
                row["extra_info"]["answer"],
                None,
            )
            for row in _jsonl(root / "multihop" / f"{file}.jsonl")
        )
    raise ValueError(f"unknown source {source!r}")


def _from_hub(group: str, name: str, split: str) -> Iterable[SourceRecord]:
    """Upstream rows, mapped to the same record shape as the local copies. Ids follow the
    upstream order; the local MedMCQA and PubMedQA files are subsets of the upstream sets
    and medical MMLU ids differ, so Hub-built benchmarks draw from larger pools."""
    if group == "gsm8k":
        return _gsm8k(_hub_rows("gsm8k", "main", split), split)
    if group == "mmlu":
        rows = _hub_rows("mmlu", name, split)
        return [
            _mmlu(name, split, i, r["question"], r["choices"], r["answer"])
            for i, r in enumerate(rows)
        ]
    if group == "medical":
        return _medical_from_hub(name)
    if name == "hotpotqa":
        rows = _hub_rows("hotpotqa", "distractor", "validation")
        return [_multihop(name, i, r["question"], r["answer"], None) for i, r in enumerate(rows)]
    if name == "musique":
        rows = _hub_rows("musique", None, "validation")
        # MuSiQue ids start with the hop count: "2hop__...", "3hop1__...".
        return [
            _multihop(name, i, r["question"], r["answer"], int(r["id"][0]))
            for i, r in enumerate(rows)
        ]
    rows = _hub_rows("bamboogle", None, "test")
    return [_multihop(name, i, r["Question"], r["Answer"], None) for i, r in enumerate(rows)]


def _medical_from_hub(name: str) -> list[SourceRecord]:
    if name == "medqa":
        rows = _hub_rows("medqa", None, "test")
        return [_medical(name, row, str(i)) for i, row in enumerate(rows)]
    if name == "mmlu":
        return [
            _medical(
                name,
                {
                    "question": r["question"],
                    "options": _lettered(r["choices"]),
                    "answer_idx": _LETTERS[r["answer"]],
                    "subject": subject,
                },
                f"{subject}:{i}",
            )
            for subject in MEDICAL_MMLU_SUBJECTS
            for i, r in enumerate(_hub_rows("mmlu", subject, "test"))
        ]
    if name == "medmcqa":
        # The test split has no labels; the local copy is drawn from validation.
        rows = _hub_rows("medmcqa", None, "validation")
        return [
            _medical(
                name,
                {
                    "question": r["question"],
                    "options": _lettered((r["opa"], r["opb"], r["opc"], r["opd"])),
                    "answer_idx": "ABCD"[r["cop"]],
                },
                r["id"],
            )
            for r in rows
        ]
    # PubMedQA: the local copy (and the medagents benchmark) prefixes the question with the
    # abstract's paragraphs, one per line; the labelled set is a single "train" split.
    options = {"A": "yes", "B": "no", "C": "maybe"}
    letters = {text: letter for letter, text in options.items()}
    rows = _hub_rows("pubmedqa", "pqa_labeled", "train")
    return [
        _medical(
            name,
            {
                "question": "\n".join([*r["context"]["contexts"], r["question"]]),
                "options": options,
                "answer_idx": letters[r["final_decision"]],
            },
            str(r["pubid"]),
        )
        for r in rows
    ]


def _hub_rows(source: str, config: str | None, split: str) -> Iterable[Mapping[str, Any]]:
    try:
        from datasets import load_dataset
    except ImportError as e:  # optional: only online users need it
        raise ImportError(
            "loading benchmark sources from the Hugging Face Hub needs `pip install datasets`"
        ) from e
    return load_dataset(HUB_DATASETS[source], config, split=split)


# --- row parsers ----------------------------------------------------------------------------


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _gsm8k(rows: Iterable[Mapping[str, Any]], split: str) -> Iterable[SourceRecord]:
    for i, row in enumerate(rows):
        # The worked solution ends with "#### <number>"; numbers may carry thousands commas.
        number = row["answer"].rsplit("#### ", 1)[-1].strip().replace(",", "")
        yield SourceRecord(
            source="gsm8k",
            id=f"gsm8k/{split}:{i}",
            question=row["question"],
            answer=number,
            domain="math",
            solution=row["answer"],
        )


def _medical(name: str, row: Mapping[str, Any], native_id: str) -> SourceRecord:
    options = {letter: str(text) for letter, text in row["options"].items()}
    letter = row["answer_idx"]
    source = "mmlu-medical" if name == "mmlu" else name
    return SourceRecord(
        source=source,
        id=f"{source}:{native_id}",
        question=row["question"],
        answer=options[letter],
        options=options,
        answer_letter=letter,
        domain="medicine",
        subject=row.get("subject"),
    )


def _mmlu(
    subject: str, split: str, index: int, question: str, choices: Sequence[Any], answer: int
) -> SourceRecord:
    options = _lettered(choices)
    letter = _LETTERS[answer]
    return SourceRecord(
        source="mmlu",
        id=f"mmlu/{subject}/{split}:{index}",
        question=question,
        answer=options[letter],
        options=options,
        answer_letter=letter,
        domain=_SUBJECT_DOMAIN.get(subject),
        subject=subject,
    )


def _lettered(choices: Sequence[Any]) -> dict[str, str]:
    """Options keyed A, B, C, ... in order."""
    return dict(zip(_LETTERS, (str(c) for c in choices), strict=False))


def _multihop(name: str, index: int, question: str, answer: str, hops: int | None) -> SourceRecord:
    # HotpotQA and Bamboogle are 2-hop by construction; MuSiQue mixes 2 to 4 hops.
    known_hops = 2 if name in ("hotpotqa", "bamboogle") else hops
    return SourceRecord(
        source=name,
        id=f"{name}:{index}",
        question=question,
        answer=answer,
        domain="general",
        hops=known_hops,
    )
