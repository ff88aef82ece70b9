"""The systems the accuracy benchmark compares, after the Comp-LLM paper's baselines.

Every system answers one :class:`~langchain_complm.evaluation.multiexpertqa.Item` and
returns a :class:`Prediction`: the final answer, the per-part answers when its plan can be
matched to the gold parts, the (routed) plan, latency, and how many parameters the system
has in all and how many it used for this item.

* ``complm``: Comp-LLM as configured: decompose, route, run the experts in parallel
  (the config's mode, ``superstep`` by default), aggregate.
* ``complm-sequential``: the same, with the sub-queries run one after another.
* ``monolithic``: one model answers the whole compound question; one system per available
  chat model (named ``monolithic:<model>``).
* ``route-only``: the whole question is routed to ONE expert by the embedding router, whose
  answer is the final answer (Composition of Experts / Expert Router style).
* ``no-context``: decomposition and routing as in ``complm``, but no sub-query sees its
  parents' answers (MoE-like). The routed plan is rewritten by :func:`drop_dependencies`:
  every dependency is removed and every ``{qN}`` placeholder is replaced by the parent's
  question (``the answer to "..."``), so all sub-queries run independently, in parallel.
* ``oracle``: Comp-LLM with the item's gold plan instead of the generator's (route, execute,
  aggregate); items without a gold plan (multi-hop) are answered whole, as one sub-query.
* ``gold-routing``: ``oracle`` with gold routing too: every sub-query goes to the route of
  its part's gold domain (:meth:`~langchain_complm.route.BaseRouter.route_gold`; in two-step
  routing the category's policy still picks the expert). ``oracle`` against
  ``gold-routing`` is the router's oracle gap on task accuracy.

Every system but ``monolithic`` is the pipeline itself (:func:`~langchain_complm.pipeline.
create_comp_llm` over the shared components), given a question or a plan: ``oracle`` the
gold plan, ``gold-routing`` the gold plan routed by the gold domains (the pipeline does not
route it again), ``route-only`` a one-sub-query plan, and ``no-context`` rewrites the routed
plan at the pipeline's plan-review interrupt.

Parameters. A model is identified by its weights (chat models over one loaded model, such as
every role of the embedded default, are one model), so a model shared by several roles
counts once. ``total_parameters`` sums the distinct models of a system: generator, experts,
aggregator and the router's embeddings. ``active_parameters`` sums the distinct models used
for one item: the generator when it is a model, the router, every expert called, and the
aggregator when it called its model (not for a single answer passing through, nor for an
enumerated answer of answered parts). A rule-based generator has no parameters.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command
from pydantic import BaseModel, Field

from langchain_complm.config import PipelineParts, build_parts
from langchain_complm.evaluation.metrics import match_sub_queries
from langchain_complm.evaluation.multiexpertqa import Item
from langchain_complm.evaluation.routing_data import DOMAIN_ALIASES, domain_expert_map
from langchain_complm.execute.executor import ScheduleMode
from langchain_complm.pipeline import (
    CHECKPOINT_TYPES,
    CompLLMOutput,
)
from langchain_complm.plan import Plan, SubQuery
from langchain_complm.route.router import GOLD, BaseRouter

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from langchain_complm.config import CompLLMConfig, Decomposer, ModelFactory, Progress

SystemName = Literal[
    "complm",
    "complm-sequential",
    "monolithic",
    "route-only",
    "no-context",
    "oracle",
    "gold-routing",
]
SYSTEM_NAMES: tuple[str, ...] = get_args(SystemName)
"""Every system, in report order."""

MONOLITHIC_SYSTEM = (
    "Answer the user's question. If it has several parts, answer every part, in order."
)
"""System message of the monolithic baseline."""


# --- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """One model as parameter accounting sees it: ``key`` identifies its weights."""

    key: int
    label: str
    parameters: int | None


def model_info(model: Any, label: str, parameters: int | None = None) -> ModelInfo:
    """Identify ``model`` by its weights and count its parameters.

    A chat model over a :class:`~langchain_complm.models.huggingface.GenerationEngine` is its
    engine's model; sentence-transformers embeddings are their client; anything else is
    itself. The count is ``model.num_parameters`` when it is an int, else the sum over the
    weights' ``parameters()``, else ``parameters`` (e.g. an expert's declared size).
    """
    engine = getattr(model, "engine", None)
    weights = getattr(engine, "model", None)
    for attr in ("_client", "client"):  # sentence-transformers embeddings
        if weights is None:
            weights = getattr(model, attr, None)
    if weights is None:
        weights = model
    return ModelInfo(key=id(weights), label=label, parameters=_count(model, weights, parameters))


def _count(model: Any, weights: Any, fallback: int | None) -> int | None:
    try:
        value = getattr(model, "num_parameters", None)
    except Exception:  # a lazy property that cannot be computed
        value = None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    params = getattr(weights, "parameters", None)
    if callable(params):
        try:
            return int(sum(p.numel() for p in params()))
        except Exception:
            pass
    return fallback


def sum_parameters(models: Iterable[ModelInfo]) -> int | None:
    """Parameters of the distinct models (by weights); None when a count is unknown."""
    distinct = {m.key: m for m in models}
    if any(m.parameters is None for m in distinct.values()):
        return None
    return sum(m.parameters or 0 for m in distinct.values())


# --- components -------------------------------------------------------------------------------


@dataclass
class Components(PipelineParts):
    """The parts the Comp-LLM systems are built from, shared by all of them: the pipeline's
    parts (:class:`~langchain_complm.config.PipelineParts`) and ``chat_models``, the
    candidates for the monolithic baseline.

    ``generator`` is any runnable from a query to a :class:`Plan` (a
    :class:`~langchain_complm.decompose.SubQueryGenerator`, whose ``llm`` is then counted,
    or a rule-based one).
    """

    chat_models: list[tuple[str, BaseChatModel]] = field(default_factory=list)

    @property
    def domain_experts(self) -> dict[str, str]:
        """Benchmark domain -> route name: expert, or category in two-step routing (see
        :func:`domain_expert_map`)."""
        return domain_expert_map(self.router.route_names)

    def generator_info(self) -> ModelInfo | None:
        """The generator's model, or None for a rule-based generator."""
        llm = getattr(self.generator, "llm", None)
        return None if llm is None else model_info(llm, "generator")

    def router_info(self) -> ModelInfo:
        """The router's embeddings model."""
        return model_info(self.router.embeddings, "router")

    def aggregator_info(self) -> ModelInfo:
        """The aggregator's model."""
        return model_info(self.aggregator.llm, "aggregator")

    def expert_infos(self) -> dict[str, ModelInfo]:
        """Each expert's model, by expert name."""
        return {e.name: model_info(e.llm, f"expert:{e.name}", e.parameters) for e in self.experts}


