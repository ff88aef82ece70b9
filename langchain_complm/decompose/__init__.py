"""Stage 1, the Sub-query Generator: a query becomes a :class:`~langchain_complm.plan.Plan`.

- :class:`SubQueryGenerator`: an LLM writes the plan (structured output, or a prompt and a
  tolerant parser), with one retry and a whole-query fallback;
- :class:`StructuralSubQueryGenerator`: model-free decomposition at explicit structure;
- :func:`parse_plan`: the tolerant parser of a model's plan reply.
"""

from langchain_complm.decompose.generator import SubQueryGenerator, parse_plan
from langchain_complm.decompose.structural import StructuralSubQueryGenerator

__all__ = ["StructuralSubQueryGenerator", "SubQueryGenerator", "parse_plan"]
