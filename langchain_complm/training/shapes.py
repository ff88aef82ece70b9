"""Fitting the generator's shape router (:class:`~langchain_complm.decompose.shapes.ShapeRouter`)
on training questions.

A training pair's kind says how its question was made, so it labels the question's shape
without reading the question: the kinds whose plans write hops the question only implies
(:data:`MULTIHOP_KINDS`: chains, comparisons, bridges) are ``multihop``, the rest
(parallel parts, references to an earlier part, single questions, benchmark items) are
``compound``. The pairs come from the training split only, in equal shares of every kind,
so the router has seen each kind as often as any other.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

from langchain_complm.decompose.shapes import ShapeRouter, phrasing_counts, phrasing_features
from langchain_complm.training.data import DEFAULT_MIX, TrainingPair, build_training_pairs

MULTIHOP_KINDS = frozenset(
    {
        "template_chain",
        "template_fan_in",
        "multihop_chain",
        "comparison",
        "bridge",
        "multihop_comparison",
    }
)
"""Pair kinds whose questions take the router's ``multihop`` route."""

DEFAULT_MIN_COUNT = 3
"""Grams in fewer training questions than this are not read (their weights would be noise)."""


def shape_pairs(n: int, seed: int = 0, **options: Any) -> list[TrainingPair]:
    """``n`` training pairs drawn in equal shares of every kind (``options`` as for
    :func:`~langchain_complm.training.data.build_training_pairs`, except ``mix``)."""
    return build_training_pairs(n, seed, mix=dict.fromkeys(DEFAULT_MIX, 1.0), **options)


def fit_shape_router(
    pairs: Sequence[TrainingPair],
    embeddings: Embeddings,
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    regularization: float = 1.0,
    threshold: float = 0.5,
) -> ShapeRouter:
    """A router fitted on ``pairs`` (labelled by :data:`MULTIHOP_KINDS`): logistic
    regression over each question's TF-IDF grams and its embedding.

    Args:
        regularization: inverse strength of the L2 penalty (scikit-learn's ``C``).

    Raises:
        ValueError: the pairs hold one shape only.
    """
    import numpy as np
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    labels = np.array([pair.kind in MULTIHOP_KINDS for pair in pairs], dtype=int)
    if labels.min() == labels.max():
        raise ValueError("the shape router needs questions of both shapes to be fitted")
    questions = [pair.query for pair in pairs]
    seen = Counter(gram for q in questions for gram in phrasing_counts(q))
    grams = sorted(gram for gram, count in seen.items() if count >= min_count)
    # scikit-learn's smoothed idf, so the features are TfidfVectorizer's.
    idf = {g: math.log((1 + len(questions)) / (1 + seen[g])) + 1.0 for g in grams}
    column = {gram: i for i, gram in enumerate(grams)}
    rows, cols, values = [], [], []
    for row, question in enumerate(questions):
        for gram, value in phrasing_features(question, idf).items():
            rows.append(row)
            cols.append(column[gram])
            values.append(value)
    phrasing = csr_matrix((values, (rows, cols)), shape=(len(questions), len(grams)))
    vectors = np.asarray(embeddings.embed_documents(questions), dtype=float)
    features = hstack([phrasing, csr_matrix(vectors)]).tocsr()
    model = LogisticRegression(C=regularization, max_iter=5000).fit(features, labels)
    weights = model.coef_[0]
    return ShapeRouter(
        embeddings=embeddings,
        idf=idf,
        phrasing_weights={gram: float(weights[i]) for gram, i in column.items()},
        embedding_weights=[float(w) for w in weights[len(grams) :]],
        bias=float(model.intercept_[0]),
        threshold=threshold,
    )


__all__ = ["DEFAULT_MIN_COUNT", "MULTIHOP_KINDS", "fit_shape_router", "shape_pairs"]