def load_components(
    config: CompLLMConfig | str | Path | None = None,
    *,
    decomposer: Decomposer | None = None,
    model_factory: ModelFactory | None = None,
    embeddings: Embeddings | None = None,
    progress: Progress | None = None,
) -> Components:
    """The components of ``config`` (a config, a file, or None for the embedded default):
    :func:`~langchain_complm.config.build_parts` with the same arguments, plus the distinct
    chat models it loaded."""
    parts = build_parts(
        config,
        decomposer=decomposer,
        model_factory=model_factory,
        embeddings=embeddings,
        progress=progress,
    )
    fields = {f.name: getattr(parts, f.name) for f in dataclasses.fields(parts)}
    return Components(**fields, chat_models=distinct_chat_models(parts.models))


def distinct_chat_models(models: Mapping[str, BaseChatModel]) -> list[tuple[str, BaseChatModel]]:
    """One ``(label, model)`` per distinct set of weights among named chat models; the label
    is the model's ``model_id`` basename when it has one, else its name."""
    seen: set[int] = set()
    out = []
    for name, llm in models.items():
        key = model_info(llm, name).key
        if key in seen:
            continue
        seen.add(key)
        model_id = getattr(llm, "model_id", None)
        out.append((Path(model_id).name if model_id else name, llm))
    return out


