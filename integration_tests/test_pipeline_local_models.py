"""The whole pipeline over real local transformers models and the real MiniLM router.

Experts are tiny random-weight Llamas saved to folders and loaded back with
``ChatLocalHuggingFace.from_model_id`` (the same code path as a hub id or a user's folder),
so every layer
runs for real: structural decomposition, MiniLM routing, the executor's tasks, the shared
micro-batching engine, and aggregation. The answers are gibberish; the plumbing is not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_complm import CompLLMOutput, Expert, create_comp_llm
from langchain_complm.decompose import StructuralSubQueryGenerator
from langchain_complm.models import ChatLocalHuggingFace
from langchain_complm.models.embedded import default_embeddings
from langchain_complm.models.testing import smollm2_tokenizer, tiny_llama

QUESTION = "What is 15% of 240? What are the common symptoms of iron-deficiency anemia?"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tokenizer = smollm2_tokenizer()
    folders = {}
    for seed, name in enumerate(("math", "medicine", "writer")):
        folder = tmp_path_factory.mktemp(name)
        tiny_llama(tokenizer, seed=seed).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


def build(model_dirs: dict[str, Path], mode: str = "superstep") -> object:
    experts = [
        Expert(
            name="math",
            llm=ChatLocalHuggingFace.from_model_id(str(model_dirs["math"]), max_new_tokens=8),
            description="Arithmetic, percentages and word problems.",
            examples=("What is 20% of 150?", "How many minutes are in 2 hours?"),
        ),
        Expert(
            name="medicine",
            llm=ChatLocalHuggingFace.from_model_id(str(model_dirs["medicine"]), max_new_tokens=8),
            description="Diseases, symptoms, drugs and treatments.",
            examples=("What are the symptoms of diabetes?", "Which drug treats malaria?"),
        ),
    ]
    writer = ChatLocalHuggingFace.from_model_id(str(model_dirs["writer"]), max_new_tokens=8)
    return create_comp_llm(
        experts,
        generator=StructuralSubQueryGenerator(),
        router=default_embeddings(),
        aggregator=writer,
        mode=mode,
    )


def test_pipeline_runs_every_stage_on_local_models(model_dirs: dict[str, Path]) -> None:
    out = CompLLMOutput.model_validate(build(model_dirs).invoke(QUESTION))
    assert [sq.question for sq in out.plan.sub_queries] == [
        "What is 15% of 240?",
        "What are the common symptoms of iron-deficiency anemia?",
    ]
    assert [sq.expert for sq in out.plan.sub_queries] == ["math", "medicine"]
    for result in out.results.values():
        assert result.status == "ok" and result.answer
        metadata = result.response_metadata
        assert metadata["completion_tokens"] <= 8 and metadata["batch_size"] >= 1
    assert out.answer and out.errors == {}
    assert out.timings["execute"] > 0


def test_modes_agree_on_local_models(model_dirs: dict[str, Path]) -> None:
    answers = {}
    for mode in ("superstep", "eager", "sequential"):
        out = CompLLMOutput.model_validate(build(model_dirs, mode).invoke(QUESTION))
        answers[mode] = ({k: r.answer for k, r in out.results.items()}, out.answer)
    # Greedy decoding on fixed weights: every schedule gives the same text.
    assert answers["superstep"] == answers["eager"] == answers["sequential"]
