"""Experts: a named LLM runnable plus the profile the router matches sub-queries against."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, ClassVar

from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RouteProfile(BaseModel):
    """Something the router can send a sub-query to, described by text: an expert, or a
    category of experts (two-step routing). Its profile texts are embedded as documents."""

    model_config = ConfigDict(frozen=True)

    noun: ClassVar[str] = "route"
    """What this kind of route is called in error messages."""

    name: str = Field(description="Unique name, e.g. 'math'.")
    description: str = Field(default="", description="One or two sentences on the domain.")
    examples: tuple[str, ...] = Field(default=(), description="Example questions of the domain.")
    threshold: float | None = Field(
        default=None,
        description="Minimum router score for this route; under it the sub-query goes to "
        "the fallback expert. Set by hand or by the router's calibrate().",
    )

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"{cls.noun} name must not be empty")
        return value

    def profile_texts(self) -> list[str]:
        """The texts that represent this route to the router (the centroid strategy
        averages their embeddings)."""
        texts = [t for t in (self.description, *self.examples) if t.strip()]
        return texts or [self.name]


class ExpertProfile(RouteProfile):
    """What an expert is good at (the text the router compares sub-queries to) and what it
    costs (what two-step routing's selection policies compare)."""

    noun: ClassVar[str] = "expert"

    parameters: int | None = Field(
        default=None,
        ge=0,
        description="Model size in parameters, when known; an Expert defaults it to its "
        "model's own ``num_parameters`` when it reports one.",
    )
    cost: float | None = Field(
        default=None, ge=0, description="Relative cost of one call, in any unit, when known."
    )


class Expert(ExpertProfile):
    """An expert: a profile plus the runnable that answers its sub-queries.

    ``llm`` is any LangChain runnable that takes a string or messages, typically a
    ``BaseChatModel`` (a local HuggingFace model, an OpenAI-compatible server, ...).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    llm: Runnable[Any, Any] = Field(description="The model that answers sub-queries.")
    system_prompt: str | None = Field(
        default=None, description="Optional system message sent with every sub-query."
    )

    @model_validator(mode="after")
    def _parameters_from_model(self) -> Expert:
        # Local chat models know their size; served ones do not, and stay None.
        if self.parameters is None:
            try:
                size = getattr(self.llm, "num_parameters", None)
            except Exception:  # a lazy property that cannot be computed
                size = None
            if isinstance(size, int):
                object.__setattr__(self, "parameters", size)
        return self

    @property
    def profile(self) -> ExpertProfile:
        """The routing profile of this expert."""
        return ExpertProfile(**{f: getattr(self, f) for f in ExpertProfile.model_fields})


def check_experts(experts: Iterable[Expert]) -> dict[str, Expert]:
    """Key experts by name, rejecting an empty set and duplicate names.

    Raises:
        ValueError: if there are no experts or two share a name.
        TypeError: if an item is not an :class:`Expert`.
    """
    experts = list(experts)
    for expert in experts:
        if not isinstance(expert, Expert):
            raise TypeError(f"experts must be Expert instances, got {type(expert).__name__}")
    if not experts:
        raise ValueError("at least one expert is required")
    check_unique("expert", [e.name for e in experts])
    return {expert.name: expert for expert in experts}


def check_unique(noun: str, names: Sequence[str]) -> None:
    """Reject repeated names (of experts, categories, ...): every rule that says names are
    unique says it with these words.

    Raises:
        ValueError: naming every repeated name.
    """
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate {noun} names: {', '.join(duplicates)}")


def check_known(
    what: str,
    names: Iterable[str | None],
    known: Collection[str],
    *,
    error: type[Exception] = ValueError,
) -> None:
    """Reject expert names that are not among ``known``: the one rule behind "the fallback
    expert must exist", "a category's experts must exist", "a plan is routed to existing
    experts" and the like. ``what`` says where the names come from; ``None`` is no name.

    Raises:
        error: naming ``what``, every unknown name and the known ones.
    """
    unknown = [n for n in names if n is not None and n not in known]
    if unknown:
        noun = "expert" if len(unknown) == 1 else "experts"
        raise error(
            f"{what}: unknown {noun} {', '.join(map(repr, unknown))} (experts: {', '.join(known)})"
        )


__all__ = [
    "Expert",
    "ExpertProfile",
    "RouteProfile",
    "check_experts",
    "check_known",
    "check_unique",
]
