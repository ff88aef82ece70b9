"""Routing strategies: how embedded sub-queries are scored against the router's labels.

A strategy is fitted on labelled vectors (the router embeds its routes' profile texts and any
labelled examples as documents) and scores query vectors with one column per label, in the
order of the ``classes`` it was fitted with. Every strategy works on L2-normalized vectors.

* :class:`CentroidStrategy` (``centroid``): cosine similarity to each label's mean vector;
  fitted on profiles only, it is the router's original behaviour.
* :class:`KNNStrategy` (``knn``): the ``k`` most similar labelled vectors vote with their
  similarity; a label's score is the sum of its neighbours' similarities over ``k``.
* :class:`LinearHeadStrategy` (``head``): a softmax classifier (one linear layer) trained
  on the vectors with class-balanced cross-entropy; scores are probabilities.

Strategies are pydantic models, so a config file names one by ``kind`` with its settings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from typing_extensions import Self

StrategyKind = Literal["centroid", "knn", "head"]


class RoutingStrategy(BaseModel, ABC):
    """Scores query vectors against labels after :meth:`fit` on labelled vectors."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    score_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    """Bounds of the scores (what a threshold can usefully be)."""

    # Replaced whole by each fit, so a concurrent score sees one consistent state.
    _fitted: _Fitted | None = PrivateAttr(default=None)

    @property
    def classes(self) -> tuple[str, ...]:
        """The labels, in score-column order; empty until fitted."""
        return self._fitted.classes if self._fitted else ()

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._fitted is not None

    def fit(
        self, vectors: np.ndarray, labels: Sequence[str], classes: Sequence[str] | None = None
    ) -> Self:
        """Fit on ``vectors`` (one row per example) labelled by ``labels``.

        Args:
            classes: the labels in score-column order (default: sorted); each needs at
                least one example.

        Raises:
            ValueError: no examples, a count mismatch, a label outside ``classes``, or a
                class without examples.
        """
        matrix = normalize(np.asarray(vectors, dtype=np.float32))
        if matrix.ndim != 2 or not len(matrix):
            raise ValueError("fit needs at least one example vector")
        if len(labels) != len(matrix):
            raise ValueError(f"{len(matrix)} vectors but {len(labels)} labels")
        order = tuple(classes) if classes is not None else tuple(sorted(set(labels)))
        index = {label: i for i, label in enumerate(order)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(f"labels not among the classes: {', '.join(unknown)}")
        y = np.array([index[label] for label in labels])
        empty = [label for i, label in enumerate(order) if not (y == i).any()]
        if empty:
            raise ValueError(f"no examples for {', '.join(empty)}")
        self._fitted = _Fitted(order, self._fit(matrix, y, len(order)))
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of ``vectors`` (rows) against every class (columns).

        Raises:
            RuntimeError: the strategy is not fitted.
        """
        fitted = self._fitted
        if fitted is None:
            raise RuntimeError(f"the {self.kind} strategy is not fitted")
        matrix = normalize(np.asarray(vectors, dtype=np.float32))
        if not len(matrix):
            return np.zeros((0, len(fitted.classes)))
        return self._score(matrix, *fitted.arrays)

    @abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[Any, ...]:
        """The fitted state (arrays) that :meth:`_score` receives."""

    @abstractmethod
    def _score(self, x: np.ndarray, *state: Any) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class _Fitted:
    """A strategy's fitted state; compared by identity (it holds arrays)."""

    classes: tuple[str, ...]
    arrays: tuple[Any, ...]


class CentroidStrategy(RoutingStrategy):
    """Cosine similarity to each label's centroid (the normalized mean of its vectors)."""

    kind: Literal["centroid"] = "centroid"

    def _fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray]:
        return (normalize(np.stack([x[y == c].mean(axis=0) for c in range(n_classes)])),)

    def _score(self, x: np.ndarray, *state: Any) -> np.ndarray:
        (centroids,) = state
        return x @ centroids.T


