"""Grammar-constrained decoding for local transformers models: replies that follow a JSON
schema by construction.

The schema is compiled by `llguidance <https://github.com/guidance-ai/llguidance>`_ (one of
vLLM's structured-output backends; a single wheel with no dependencies): at every step a
matcher per row says which tokens keep the reply a prefix of a valid document, and a
logits processor sets every other token's score to ``-inf``. Greedy decoding then picks the
model's best *allowed* token, so a model that already writes valid JSON writes the same
reply, and one that would not is steered back into the grammar. Once the document is
complete only the end-of-turn token is allowed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from llguidance._lib import JsonCompileOptions

JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False}
"""Compact JSON (no whitespace between tokens): what the trained generator was taught, and
no room for a small model to loop on blank lines."""


def schema_text(schema: dict[str, Any] | str) -> str:
    """A schema as compact JSON text, the form requests carry (equal schemas batch
    together). Keys keep their order: llguidance generates properties in schema order."""
    value = json.loads(schema) if isinstance(schema, str) else schema
    return json.dumps(value, separators=(",", ":"))


@lru_cache(maxsize=64)
def compile_schema(text: str) -> str:
    """The llguidance grammar of a JSON schema (canonical text).

    Raises:
        ImportError: llguidance is not installed.
        ValueError: the schema is not one llguidance can compile; the message says why.
    """
    try:
        import llguidance
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise ImportError(
            "grammar-constrained decoding needs llguidance: pip install llguidance"
        ) from exc
    grammar = llguidance.LLMatcher.grammar_from_json_schema(text, defaults=JSON_OPTIONS)
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error:
        raise ValueError(f"cannot constrain decoding to this JSON schema: {error}")
    return grammar


def ll_tokenizer(tokenizer: Any, end_ids: frozenset[int]) -> Any:
    """llguidance's view of a fast Hugging Face tokenizer (about 0.6 s for 49k tokens: build
    once per model). ``end_ids`` are the tokens that may end a complete document.

    Raises:
        ValueError: the tokenizer is not a fast (Rust) tokenizer.
    """
    import llguidance.hf

    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "grammar-constrained decoding needs a fast tokenizer; "
            f"{type(tokenizer).__name__} is not one"
        )
    return llguidance.hf.from_tokenizer(tokenizer, eos_token=sorted(end_ids))


class GrammarLogitsProcessor:
    """A transformers logits processor that keeps every row of a batch inside a grammar.

    One matcher per row follows the tokens the row generates after the prompt
    (``prompt_width`` columns, left-padded). A row that has ended (an end token) is left
    alone: ``generate`` pads it from then on.
    """

    def __init__(
        self,
        tokenizer: Any,
        grammar: str,
        batch_size: int,
        prompt_width: int,
        end_ids: frozenset[int],
    ) -> None:
        import llguidance

        self._matchers = [llguidance.LLMatcher(tokenizer, grammar) for _ in range(batch_size)]
        for matcher in self._matchers:
            if matcher.is_error():
                raise ValueError(f"cannot constrain decoding: {matcher.get_error()}")
        self._prompt_width = prompt_width
        self._end_ids = end_ids
        self._done = [False] * batch_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        if input_ids.shape[1] > self._prompt_width:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self._done[row]:
                    continue
                if token in self._end_ids:
                    self._done[row] = True
                else:
                    # The token was allowed by the last mask, so it is always accepted.
                    self._matchers[row].consume_token(token)
        vocab = scores.shape[1]
        allowed = np.ones((len(self._matchers), vocab), dtype=bool)
        for row, matcher in enumerate(self._matchers):
            if self._done[row]:
                continue
            bits = np.unpackbits(
                np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little"
            )
            allowed[row] = False
            width = min(vocab, bits.size)
            allowed[row, :width] = bits[:width].astype(bool)
            if not allowed[row].any():  # cannot happen with a valid grammar; end the row
                allowed[row, sorted(self._end_ids)] = True
        mask = torch.from_numpy(allowed).to(scores.device)
        return scores.masked_fill(~mask, float("-inf"))
