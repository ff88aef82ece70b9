"""Stage 1, the Sub-query Generator: a query becomes a :class:`~langchain_complm.plan.Plan`.

- :class:`SubQueryGenerator`: an LLM writes the plan (structured output, or a prompt and a
  tolerant parser), with one retry and a whole-query fallback; given a
  :class:`DecompositionInput` it also sees the conversation (bounded by a
  :class:`ConversationPolicy`);
- :class:`StructuralSubQueryGenerator`: model-free decomposition at explicit structure;
- :func:`parse_plan`: the tolerant parser of a model's plan reply, and
  :class:`PlanStreamParser`, which reads the reply while it is written and hands out each
  sub-query once it and its parents are complete (``SubQueryGenerator.stream_plan``);
- :func:`repair_plan`: plan repair, which both decomposers apply (a custom decomposer can
  too: ``my_decomposer | RunnableLambda(repair_plan)``);
- :func:`plan_json_schema`: the plan's grammar, for a local model's constrained decoding;
- :class:`ShapeRouter`: names a question's shape, so that a generator hands each shape to
  the model that plans it best (``SubQueryGenerator.shape_router``).
"""

from langchain_complm.decompose._parser import PlanStreamParser, parse_plan
from langchain_complm.decompose.generator import (
    ConversationPolicy,
    DecompositionInput,
    SubQueryGenerator,
    plan_json_schema,
)
from langchain_complm.decompose.repair import repair_plan
from langchain_complm.decompose.shapes import ShapeRouter
from langchain_complm.decompose.structural import StructuralSubQueryGenerator

__all__ = [
    "ConversationPolicy",
    "DecompositionInput",
    "PlanStreamParser",
    "ShapeRouter",
    "StructuralSubQueryGenerator",
    "SubQueryGenerator",
    "parse_plan",
    "plan_json_schema",
    "repair_plan",
]