# --- predictions ------------------------------------------------------------------------------


class Prediction(BaseModel):
    """What a system answered for one item, one JSON line of a predictions file."""

    item_id: str
    system: str
    answer: str = Field(description="The final answer text.")
    part_answers: dict[str, str] | None = Field(
        default=None,
        description="Gold part id -> the answer of the predicted sub-query matched to it; "
        "None when the system has no plan or the item no gold plan.",
    )
    sub_answers: dict[str, str] | None = Field(
        default=None, description="Predicted sub-query id -> its expert's answer."
    )
    plan: Plan | None = Field(default=None, description="The routed plan, when there is one.")
    latency: float = Field(description="Seconds to answer the item.")
    timings: dict[str, float] = Field(default_factory=dict)
    total_parameters: int | None = None
    active_parameters: int | None = None
    active_models: list[str] = Field(default_factory=list, description="Roles of the models used.")
    error: str | None = Field(default=None, description="Why the system failed on the item.")


def match_part_answers(item: Item, plan: Plan, sub_answers: Mapping[str, str]) -> dict | None:
    """Gold part id -> answer of the predicted sub-query matched to that part (greedy question
    matching, :func:`~langchain_complm.evaluation.metrics.match_sub_queries`); None without a
    gold plan."""
    if item.gold_plan is None:
        return None
    return {
        m.gold_id: sub_answers[m.predicted_id]
        for m in match_sub_queries(plan, item.gold_plan)
        if m.predicted_id in sub_answers
    }


