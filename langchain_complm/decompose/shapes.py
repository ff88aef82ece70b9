"""Which decoder writes a question's plan: a router on the question's shape.

One small generator does not do every shape well. Trained on compound questions, it copies
the parts the user wrote (parallel parts, "... and what is twice that number?"); trained
further on multi-hop questions, it learns to write the hops a question only implies ("the
birthplace of the director of X": who directed X, then where was {q1} born) but starts
inventing hops after complete parts. A :class:`ShapeRouter` reads the question and names
its shape, so that a :class:`~langchain_complm.decompose.generator.SubQueryGenerator` can
hand each shape to the model (for a trained generator: the LoRA adapter) that writes it best.

The router is a logistic model over two views of the question: its words and word pairs
(TF-IDF, which sees the phrasing: "of the", "which ... or ...", "and what is") and its
sentence embedding (which sees what it asks about). It is fitted on training questions
(:func:`langchain_complm.training.shapes.fit_shape_router`), never on evaluation questions,
and, as in semantic-router, its threshold lives on the route: a question scoring at least
``threshold`` takes ``route``, any other ``default``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field

SHAPE_ROUTER_FORMAT = "complm-shape-router"

_TOKEN = re.compile(r"\w+|[?;,]")

_SAVED = ("route", "default", "threshold", "bias", "embedding_weights", "idf", "phrasing_weights")


def phrasing_counts(text: str) -> Counter[str]:
    """The words and adjacent word pairs of ``text`` (lowercased; ``?``, ``;`` and ``,``
    count as words: they separate a question's parts)."""
    tokens = _TOKEN.findall(text.lower())
    return Counter([*tokens, *(f"{a} {b}" for a, b in pairwise(tokens))])


def phrasing_features(text: str, idf: dict[str, float]) -> dict[str, float]:
    """``text``'s TF-IDF vector over the grams in ``idf`` (sublinear counts, unit length),
    as {gram: value}; grams outside ``idf`` are left out."""
    weighted = {
        gram: (1.0 + math.log(count)) * idf[gram]
        for gram, count in phrasing_counts(text).items()
        if gram in idf
    }
    norm = math.sqrt(sum(v * v for v in weighted.values())) or 1.0
    return {gram: v / norm for gram, v in weighted.items()}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


class ShapeRouter(RunnableSerializable[str, str]):
    """Names a question's shape: ``route`` when its score reaches ``threshold``, else
    ``default``.

    Example:
        .. code-block:: python

            router = ShapeRouter.from_file("shape_router.json", embeddings)
            router.invoke("Where was the director of Amadeus born?")  # 'multihop'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    embeddings: Embeddings
    """Embeds the question (the model the router was fitted with)."""
    idf: dict[str, float]
    """Inverse document frequency of each gram the router reads (:func:`phrasing_counts`)."""
    phrasing_weights: dict[str, float]
    """Weight of each gram's TF-IDF value."""
    embedding_weights: list[float]
    """Weight of each embedding dimension."""
    bias: float = 0.0
    route: str = "multihop"
    """The shape of a question that scores at least ``threshold``."""
    default: str = "compound"
    """The shape of every other question."""
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Probability of ``route`` at and above which a question takes it."""
    name: str | None = "ShapeRouter"

    def score(self, question: str, vector: list[float]) -> float:
        """Probability that ``question`` (with its embedding ``vector``) has ``route``'s
        shape.

        Raises:
            ValueError: ``vector`` has another dimension than the router was fitted on.
        """
        if len(vector) != len(self.embedding_weights):
            raise ValueError(
                f"the shape router was fitted on {len(self.embedding_weights)}-dimensional "
                f"embeddings, but its embeddings gave {len(vector)} dimensions: load it with "
                "the embedding model it names"
            )
        logit = self.bias + sum(
            value * self.phrasing_weights.get(gram, 0.0)
            for gram, value in phrasing_features(question, self.idf).items()
        )
        logit += sum(w * x for w, x in zip(self.embedding_weights, vector, strict=True))
        return 1.0 / (1.0 + math.exp(-logit))

    def _shape(self, question: str, vector: list[float]) -> str:
        return self.route if self.score(question, vector) >= self.threshold else self.default

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> str:
        def shape(question: str) -> str:
            return self._shape(question, self.embeddings.embed_query(question))

        return self._call_with_config(shape, input, config, run_type="chain", **kwargs)

    async def ainvoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> str:
        async def shape(question: str) -> str:
            return self._shape(question, await self.embeddings.aembed_query(question))

        return await self._acall_with_config(shape, input, config, run_type="chain", **kwargs)

    def to_dict(self, embeddings_name: str) -> dict[str, Any]:
        """What :meth:`from_dict` reads back; ``embeddings_name`` names the embedding model
        for whoever loads it."""
        return {
            "format": SHAPE_ROUTER_FORMAT,
            "version": 1,
            "embeddings": embeddings_name,
            # Six significant digits change no routing and halve the file.
            **_rounded(self.model_dump(include=set(_SAVED))),
        }

    def save(self, path: str | Path, embeddings_name: str) -> None:
        """Write the router as JSON (:meth:`to_dict`)."""
        Path(path).write_text(json.dumps(self.to_dict(embeddings_name)), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], embeddings: Embeddings) -> ShapeRouter:
        """The router :meth:`to_dict` wrote, embedding with ``embeddings``.

        Raises:
            ValueError: ``data`` is not a shape router.
        """
        if data.get("format") != SHAPE_ROUTER_FORMAT:
            raise ValueError(f"not a shape router (format {data.get('format')!r})")
        return cls(embeddings=embeddings, **{k: data[k] for k in _SAVED if k in data})

    @classmethod
    def from_file(cls, path: str | Path, embeddings: Embeddings) -> ShapeRouter:
        """The router saved at ``path`` (:meth:`save`).

        Raises:
            ValueError: the file is not a shape router (the message names it).
        """
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), embeddings)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


__all__ = ["SHAPE_ROUTER_FORMAT", "ShapeRouter", "phrasing_counts", "phrasing_features"]
