"""Domain experts as LoRA adapters: training data, fine-tuning and evaluation against the base.

An expert is trained on its domain's training questions with the generator's trainer
(:func:`~langchain_complm.training.train.fine_tune`), in the format the executor sends it at
inference: the expert's system prompt (the default experts' own), the question with its options
as a benchmark part shows them, and a short answer to learn:

* ``math``: GSM8K *train* problems; the target is the worked solution (calculator annotations
  removed) ending with ``The answer is N.``;
* ``medicine``: the benchmark builder's *train* split of MedQA, MedMCQA and PubMedQA;
* ``science`` (physics and astronomy), ``law``, ``computer_science``, ``history``: the
  builder's *train* split of the domain's MMLU subjects plus MMLU's ``dev`` questions of them;

the multiple-choice target is ``The answer is B) <option text>.``. Held-out evaluation uses the
builder's *dev* split of the domain (disjoint from train for the same seed; the benchmark's
test questions are never touched). The adapter loads as a LoRA expert over its base
(:mod:`langchain_complm.models.lora`; ``adapter:`` in a config file).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_complm.config import ModelSpec, load_chat_model, load_default_experts
from langchain_complm.evaluation.metrics import score_part
from langchain_complm.evaluation.multiexpertqa import part_from_record, split_sources
from langchain_complm.evaluation.sources import (
    MMLU_DOMAIN_SUBJECTS,
    DataLocation,
    Domain,
    SourceRecord,
    load_gsm8k,
    load_mmlu,
)
from langchain_complm.models.lora import LoraEngine
from langchain_complm.models.trained import read_metadata
from langchain_complm.training.train import Chat, TrainConfig, TrainResult, fine_tune

EXPERT_DOMAINS: dict[str, Domain] = {
    "math": "math",
    "medicine": "medicine",
    "science": "physics",
    "law": "law",
    "computer_science": "computer_science",
    "history": "history",
}
"""Trainable experts (the default experts' names) and the benchmark domain of each."""

FORMAT = "complm-expert"
"""``format`` of a trained expert's metadata file."""

_CALCULATOR = re.compile(r"<<[^>]*>>")


def expert_system_prompt(expert: str) -> str:
    """The system prompt the default expert ``expert`` answers with (training uses it)."""
    for spec in load_default_experts():
        if spec.name == expert:
            return spec.system_prompt or ""
    raise ValueError(f"no default expert named {expert!r}")


def _check_expert(expert: str) -> Domain:
    if expert not in EXPERT_DOMAINS:
        raise ValueError(
            f"unknown expert {expert!r}: trainable experts are {', '.join(EXPERT_DOMAINS)}"
        )
    return EXPERT_DOMAINS[expert]


def expert_target(record: SourceRecord) -> str:
    """The answer an expert learns to write for ``record``."""
    if record.options and record.answer_letter:
        return f"The answer is {record.answer_letter}) {record.answer}."
    if record.solution:
        steps = _CALCULATOR.sub("", record.solution.rsplit("####", 1)[0]).strip()
        return f"{steps}\nThe answer is {record.answer}."
    return record.answer


def expert_chat(system_prompt: str, record: SourceRecord, answer: str | None = None) -> Chat:
    """The conversation the executor sends an expert for ``record`` (plus ``answer``)."""
    chat = [{"role": "system", "content": system_prompt}] if system_prompt else []
    chat.append({"role": "user", "content": part_from_record("q1", record).prompt})
    if answer is not None:
        chat.append({"role": "assistant", "content": answer})
    return chat


def training_records(
    expert: str, n: int, seed: int = 0, data_dir: DataLocation = None
) -> list[SourceRecord]:
    """Up to ``n`` training questions of ``expert``'s domain (none from the benchmark's dev or
    test splits), in a fixed order."""
    domain = _check_expert(expert)
    if domain == "math":
        records: Sequence[SourceRecord] = load_gsm8k("train", data_dir)
    else:
        records = split_sources(domain, "train", seed, data_dir)
        if domain in MMLU_DOMAIN_SUBJECTS:
            extra = [r for s in MMLU_DOMAIN_SUBJECTS[domain] for r in load_mmlu(s, "dev", data_dir)]
            records = [*extra, *records]
    return list(records[:n])


def heldout_records(
    expert: str, n: int, seed: int = 0, data_dir: DataLocation = None
) -> list[SourceRecord]:
    """The first ``n`` questions of the domain's ``dev`` split: held out from training."""
    return list(split_sources(_check_expert(expert), "dev", seed, data_dir)[:n])


def train_expert(
    expert: str,
    config: TrainConfig,
    *,
    resume: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune a LoRA expert for ``expert`` (see the module docstring) into ``config.out``.

    ``config.n_train`` caps the training questions, ``config.seed`` fixes the split;
    ``resume`` continues from ``<out>/checkpoint``. ``config.data_path`` is not used.
    """
    system_prompt = expert_system_prompt(expert)
    records = training_records(expert, config.n_train, config.seed, config.data_dir)
    if not records:
        raise ValueError(f"no training questions for expert {expert!r}")
    chats = [expert_chat(system_prompt, r, expert_target(r)) for r in records]
    metadata = {
        "format": FORMAT,
        "version": 1,
        "expert": expert,
        "domain": EXPERT_DOMAINS[expert],
        "system_prompt": system_prompt,
        "data": {
            "questions": len(records),
            "seed": config.seed,
            "sources": sorted({r.source for r in records}),
        },
    }
    return fine_tune(
        config,
        chats,
        metadata=metadata,
        resume=resume,
        on_step=on_step,
        label=f"train-expert {expert}",
    )


EVAL_MAX_NEW_TOKENS: dict[str, int] = {"math": 320}
"""Generation cap when evaluating an expert (others: :data:`DEFAULT_EVAL_MAX_NEW_TOKENS`):
GSM8K solutions run to a few hundred tokens, a multiple-choice answer to a line."""
DEFAULT_EVAL_MAX_NEW_TOKENS = 64


def load_expert_and_base(
    adapter: str | Path,
    *,
    base: str | None = None,
    device: str | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """``{"base": ..., <expert>: ...}``: chat models over one LoRA engine, the base alone and
    the trained expert ``adapter`` (a :func:`train_expert` folder), for :func:`evaluate_expert`.

    ``base`` overrides the base model recorded in the adapter's metadata.
    """
    metadata = read_metadata(adapter)
    expert = metadata.get("expert")
    if metadata.get("format") != FORMAT or expert not in EXPERT_DOMAINS:
        raise ValueError(f"{adapter} is not a trained expert (complm train-expert output)")
    tokens = max_new_tokens or EVAL_MAX_NEW_TOKENS.get(expert, DEFAULT_EVAL_MAX_NEW_TOKENS)
    spec = ModelSpec(model_id=base or metadata["base_model"], device=device)
    engine = LoraEngine.from_chat_model(load_chat_model("base", spec))
    return {
        "base": engine.chat_model(None, max_new_tokens=tokens),
        expert: engine.chat_model(expert, adapter, max_new_tokens=tokens),
    }


@dataclass
class ExpertEvaluation:
    """Accuracy of each model on the same held-out questions of one expert's domain."""

    expert: str
    n: int
    accuracy: dict[str, float]
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Per question and model: the question id, the reply and whether it was correct."""

    def to_dict(self, *, with_rows: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "expert": self.expert,
            "n": self.n,
            "accuracy": self.accuracy,
            "seconds": round(self.seconds, 1),
        }
        return data | ({"rows": self.rows} if with_rows else {})


def evaluate_expert(
    models: Mapping[str, Any],
    expert: str,
    records: Sequence[SourceRecord],
    *,
    concurrency: int = 16,
) -> ExpertEvaluation:
    """Ask every model in ``models`` (name -> chat model) each of ``records``, prompted as the
    expert is (its system prompt, the question with its options), and score the replies with
    the benchmark's part rules (:func:`~langchain_complm.evaluation.metrics.score_part`).

    The calls run concurrently, so models over one LoRA engine (the base and the expert)
    share its batches.
    """
    system_prompt = expert_system_prompt(expert)
    started = time.perf_counter()
    jobs = [(name, record) for record in records for name in models]

    def ask(job: tuple[str, SourceRecord]) -> dict[str, Any]:
        name, record = job
        reply = str(models[name].invoke(expert_chat(system_prompt, record)).content)
        correct = score_part(part_from_record("q1", record), reply).correct
        return {"id": record.id, "model": name, "correct": correct, "reply": reply}

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        rows = list(pool.map(ask, jobs))
    accuracy = {
        name: sum(r["correct"] for r in rows if r["model"] == name) / max(1, len(records))
        for name in models
    }
    return ExpertEvaluation(
        expert=expert,
        n=len(records),
        accuracy=accuracy,
        seconds=time.perf_counter() - started,
        rows=rows,
    )


__all__ = [
    "DEFAULT_EVAL_MAX_NEW_TOKENS",
    "EVAL_MAX_NEW_TOKENS",
    "EXPERT_DOMAINS",
    "FORMAT",
    "ExpertEvaluation",
    "evaluate_expert",
    "expert_chat",
    "expert_system_prompt",
    "expert_target",
    "heldout_records",
    "load_expert_and_base",
    "train_expert",
    "training_records",
]