class System(ABC):
    """A benchmarked system: :meth:`predict` answers an item."""

    name: str

    @property
    @abstractmethod
    def models(self) -> list[ModelInfo]:
        """Every model of the system (duplicates allowed: they are counted once)."""

    @property
    def total_parameters(self) -> int | None:
        """Parameters of the system's distinct models."""
        return sum_parameters(self.models)

    def warm_up(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Do the one-time work (such as embedding the expert profiles) before timing."""

    def predict(self, item: Item) -> Prediction:
        """Answer ``item``, timing it."""
        started = time.perf_counter()
        prediction = self._predict(item)
        prediction.latency = time.perf_counter() - started
        prediction.timings.setdefault("total", prediction.latency)
        return prediction

    @abstractmethod
    def _predict(self, item: Item) -> Prediction: ...

    def _prediction(self, item: Item, used: Sequence[ModelInfo], **fields: Any) -> Prediction:
        return Prediction(
            item_id=item.id,
            system=self.name,
            latency=0.0,
            total_parameters=self.total_parameters,
            active_parameters=sum_parameters(used),
            active_models=sorted({m.label for m in used}),
            **fields,
        )


class MonolithicSystem(System):
    """One chat model answers the whole question."""

    def __init__(self, llm: BaseChatModel, label: str, system_prompt: str | None = None) -> None:
        self.llm = llm
        self.name = f"monolithic:{label}"
        self.system_prompt = MONOLITHIC_SYSTEM if system_prompt is None else system_prompt
        self._info = model_info(llm, self.name)

    @property
    def models(self) -> list[ModelInfo]:
        return [self._info]

    def _predict(self, item: Item) -> Prediction:
        messages: list[BaseMessage] = [HumanMessage(content=item.question)]
        if self.system_prompt:
            messages.insert(0, SystemMessage(content=self.system_prompt))
        answer = self.llm.invoke(messages).text.strip()
        return self._prediction(item, [self._info], answer=answer)


class _ComponentSystem(System):
    """A system answering with the pipeline itself, given a question or a plan."""

    def __init__(self, components: Components, name: str) -> None:
        self.components = components
        self.name = name
        self._experts = components.expert_infos()
        self._router = components.router_info()
        self._aggregator = components.aggregator_info()

    def warm_up(self) -> None:
        # The router embeds the expert profiles on first use.
        self.components.router.route(["warm-up"])

    def _answer(
        self,
        item: Item,
        output: CompLLMOutput,
        generator: ModelInfo | None = None,
        plan: Plan | None = None,
    ) -> Prediction:
        """The prediction from the pipeline's ``output``; ``plan`` (default: the one that
        ran) is the plan reported and matched against the gold parts."""
        plan = plan or output.plan
        results = list(output.results.values())
        called = {a.expert for r in results for a in r.attempts}
        used = [self._experts[name] for name in called]
        # Gold decisions embed nothing: the router is active only if it scored something.
        if any(sq.route and sq.route.strategy != GOLD for sq in output.plan.sub_queries):
            used.append(self._router)
        if generator is not None:
            used.append(generator)
        if self.components.aggregator.calls_model(results):
            used.append(self._aggregator)
        sub_answers = {k: r.answer for k, r in output.results.items() if r.answer is not None}
        errors = [f"{k}: {r.error or r.status}" for k, r in output.results.items() if r.error]
        return self._prediction(
            item,
            used,
            answer=output.answer,
            plan=plan,
            sub_answers=sub_answers,
            part_answers=match_part_answers(item, plan, sub_answers),
            # Stage timings; predict() adds the item's wall time as the total.
            timings={k: v for k, v in output.timings.items() if k != "total"},
            error="; ".join(errors) or None,
        )


class RouteOnlySystem(_ComponentSystem):
    """The whole question goes to the one expert the embedding router picks: the pipeline
    given a one-sub-query plan, whose answer passes the aggregator through."""

    def __init__(self, components: Components, name: str = "route-only") -> None:
        super().__init__(components, name)
        self.pipeline = components.pipeline()

    @property
    def models(self) -> list[ModelInfo]:
        return [self._router, *self._experts.values()]

    def _predict(self, item: Item) -> Prediction:
        state = self.pipeline.invoke({"plan": Plan.single(item.question)})
        return self._answer(item, CompLLMOutput.model_validate(state))


class CompLLMSystem(_ComponentSystem):
    """Comp-LLM: decompose (or take the gold plan), route, execute, aggregate.

    The pipeline of :func:`~langchain_complm.pipeline.create_comp_llm` over the shared
    components: ``plan_source="gold"`` gives it the item's gold plan (decomposition skipped),
    ``gold_routing`` (with the gold plan) that plan routed by the parts' gold domains
    (:func:`route_gold_plan`; routing skipped), and ``drop_context`` has the plan-review step
    rewrite the routed plan with :func:`drop_dependencies` before the experts run.
    """

    def __init__(
        self,
        components: Components,
        name: str = "complm",
        *,
        mode: ScheduleMode | None = None,
        plan_source: Literal["generator", "gold"] = "generator",
        gold_routing: bool = False,
        drop_context: bool = False,
    ) -> None:
        if gold_routing and plan_source != "gold":
            raise ValueError("gold routing needs the gold plan (plan_source='gold')")
        super().__init__(components, name)
        self.plan_source = plan_source
        self.gold_routing = gold_routing
        self.drop_context = drop_context
        self.pipeline = components.pipeline(
            mode, review_plan=drop_context, checkpointer=_saver() if drop_context else None
        )
        self._generator = components.generator_info() if plan_source == "generator" else None

    @property
    def models(self) -> list[ModelInfo]:
        own = [self._router, *self._experts.values(), self._aggregator]
        return [self._generator, *own] if self._generator else own

    def _predict(self, item: Item) -> Prediction:
        query: Any = item.question
        if self.plan_source == "gold":
            plan = item.gold_plan or Plan.single(item.question.strip())
            if self.gold_routing:
                components = self.components
                plan = route_gold_plan(components.router, plan, item, components.domain_experts)
            query = {"plan": plan}
        if not self.drop_context:
            state = self.pipeline.invoke(query)
            return self._answer(item, CompLLMOutput.model_validate(state), self._generator)
        thread: RunnableConfig = {"configurable": {"thread_id": str(uuid.uuid4())}}
        waiting = self.pipeline.invoke(query, thread)
        routed = Plan.model_validate(waiting["__interrupt__"][0].value["plan"])
        replace = {"action": "replace", "plan": drop_dependencies(routed)}
        state = self.pipeline.invoke(Command(resume=replace), thread)
        self.pipeline.checkpointer.delete_thread(thread["configurable"]["thread_id"])  # type: ignore[union-attr]
        output = CompLLMOutput.model_validate(state)
        return self._answer(item, output, self._generator, plan=routed)


def route_gold_plan(
    router: BaseRouter, plan: Plan, item: Item, domain_routes: Mapping[str, str]
) -> Plan:
    """``plan`` (the item's gold plan, or its one-sub-query plan) routed by gold domains:
    each sub-query whose part's domain has a route in ``domain_routes`` takes that route
    (:meth:`~langchain_complm.route.BaseRouter.route_gold`); any other is routed by the
    router."""
    domains = {part.id: part.domain for part in item.parts}
    known = {
        sq.id: domain_routes[domains[sq.id]]
        for sq in plan.sub_queries
        if domains.get(sq.id) in domain_routes
    }
    gold = router.route_gold(
        [plan.by_id[i].question for i in known], list(known.values()), list(known)
    )
    rest = [sq for sq in plan.sub_queries if sq.id not in known]
    routed = router.route([sq.question for sq in rest], [sq.id for sq in rest]) if rest else []
    decisions = {d.sub_query_id: d for d in [*gold, *routed]}
    return plan.model_copy(
        update={
            "sub_queries": tuple(
                sq.model_copy(update={"route": decisions[sq.id]}) for sq in plan.sub_queries
            )
        }
    )


def _saver() -> InMemorySaver:
    return InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES))


def drop_dependencies(plan: Plan) -> Plan:
    """The plan without dependencies: each ``{qN}`` placeholder becomes ``the answer to
    "<qN's question>"`` (itself rewritten the same way), and no sub-query waits for another,
    so none sees another's answer. Routing decisions are kept."""
    texts: dict[str, str] = {}
    for sq_id in plan.topological_order():
        sq = plan.by_id[sq_id]
        texts[sq_id] = sq.render({d: f'the answer to "{texts[d]}"' for d in sq.depends_on})
    return plan.model_copy(
        update={
            "sub_queries": tuple(
                SubQuery(id=sq.id, question=texts[sq.id], route=sq.route) for sq in plan.sub_queries
            )
        }
    )


def build_systems(
    names: Iterable[str],
    components: Components,
    *,
    monolithic_models: Sequence[tuple[str, BaseChatModel]] | None = None,
) -> list[System]:
    """The named systems over shared components. ``monolithic`` gives one system per model
    of ``monolithic_models`` (default: the components' distinct chat models).

    Raises:
        ValueError: an unknown system name, or no model for ``monolithic``.
    """
    systems: list[System] = []
    for name in names:
        if name == "complm":
            systems.append(CompLLMSystem(components, name))
        elif name == "complm-sequential":
            systems.append(CompLLMSystem(components, name, mode="sequential"))
        elif name == "no-context":
            systems.append(CompLLMSystem(components, name, drop_context=True))
        elif name == "oracle":
            systems.append(CompLLMSystem(components, name, plan_source="gold"))
        elif name == "gold-routing":
            systems.append(CompLLMSystem(components, name, plan_source="gold", gold_routing=True))
        elif name == "route-only":
            systems.append(RouteOnlySystem(components, name))
        elif name == "monolithic":
            models = components.chat_models if monolithic_models is None else monolithic_models
            if not models:
                raise ValueError("the monolithic baseline needs at least one chat model")
            systems.extend(MonolithicSystem(llm, label) for label, llm in models)
        else:
            raise ValueError(f"unknown system {name!r} (systems: {', '.join(SYSTEM_NAMES)})")
    return systems


__all__ = [
    "DOMAIN_ALIASES",
    "MONOLITHIC_SYSTEM",
    "SYSTEM_NAMES",
    "CompLLMSystem",
    "Components",
    "ModelInfo",
    "MonolithicSystem",
    "Prediction",
    "RouteOnlySystem",
    "System",
    "SystemName",
    "build_systems",
    "distinct_chat_models",
    "domain_expert_map",
    "drop_dependencies",
    "load_components",
    "match_part_answers",
    "model_info",
    "route_gold_plan",
    "sum_parameters",
]