class KNNStrategy(RoutingStrategy):
    """Similarity-weighted votes of the ``k`` nearest labelled vectors.

    A label's score is the sum of the cosine similarities of its examples among the ``k``
    nearest, divided by ``k``: 1 when all ``k`` neighbours are identical to the query and
    share the label, 0 for a label with no neighbour.
    """

    kind: Literal["knn"] = "knn"
    k: int = Field(default=10, ge=1, description="Neighbours that vote.")

    _CHUNK: ClassVar[int] = 512
    """Queries scored at once, bounding the similarity matrix's memory."""

    def _fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[Any, ...]:
        return x, y, n_classes

    def _score(self, x: np.ndarray, *state: Any) -> np.ndarray:
        index, labels, n_classes = state
        k = min(self.k, len(index))
        out = np.zeros((len(x), n_classes))
        for start in range(0, len(x), self._CHUNK):
            similarity = x[start : start + self._CHUNK] @ index.T
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            rows = np.arange(len(similarity))[:, None]
            # Accumulate each neighbour's similarity into its label's column.
            np.add.at(
                out[start : start + self._CHUNK],
                (np.broadcast_to(rows, nearest.shape), labels[nearest]),
                similarity[rows, nearest],
            )
        return out / k


class LinearHeadStrategy(RoutingStrategy):
    """A softmax classifier on the embeddings: one linear layer trained full-batch with Adam
    on class-balanced cross-entropy plus L2 weight decay. Deterministic (zero init); scores
    are class probabilities."""

    kind: Literal["head"] = "head"
    epochs: int = Field(default=300, ge=1, description="Full-batch optimizer steps.")
    learning_rate: float = Field(default=0.05, gt=0)
    l2: float = Field(default=1e-4, ge=0, description="Weight decay on the weights.")
    temperature: float = Field(
        default=0.1,
        gt=0,
        description="Inputs are divided by this: cosine-scale inputs need large logits.",
    )
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def _fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[Any, ...]:
        x = x / self.temperature
        onehot = np.eye(n_classes, dtype=x.dtype)[y]
        counts = onehot.sum(axis=0)
        # Class-balanced: every class weighs the same in the loss, however many examples.
        sample_weight = ((len(y) / (n_classes * counts))[y] / len(y)).astype(x.dtype)
        params = [np.zeros((x.shape[1], n_classes), x.dtype), np.zeros(n_classes, x.dtype)]
        moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(1, self.epochs + 1):
            weights, bias = params
            error = (softmax(x @ weights + bias) - onehot) * sample_weight[:, None]
            grads = [x.T @ error + self.l2 * weights, error.sum(axis=0)]
            for param, grad, (m, v) in zip(params, grads, moments, strict=True):
                m *= beta1
                m += (1 - beta1) * grad
                v *= beta2
                v += (1 - beta2) * grad**2
                m_hat = m / (1 - beta1**step)
                v_hat = v / (1 - beta2**step)
                param -= self.learning_rate * m_hat / (np.sqrt(v_hat) + eps)
        return tuple(params)

    def _score(self, x: np.ndarray, *state: Any) -> np.ndarray:
        weights, bias = state
        return softmax((x / self.temperature) @ weights + bias)


Strategy = Annotated[
    CentroidStrategy | KNNStrategy | LinearHeadStrategy, Field(discriminator="kind")
]
"""Any built-in strategy, chosen by its ``kind`` (how config files name one)."""

_STRATEGIES: dict[str, type[RoutingStrategy]] = {
    "centroid": CentroidStrategy,
    "knn": KNNStrategy,
    "head": LinearHeadStrategy,
}


def make_strategy(spec: RoutingStrategy | str | Mapping[str, Any]) -> RoutingStrategy:
    """A strategy from an instance (copied, so fitting never touches the caller's), a kind
    (``"knn"``) or a mapping with ``kind`` and settings.

    Raises:
        ValueError: an unknown kind or setting.
    """
    if isinstance(spec, RoutingStrategy):
        return spec.model_copy(deep=True)
    return from_kind(_STRATEGIES, spec, "routing strategy")


Model = TypeVar("Model", bound=BaseModel)


def from_kind(
    registry: Mapping[str, type[Model]], spec: str | Mapping[str, Any], noun: str
) -> Model:
    """The model of ``registry`` that ``spec`` names: a kind, or a mapping with ``kind`` and
    settings (how config files name strategies and policies).

    Raises:
        ValueError: an unknown kind (naming the known ones) or an invalid setting.
    """
    data = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in registry:
        raise ValueError(f"unknown {noun} {kind!r} ({noun} kinds: {', '.join(registry)})")
    return registry[kind].model_validate(data)


def normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows are left as they are)."""
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


__all__ = [
    "CentroidStrategy",
    "KNNStrategy",
    "LinearHeadStrategy",
    "RoutingStrategy",
    "Strategy",
    "StrategyKind",
    "make_strategy",
    "normalize",
]
