"""The plan: sub-queries and the dependency graph (a DAG) between them.

A :class:`Plan` is what the Sub-query Generator produces, what the router annotates with
experts, and what the executor compiles into a LangGraph ``StateGraph``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from langchain_complm.errors import PlanValidationError

DEFAULT_MAX_SUB_QUERIES = 8
"""Default cap on the number of sub-queries in one plan."""

_ID = r"[A-Za-z][A-Za-z0-9_\-]*"
_VALID_ID = re.compile(_ID)
_BRACED_NAME = re.compile(r"\{(" + _ID + r")\}")


def braced_names(text: str) -> list[str]:
    """The names written as ``{name}`` in ``text`` (``name`` shaped like a sub-query id), in
    order of first appearance. Only those naming a dependency are placeholders; the rest
    (code, templates, math) are text."""
    return list(dict.fromkeys(_BRACED_NAME.findall(text)))


def invalid_text(text: str) -> str | None:
    """What makes ``text`` invalid Unicode text, or None when it is valid: a lone surrogate
    (such as ``"\\ud800"``), which no encoding can write and on which embeddings and
    tokenizers fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        return (
            f"a lone surrogate (U+{code:04X}) at position {error.start}, which is not valid "
            "Unicode text"
        )
    return None


class CategoryChoice(BaseModel):
    """Step one of a two-step routing decision: the category the router ranked first."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The best-scoring category.")
    score: float = Field(description="Its score (every category's is in the decision's scores).")
    threshold: float | None = Field(description="The category's minimum score, if any.")
    uncertain: bool = Field(
        description="True when the score was under the threshold: the generalist answers."
    )


class ExpertChoice(BaseModel):
    """Step two of a two-step routing decision: how the expert was picked in its category."""

    model_config = ConfigDict(frozen=True)

    policy: str = Field(description="'budget', 'least_loaded', or 'generalist'.")
    measure: str = Field(
        description="What the policy compared: 'parameters', 'cost', 'load' or 'order' "
        "(no sizes known: the category's first expert)."
    )
    candidates: dict[str, float] = Field(
        description="Each candidate expert and its value of the measure (order: position)."
    )
    within_budget: bool = Field(
        default=True, description="False when no candidate fitted the budget."
    )
    reason: str = Field(description="Why this expert, in words.")


class RoutingDecision(BaseModel):
    """Where the router sent one sub-query, and why.

    One-step routing ranks experts; two-step routing ranks categories, then picks an expert
    of the best category (``category`` and ``selection`` record both steps).
    """

    model_config = ConfigDict(frozen=True)

    sub_query_id: str
    question: str
    expert: str = Field(description="The chosen expert.")
    score: float = Field(
        description="The router's score for what it chose: the expert (one step; the fallback "
        "expert's own score after a fallback) or the best category (two steps). Its scale is "
        "the strategy's: cosine similarity (centroid), similarity-weighted votes (knn), "
        "probability (head)."
    )
    scores: dict[str, float] = Field(
        description="The score of every expert (one step) or category (two steps)."
    )
    fallback: bool = Field(
        default=False,
        description="True when the best score was under its threshold and the fallback "
        "expert (the generalist, in two steps) got the sub-query.",
    )
    strategy: str | None = Field(
        default=None,
        description="How the scores were computed: 'centroid', 'knn', 'head', or 'gold' for "
        "gold routing (the label was given, not predicted).",
    )
    category: CategoryChoice | None = Field(
        default=None, description="Two-step routing: the first step."
    )
    selection: ExpertChoice | None = Field(
        default=None, description="Two-step routing: the second step."
    )

    @property
    def routed_to(self) -> str:
        """The route taken: the category (two steps, when it was certain), else the expert."""
        if self.category is not None and not self.fallback:
            return self.category.name
        return self.expert


class SubQuery(BaseModel):
    """One sub-query of a plan.

    ``question`` may reference the answer of a sub-query it depends on with a placeholder
    such as ``{q1}``; the executor substitutes the parent's answer before calling the expert.
    Only dependencies are placeholders: other braces (``f'{name}'``, ``{x}`` in math, the
    sub-query's own id) are text and reach the expert as written.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Identifier, unique in its plan (e.g. 'q1').")
    question: str = Field(description="The self-contained sub-question.")
    depends_on: tuple[str, ...] = Field(
        default=(), description="Ids of the sub-queries whose answers this one needs."
    )
    route: RoutingDecision | None = Field(
        default=None, description="The router's decision, once routed."
    )

    @property
    def expert(self) -> str | None:
        """The assigned expert, once routed."""
        return self.route.expert if self.route else None

    @property
    def score(self) -> float | None:
        """The router's similarity score for the assigned expert, once routed."""
        return self.route.score if self.route else None

    @property
    def placeholders(self) -> list[str]:
        """Dependencies referenced as ``{id}`` in the question, in order of appearance."""
        return [name for name in braced_names(self.question) if name in self.depends_on]

    def render(self, answers: Mapping[str, str]) -> str:
        """Return the question with every placeholder replaced by that dependency's answer
        (placeholders without an answer in ``answers`` are kept)."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in self.depends_on and name in answers:
                return answers[name].strip()
            return match.group(0)

        return _BRACED_NAME.sub(fill, self.question)


class Plan(BaseModel):
    """A query decomposed into sub-queries with dependencies.

    Construct freely, then call :meth:`validate_dag` (the generator and executor do).
    """

    model_config = ConfigDict(frozen=True)

    query: str = Field(description="The original user query.")
    sub_queries: tuple[SubQuery, ...] = Field(description="Sub-queries in generation order.")
    fallback_reason: str | None = Field(
        default=None,
        description="Set when the generator could not decompose and fell back to a "
        "single sub-query holding the whole query; says why.",
    )
    repairs: tuple[str, ...] = Field(
        default=(),
        description="What plan repair changed in the decomposer's plan, one note per change "
        "(see langchain_complm.decompose.repair).",
    )

    # --- access -----------------------------------------------------------------------------

    @property
    def by_id(self) -> dict[str, SubQuery]:
        """Sub-queries keyed by id.

        Not cached: ``model_copy`` (how the router annotates a plan) would carry a stale cache.
        """
        return {sq.id: sq for sq in self.sub_queries}

    @property
    def is_fallback(self) -> bool:
        """Whether this plan is the generator's one-sub-query fallback."""
        return self.fallback_reason is not None

    @classmethod
    def single(cls, query: str, *, fallback_reason: str | None = None) -> Plan:
        """The trivial plan: one sub-query that is the whole query."""
        return cls(
            query=query,
            sub_queries=(SubQuery(id="q1", question=query),),
            fallback_reason=fallback_reason,
        )

    # --- validation -------------------------------------------------------------------------

    def validate_dag(self, max_sub_queries: int | None = DEFAULT_MAX_SUB_QUERIES) -> Plan:
        """Check the plan is a well-formed DAG and return it .

        Raises:
            PlanValidationError: naming the first problem found: an empty plan, too many
                sub-queries, an empty id or question, a question that is not valid Unicode
                text (a lone surrogate), duplicate ids, unknown or self dependencies, a
                placeholder naming another sub-query without depending on it, or a cycle.
        """
        if not self.sub_queries:
            raise PlanValidationError("plan has no sub-queries")
        if max_sub_queries is not None and len(self.sub_queries) > max_sub_queries:
            raise PlanValidationError(
                f"plan has {len(self.sub_queries)} sub-queries, more than the cap of "
                f"{max_sub_queries}"
            )
        seen: set[str] = set()
        for sq in self.sub_queries:
            if not _VALID_ID.fullmatch(sq.id):
                # Ids double as placeholder names and LangGraph node names.
                raise PlanValidationError(
                    f"invalid sub-query id {sq.id!r}: use a letter followed by letters, "
                    "digits, '_' or '-'"
                )
            if sq.id in seen:
                raise PlanValidationError(f"duplicate sub-query id {sq.id!r}")
            seen.add(sq.id)
            if not sq.question.strip():
                raise PlanValidationError(f"sub-query {sq.id!r} has an empty question")
            if (problem := invalid_text(sq.question)) is not None:
                # The router could not embed it.
                raise PlanValidationError(f"the question of sub-query {sq.id!r} has {problem}")
        for sq in self.sub_queries:
            for dep in sq.depends_on:
                if dep == sq.id:
                    raise PlanValidationError(f"sub-query {sq.id!r} depends on itself")
                if dep not in seen:
                    raise PlanValidationError(
                        f"sub-query {sq.id!r} depends on unknown sub-query {dep!r}"
                    )
            for ref in braced_names(sq.question):
                # {other} names another sub-query's answer, so it must be a dependency;
                # braces naming no other sub-query are text.
                if ref in seen and ref != sq.id and ref not in sq.depends_on:
                    raise PlanValidationError(
                        f"sub-query {sq.id!r} uses placeholder {{{ref}}} but does not depend "
                        f"on {ref!r}"
                    )
        cycle = self._find_cycle()
        if cycle:
            raise PlanValidationError("dependency cycle: " + " -> ".join(cycle))
        return self

    def _find_cycle(self) -> list[str] | None:
        # Depth-first along dependencies with an explicit stack: a chain of thousands of
        # sub-queries must not hit Python's recursion limit.
        deps = {sq.id: sq.depends_on for sq in self.sub_queries}
        white, grey, black = 0, 1, 2
        color = dict.fromkeys(deps, white)
        for root in deps:
            if color[root] != white:
                continue
            color[root] = grey
            path, pending = [root], [iter(deps[root])]
            while pending:
                for dep in pending[-1]:
                    if color.get(dep) == grey:
                        return [*path[path.index(dep) :], dep]
                    if color.get(dep) == white:
                        color[dep] = grey
                        path.append(dep)
                        pending.append(iter(deps[dep]))
                        break
                else:
                    color[path.pop()] = black
                    pending.pop()
        return None

    # --- graph helpers ----------------------------------------------------------------------

    def levels(self) -> list[list[str]]:
        """Topological levels: level k holds the sub-queries whose longest chain of
        dependencies has k edges. Sub-queries of one level can run in parallel, and this is
        exactly the superstep in which the compiled StateGraph runs them.

        Raises:
            PlanValidationError: the plan is not a DAG (as :meth:`validate_dag` would say).
        """
        # Kahn's algorithm, level by level: no recursion, linear in the plan's size.
        dependents: dict[str, list[str]] = {sq.id: [] for sq in self.sub_queries}
        missing = {sq.id: len(set(sq.depends_on)) for sq in self.sub_queries}
        for sq in self.sub_queries:
            for dep in set(sq.depends_on):
                dependents.get(dep, []).append(sq.id)
        depth = dict.fromkeys((k for k, n in missing.items() if n == 0), 0)
        frontier = list(depth)
        while frontier:
            following = []
            for sq_id in frontier:
                for child in dependents[sq_id]:
                    missing[child] -= 1
                    if missing[child] == 0:
                        depth[child] = depth[sq_id] + 1
                        following.append(child)
            frontier = following
        if len(depth) < len(self.sub_queries):
            # An unknown dependency, a cycle or a duplicate id kept some sub-query waiting.
            self.validate_dag(max_sub_queries=None)
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for sq in self.sub_queries:
            out[depth[sq.id]].append(sq.id)
        return out

    def topological_order(self) -> list[str]:
        """Ids in an order where every sub-query comes after its dependencies."""
        return [sq_id for level in self.levels() for sq_id in level]

    @property
    def width(self) -> int:
        """The largest number of sub-queries that can run at once (widest level)."""
        return max((len(level) for level in self.levels()), default=0)

    def dependents(self, sq_id: str) -> list[str]:
        """Ids of the sub-queries that depend directly on ``sq_id``."""
        return [sq.id for sq in self.sub_queries if sq_id in sq.depends_on]

    def critical_path(self, cost: Mapping[str, float] | None = None) -> tuple[list[str], float]:
        """The longest dependency chain and its total cost.

        ``cost`` maps ids to a duration (default 1 per sub-query); with measured durations
        the total is the lower bound on wall time for any schedule with unlimited parallelism.
        """
        # Each sub-query keeps its best predecessor, not its whole path: copying paths would
        # be quadratic on a long chain.
        by_id = self.by_id
        best: dict[str, tuple[float, str | None]] = {}
        for sq_id in self.topological_order():
            own = 1.0 if cost is None else float(cost.get(sq_id, 0.0))
            prev = max(by_id[sq_id].depends_on, key=lambda d: best[d][0], default=None)
            best[sq_id] = ((0.0 if prev is None else best[prev][0]) + own, prev)
        if not best:
            return [], 0.0
        end = max(best, key=lambda k: best[k][0])
        total, path = best[end][0], []
        node: str | None = end
        while node is not None:
            path.append(node)
            node = best[node][1]
        return path[::-1], total

    def to_mermaid(self) -> str:
        """A Mermaid flowchart of the plan (with experts once routed)."""
        lines = ["flowchart TD"]
        for sq in self.sub_queries:
            label = _mermaid_escape(sq.question)
            if sq.expert:
                label += f"<br/><i>{_mermaid_escape(sq.expert)}"
                if sq.score is not None:
                    label += f" ({sq.score:.2f})"
                label += "</i>"
            lines.append(f'    {_mermaid_id(sq.id)}["{sq.id}: {label}"]')
        for sq in self.sub_queries:
            for dep in sq.depends_on:
                lines.append(f"    {_mermaid_id(dep)} --> {_mermaid_id(sq.id)}")
        return "\n".join(lines)

    def to_text(self) -> str:
        """A plain-text drawing: one line per sub-query, indented by level."""
        rows = []
        by_id = self.by_id
        for depth, level in enumerate(self.levels()):
            for sq_id in level:
                sq = by_id[sq_id]
                deps = f"  <- {', '.join(sq.depends_on)}" if sq.depends_on else ""
                expert = ""
                if sq.route:
                    expert = f"  [{sq.expert} {sq.route.score:.2f}{_category_note(sq.route)}]"
                rows.append(f"{'  ' * depth}{sq.id}: {sq.question}{expert}{deps}")
        return "\n".join(rows)


def _category_note(route: RoutingDecision) -> str:
    """Two-step routing's first step, for drawings: the category, or that it was uncertain."""
    if route.category is None:
        return ""
    return f" {'uncertain ' if route.category.uncertain else 'via '}{route.category.name}"


def _mermaid_id(sq_id: str) -> str:
    # Injective over valid ids (letters, digits, '_' and '-'): 'q-1' and 'q_1' stay apart.
    return "n_" + sq_id.replace("_", "__").replace("-", "_d")


def _mermaid_escape(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", " ")
