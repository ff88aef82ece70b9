"""The process's one model cache: load_causal_lm shares the weights it loaded while they
are in use, keyed by everything that changes what is loaded."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from langchain_complm.models.huggingface import (
    ChatLocalHuggingFace,
    GenerationEngine,
    load_causal_lm,
)


def test_the_same_weights_are_loaded_once_and_share_an_engine(tiny_base: Path) -> None:
    model, tokenizer = load_causal_lm(str(tiny_base), device="cpu")
    again, same_tokenizer = load_causal_lm(str(tiny_base) + "/", device="cpu")
    assert again is model and same_tokenizer is tokenizer
    a = ChatLocalHuggingFace.from_model_id(str(tiny_base), device="cpu", max_new_tokens=4)
    b = ChatLocalHuggingFace.from_model_id(str(tiny_base), device="cpu", max_new_tokens=8)
    assert a.engine is b.engine is GenerationEngine.for_model(model, tokenizer)


def test_other_settings_are_other_entries(tiny_base: Path) -> None:
    model, _ = load_causal_lm(str(tiny_base), device="cpu")
    half, _ = load_causal_lm(str(tiny_base), device="cpu", torch_dtype="float16")
    assert half is not model and next(half.parameters()).dtype != next(model.parameters()).dtype


def test_an_entry_goes_with_its_model(tiny_base: Path) -> None:
    from langchain_complm.models import huggingface

    model, _ = load_causal_lm(str(tiny_base), device="cpu", torch_dtype="bfloat16")
    before = len(huggingface._loaded)
    del model
    gc.collect()
    assert len(huggingface._loaded) == before - 1
    fresh, _ = load_causal_lm(str(tiny_base), device="cpu", torch_dtype="bfloat16")
    assert fresh.training is False


def test_concurrent_loads_of_the_same_weights_load_once(tiny_base: Path) -> None:
    models: list[object] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        barrier.wait()
        models.append(load_causal_lm(str(tiny_base), device="cpu", torch_dtype="float64")[0])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(models) == 4 and all(m is models[0] for m in models)


def test_an_owner_that_frees_its_model_gets_its_own_copy(tiny_base: Path) -> None:
    from langchain_complm.models.pool import ModelPool

    shared, _ = load_causal_lm(str(tiny_base), device="cpu")
    own, _ = load_causal_lm(str(tiny_base), device="cpu", shared=False)
    assert own is not shared
    pool = ModelPool(10**9)
    pool.register("tiny", str(tiny_base), device="cpu")
    with pool.acquire("tiny") as lease:
        assert lease.model is not shared
    pool.unload("tiny")
    assert load_causal_lm(str(tiny_base), device="cpu")[0] is shared  # still loaded, usable
