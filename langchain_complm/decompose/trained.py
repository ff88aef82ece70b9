"""The trained Sub-query Generator: a fine-tuned chat model that writes the plan JSON itself.

The model is trained on :data:`~langchain_complm.prompts.TRAINED_DECOMPOSE_PROMPT`, so at
inference it gets exactly that prompt. By default its decoding is held to the plan's grammar
(:func:`~langchain_complm.decompose.generator.plan_json_schema`, by structured output:
constrained decoding of a local model), which the compact format it learned already
follows, so a reply the model would have broken (an unescaped quote, a sub-query naming
itself, a cut-off loop) is still a plan. Loading the weights is the backend's job
(:func:`langchain_complm.models.trained.load_trained_generator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from langchain_complm.decompose.generator import SubQueryGenerator, plan_json_schema
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES
from langchain_complm.prompts import TRAINED_DECOMPOSE_PROMPT


def trained_generator(
    llm: BaseChatModel,
    *,
    max_sub_queries: int | None = None,
    constrained: bool = True,
    shape_router: Runnable[str, str] | None = None,
    shape_llms: Mapping[str, BaseChatModel] | None = None,
) -> SubQueryGenerator:
    """A :class:`SubQueryGenerator` over a model fine-tuned on the training format;
    ``constrained=False`` lets the model write its JSON freely, as it was trained. With a
    ``shape_router``, ``shape_llms`` are the models fine-tuned for the shapes it names
    (see :mod:`~langchain_complm.decompose.shapes`)."""
    options: dict[str, Any] = {"shape_router": shape_router, "shape_llms": dict(shape_llms or {})}
    if max_sub_queries is not None:
        options["max_sub_queries"] = max_sub_queries
    if constrained:
        options["plan_schema"] = plan_json_schema(max_sub_queries or DEFAULT_MAX_SUB_QUERIES)
    return SubQueryGenerator(
        llm=llm,
        prompt=TRAINED_DECOMPOSE_PROMPT,
        structured_output=constrained,
        name="TrainedSubQueryGenerator",
        **options,
    )


__all__ = ["trained_generator"]
