"""Stage 2, routing: each sub-query goes to the expert (or, in two steps, the category and
then the expert) whose labelled texts it is nearest to, by a pluggable scoring strategy.
See docs/routing.md."""

from langchain_complm.route.calibration import (
    LabelledQuery,
    RoutingEvaluation,
    calibrate_thresholds,
    read_labelled,
    write_labelled,
)
from langchain_complm.route.router import BaseRouter, EmbeddingRouter
from langchain_complm.route.strategies import (
    CentroidStrategy,
    KNNStrategy,
    LinearHeadStrategy,
    RoutingStrategy,
)
from langchain_complm.route.two_step import (
    BudgetPolicy,
    Category,
    LeastLoadedPolicy,
    SelectionPolicy,
    TwoStepRouter,
)

__all__ = [
    "BaseRouter",
    "BudgetPolicy",
    "Category",
    "CentroidStrategy",
    "EmbeddingRouter",
    "KNNStrategy",
    "LabelledQuery",
    "LeastLoadedPolicy",
    "LinearHeadStrategy",
    "RoutingEvaluation",
    "RoutingStrategy",
    "SelectionPolicy",
    "TwoStepRouter",
    "calibrate_thresholds",
    "read_labelled",
    "write_labelled",
]
