"""Training the Sub-query Generator, as in the paper: data, fine-tuning, evaluation.

* :mod:`~langchain_complm.training.data`: training pairs (compound query -> plan JSON) from
  the benchmark builder's train split and templates;
* :mod:`~langchain_complm.training.train`: LoRA (or full) fine-tuning of a small causal LM
  (:func:`langchain_complm.models.trained.load_trained_generator` loads the result as a
  :class:`~langchain_complm.decompose.generator.SubQueryGenerator`);
* :mod:`~langchain_complm.training.evaluate`: plan metrics on dev/test and the learning curve;
* :mod:`~langchain_complm.training.shapes`: fitting the shape router that hands each
  question's shape to its adapter;
(``complm train-generator``, ``complm eval-generator`` and ``complm train-shape-router`` are
in :mod:`langchain_complm.cli.train`.)

Importing this package loads neither torch, transformers nor peft.
"""

from __future__ import annotations

from typing import Any

from langchain_complm.training.data import (
    TrainingPair,
    build_training_pairs,
    iter_training_pairs,
    load_pairs,
    pair_statistics,
    plan_to_target,
    save_pairs,
)
from langchain_complm.training.shapes import fit_shape_router


def __getattr__(name: str) -> Any:
    # The heavy modules (torch, transformers) load only when their names are used.
    if name in {"TrainConfig", "train_generator", "TrainResult"}:
        from langchain_complm.training import train

        return getattr(train, name)
    if name in {"evaluate_generator", "EvalReport", "learning_curve"}:
        from langchain_complm.training import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EvalReport",
    "TrainConfig",
    "TrainResult",
    "TrainingPair",
    "build_training_pairs",
    "evaluate_generator",
    "fit_shape_router",
    "iter_training_pairs",
    "learning_curve",
    "load_pairs",
    "pair_statistics",
    "plan_to_target",
    "save_pairs",
    "train_generator",
]
