"""The Comp-LLM pipeline: the paper's four stages as the nodes of a LangGraph ``StateGraph``.

``decompose -> route -> [review] -> execute -> aggregate``: each node runs one stage as a
named child run and writes its output to the graph state, so with a checkpointer every
stage's result is saved as it finishes, and ``execute`` runs each sub-query as a task of its
own (see :mod:`langchain_complm.execute`). Sync nodes run under ``invoke``/``stream``, async
nodes under ``ainvoke``/``astream``; each node is written once (a generator of the stage
calls it needs) and driven either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, cast

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    convert_to_messages,
)
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableGenerator,
    RunnableSequence,
    ensure_config,
)
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config
from langgraph.errors import EmptyInputError
from langgraph.func import task
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel, Field, ValidationError, computed_field
from typing_extensions import TypedDict

from langchain_complm.aggregate import AggregationInput, ResponseAggregator
from langchain_complm.concurrency import Steps, afirst_done, arun_steps, first_done, run_steps
from langchain_complm.decompose.generator import DecompositionInput, SubQueryGenerator
from langchain_complm.errors import AggregationError, PlanReviewError, PlanValidationError
from langchain_complm.events import emit, quiet
from langchain_complm.execute.executor import (
    Attempt,
    FailurePolicy,
    GrowingPlanRun,
    QueryExecutor,
    ScheduleMode,
    SubQueryResult,
    langgraph_config,
)
from langchain_complm.experts import Expert, check_experts, check_known
from langchain_complm.plan import (
    DEFAULT_MAX_SUB_QUERIES,
    Plan,
    RoutingDecision,
    SubQuery,
    invalid_text,
)
from langchain_complm.route.router import BaseRouter, EmbeddingRouter

DEFAULT_MAX_QUERY_CHARS = 8000
"""Default limit on the length of a query, in characters."""

PLAN_REVIEW = "plan_review"
"""``type`` of the interrupt value a run with ``review_plan=True`` pauses with."""

CHECKPOINT_TYPES: frozenset[tuple[str, str]] = frozenset(
    (cls.__module__, cls.__name__)
    for cls in (Plan, SubQuery, RoutingDecision, SubQueryResult, Attempt)
)
"""The package's types a run's checkpoints hold. A checkpointer whose serializer allows them,
``serde=JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)``, loads them without
LangGraph's "unregistered type" warning and loads no other custom type."""


class CompLLMOutput(BaseModel):
    """The final answer and the full trace of how it was reached.

    ``CompLLMOutput.model_validate(comp.invoke(...))`` reads the runnable's output state.
    """

    query: str
    answer: str
    plan: Plan = Field(description="The plan, with every sub-query's routing decision.")
    results: dict[str, SubQueryResult] = Field(description="Per sub-query results, plan order.")
    timings: dict[str, float] = Field(
        description="Seconds per stage (decompose, route, execute, aggregate; a stage given "
        "its result, such as a plan, only takes it) and their total."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def routing(self) -> list[RoutingDecision]:
        """The router's decision for every sub-query."""
        return [sq.route for sq in self.plan.sub_queries if sq.route is not None]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def errors(self) -> dict[str, str]:
        """Why each failed or skipped sub-query did not produce an answer."""
        return {k: r.error or r.status for k, r in self.results.items() if r.status != "ok"}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fallbacks(self) -> list[str]:
        """Every fallback taken: decomposition, routing thresholds, fallback experts."""
        notes = []
        if self.plan.fallback_reason:
            notes.append(f"decomposition fell back to the whole query: {self.plan.fallback_reason}")
        notes += [
            f"{d.sub_query_id}: score {d.score:.2f} under threshold, sent to {d.expert}"
            for d in self.routing
            if d.fallback
        ]
        notes += [
            f"{k}: answered by fallback expert {r.expert}"
            for k, r in self.results.items()
            if r.used_fallback
        ]
        return notes


# --- the graph's state ----------------------------------------------------------------------


class CompLLMInput(TypedDict, total=False):
    """What a run takes: a question, a conversation ending with one, or a plan to run."""

    query: str
    """The question (default: the last human message of ``messages``)."""
    messages: Annotated[list[AnyMessage], add_messages]
    """The conversation; a run appends the question (if not there yet) and the answer."""
    plan: Plan | None
    """A plan to run instead of decomposing the question; a routed one is not routed again."""


class CompLLMOutputState(TypedDict):
    """What a run returns (read it with :class:`CompLLMOutput` for attribute access)."""

    query: str
    answer: str
    plan: Plan
    results: dict[str, SubQueryResult]
    timings: dict[str, float]
    messages: Annotated[list[AnyMessage], add_messages]


class CompLLMState(CompLLMInput, total=False):
    """The graph's state: the input, then each stage's output."""

    answer: str
    results: dict[str, SubQueryResult]
    timings: dict[str, float]


def coerce_query(value: Any, max_chars: int | None = DEFAULT_MAX_QUERY_CHARS) -> str:
    """The query text from any accepted input form.

    Accepts a string, ``{"query": str}``, ``{"messages": [...]}`` (as in a LangGraph agent's
    state), a list of messages (objects, ``{"role": ..., "content": ...}`` dicts or
    ``(role, content)`` tuples), a single message or a prompt value; messages yield the last
    human message's text.

    Raises:
        TypeError: for any other type (``None`` included).
        ValueError: for an empty query, one longer than ``max_chars``, or one that is not
            valid Unicode text (a lone surrogate, which embeddings and tokenizers fail on).
    """
    if isinstance(value, dict):
        if "query" in value:
            value = value["query"]
        elif "messages" in value:
            value = value["messages"]
        else:
            raise ValueError(
                f"input dict needs a 'query' or 'messages' key, got keys {sorted(value)}"
            )
    if _is_messages(value):
        value = _question(_messages(value))
    if not isinstance(value, str):
        raise _not_a_query(value)
    query = value.strip()
    if not query:
        raise ValueError("query is empty")
    if max_chars is not None and len(query) > max_chars:
        raise ValueError(f"query is {len(query)} characters long, over the limit of {max_chars}")
    if (problem := invalid_text(query)) is not None:
        raise ValueError(f"query has {problem}")
    return query


def _not_a_query(value: Any, hint: str = "") -> TypeError:
    return TypeError(
        "query must be a string, {'query': str}, chat messages or a plan; "
        f"got {type(value).__name__}{hint}"
    )


def coerce_input(value: Any, max_chars: int | None = DEFAULT_MAX_QUERY_CHARS) -> CompLLMInput:
    """The graph input for any accepted input form (see :func:`coerce_query`), a plan
    (``{"plan": ...}``, or a :class:`Plan`) included.

    The result always names the question (``query``) and ends ``messages`` with it, and has
    ``plan`` set (``None`` unless one was given, so a thread's previous plan is not reused).

    Raises:
        TypeError, ValueError: as :func:`coerce_query`; ``ValueError`` for an invalid plan.
    """
    if isinstance(value, Plan):
        value = {"plan": value}
    elif not isinstance(value, Mapping):
        value = {"messages": value} if _is_messages(value) else {"query": value}
    plan = value.get("plan")
    if plan is not None and not isinstance(plan, Plan):
        try:
            plan = Plan.model_validate(plan)
        except ValidationError as exc:
            raise ValueError(f"invalid plan: {exc}") from None
    messages = _messages(value.get("messages") or [])
    if value.get("query") is not None:
        query = coerce_query(value["query"], max_chars)
    elif plan is not None:
        query = coerce_query(plan.query, max_chars)
    elif messages:
        query = coerce_query(messages, max_chars)
    elif "query" in value:
        query = coerce_query(value["query"], max_chars)  # not a question: says why
    else:
        raise ValueError(
            f"input dict needs a 'query', 'messages' or 'plan' key, got keys {sorted(value)}"
        )
    if plan is not None:
        plan.validate_dag(max_sub_queries=None)
    if not messages or _question(messages) != query:
        messages = [*messages, HumanMessage(query)]
    return {"query": query, "messages": cast("list[AnyMessage]", messages), "plan": plan}


def _is_messages(value: Any) -> bool:
    return isinstance(value, (PromptValue, BaseMessage)) or (
        isinstance(value, list) and bool(value) and not isinstance(value[0], str)
    )


def _messages(value: Any) -> list[BaseMessage]:
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, BaseMessage):
        return [value]
    try:
        return list(convert_to_messages(value))
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise _not_a_query(value, f" ({exc})") from None


def _question(messages: list[BaseMessage]) -> str:
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    if not humans:
        raise ValueError("the messages contain no human message to answer")
    return humans[-1].text.strip()


def _history(messages: list[AnyMessage]) -> list[BaseMessage]:
    """The conversation before the question: every message before its last human message."""
    last = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=0)
    return list(messages[:last])


# --- the stages as nodes --------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """A stage call a node needs, as a blocking and as an awaitable call."""

    sync: Callable[[], Any]
    asynchronous: Callable[[], Awaitable[Any]]


def _stage(runnable: Runnable[Any, Any], input: Any, config: RunnableConfig) -> _Call:
    return _Call(partial(runnable.invoke, input, config), partial(runnable.ainvoke, input, config))


class _Node(Runnable[CompLLMState, Any]):
    """A graph node running ``steps`` with blocking calls under ``invoke`` and awaited ones
    under ``ainvoke``. A plain Runnable: LangGraph already traces the node's run, and a
    ``RunnableLambda`` would inspect its function's signature on every call."""

    def __init__(
        self, steps: Callable[[CompLLMState, RunnableConfig], Steps[_Call, Any]], name: str
    ) -> None:
        self.steps = steps
        self.name = name

    def invoke(
        self, input: CompLLMState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        return run_steps(self.steps(input, ensure_config(config)), lambda call: call.sync())

    async def ainvoke(
        self, input: CompLLMState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        steps = self.steps(input, ensure_config(config))
        return await arun_steps(steps, lambda call: call.asynchronous())


class _Arrivals:
    """The sub-queries a streamed decomposition hands out, in order, each also as a future
    (of the run's kind) to wait on; filled from the decomposer's thread or task until it
    closes."""

    def __init__(self, new_future: Callable[[], Any]) -> None:
        self._new_future = new_future
        self._items: list[SubQuery] = []
        self._futures: list[Any] = []
        self._closed = False
        self._lock = threading.Lock()

    def _future(self, index: int) -> Any:
        while len(self._futures) <= index:
            self._futures.append(self._new_future())
        return self._futures[index]

    def put(self, sq: SubQuery) -> None:
        with self._lock:
            if self._closed:
                return  # a reply given up at its timeout may still be read for a moment
            self._items.append(sq)
            future = self._future(len(self._items) - 1)
        future.set_result(sq)

    def at(self, index: int) -> Any:
        """The future of the ``index``-th sub-query (done once it came)."""
        with self._lock:
            return self._future(index)

    def since(self, index: int) -> list[SubQuery]:
        with self._lock:
            return self._items[index:]

    def close(self) -> tuple[SubQuery, ...]:
        """No more sub-queries: every one that came, in order."""
        with self._lock:
            self._closed = True
            return tuple(self._items)


@dataclass(frozen=True)
class _Stages:
    generator: Runnable[Any, Plan]
    router: BaseRouter
    executor: QueryExecutor
    aggregator: ResponseAggregator

    def decompose(self, state: CompLLMState, config: RunnableConfig) -> Steps[_Call, Any]:
        # The first node of every run: it also clears the previous run's outputs.
        plan = state.get("plan")
        started = time.perf_counter()
        if plan is None:
            plan = yield _stage(self.generator, self._request(state), quiet(config))
        emit({"type": "plan", "data": plan}, config)
        timings = {"decompose": time.perf_counter() - started}
        return {"plan": plan, "results": {}, "answer": "", "timings": timings}

    def _request(self, state: CompLLMState) -> Any:
        """What the generator is given: the question, with the conversation before it for a
        :class:`SubQueryGenerator`."""
        query = state["query"]
        history = _history(state.get("messages") or [])
        if history and isinstance(self.generator, SubQueryGenerator):
            return DecompositionInput(query=query, history=history)
        return query

    def decompose_execute(self, state: CompLLMState, config: RunnableConfig) -> Steps[_Call, Any]:
        """Plan streaming: decompose, route each sub-query as soon as it and its parents are
        written, and run it then, in one node (the first of every run).

        The decomposition is a LangGraph task of the node (``decompose``), so its plan, and
        the sub-queries streamed in order, are in the checkpoint once it finishes; every
        sub-query is a task, called in the order the stream gave them, then the final plan's
        new ones (see :class:`~langchain_complm.execute.GrowingPlanRun`). A resumed run does
        not decompose again once the plan was complete; it routes the sub-queries again, and
        uses a saved answer only for the prompt and expert it answered.
        """
        query, given = state["query"], state.get("plan")
        started = time.perf_counter()
        executor = self.executor
        run: GrowingPlanRun = yield _Call(
            partial(executor.grow, config), partial(executor.agrow, config)
        )
        try:
            # (plan, the sub-queries streamed): the decomposition's outcome, once known.
            outcome: tuple[Plan, Sequence[SubQuery]] | None = None
            if given is None:
                arrivals = _Arrivals(run.new_future)
                decompose = self._decompose_task(self._request(state), arrivals, run.asynchronous)
                plan_task: Any = task(name="decompose")(decompose)()  # type: ignore[arg-type]
            else:
                outcome = (given, ())
            added = 0
            plan: Plan | None = None  # the final plan, routed
            planned = route_after = 0.0
            done: set[Any] = set()
            while True:
                if outcome is None and plan_task.done():
                    outcome = plan_task.result()
                news = outcome[1][added:] if outcome is not None else arrivals.since(added)
                for sq in news:
                    routed = yield _stage(self.router, Plan(query=query, sub_queries=(sq,)), config)
                    run.add(routed.sub_queries[0])
                    added += 1
                if outcome is not None and plan is None:
                    planned = time.perf_counter()
                    emit({"type": "plan", "data": outcome[0]}, config)
                    plan = run.keep_routes(outcome[0])
                    if unrouted := tuple(sq for sq in plan.sub_queries if sq.route is None):
                        rest = plan.model_copy(update={"sub_queries": unrouted})
                        plan = _keep_routes(plan, (yield _stage(self.router, rest, config)))
                    route_after = time.perf_counter() - planned
                    run.end(plan)
                running = run.advance(done)
                if run.complete:
                    break
                waits = (
                    running if outcome is not None else {*running, plan_task, arrivals.at(added)}
                )
                done = yield _Call(partial(first_done, waits), partial(afirst_done, waits))
        finally:
            run.close()
        execution = run.result()
        timings = {
            "decompose": planned - started,
            "route": route_after,
            "execute": time.perf_counter() - planned - route_after,
        }
        return {"plan": plan, "results": execution.results, "answer": "", "timings": timings}

    def _decompose_task(
        self, request: Any, arrivals: _Arrivals, asynchronous: bool
    ) -> Callable[[], Any]:
        """The body of the plan's task: the plan, with the sub-queries the generator
        streamed (when it can: a :class:`SubQueryGenerator`), in the order they came."""

        def call() -> _Call:
            config = quiet(get_config())  # the task's own run
            generator = self.generator
            if not isinstance(generator, SubQueryGenerator):
                return _stage(generator, request, config)
            return _Call(
                partial(generator.stream_plan, request, arrivals.put, config),
                partial(generator.astream_plan, request, arrivals.put, config),
            )

        if asynchronous:

            async def adecompose() -> tuple[Plan, tuple[SubQuery, ...]]:
                return await call().asynchronous(), arrivals.close()

            return adecompose

        def decompose() -> tuple[Plan, tuple[SubQuery, ...]]:
            return call().sync(), arrivals.close()

        return decompose

    def route(self, state: CompLLMState, config: RunnableConfig) -> Steps[_Call, Any]:
        plan = _plan(state)
        started = time.perf_counter()
        if any(sq.route is None for sq in plan.sub_queries):
            plan = _keep_routes(plan, (yield _stage(self.router, plan, config)))
        timings = {**state["timings"], "route": time.perf_counter() - started}
        return {"plan": plan, "timings": timings}

    def review(self, state: CompLLMState, config: RunnableConfig) -> Steps[_Call, Any]:
        plan = _plan(state)
        request = _review_request(plan, list(self.executor.experts))
        while True:
            try:
                edited = apply_review(plan, interrupt(request), self.executor.experts)
                break
            except PlanReviewError as exc:  # ask again; the run stays at this interrupt
                request = {**request, "error": str(exc)}
        if any(sq.route is None for sq in edited.sub_queries):
            edited = _keep_routes(edited, (yield _stage(self.router, edited, config)))
        if edited != plan:
            emit({"type": "plan", "data": edited}, config)
        return {"plan": edited}

    def execute(self, state: CompLLMState, config: RunnableConfig) -> Steps[_Call, Any]:
        plan = _plan(state)
        started = time.perf_counter()
        run = self.executor
        execution = yield _Call(partial(run.run, plan, config), partial(run.arun, plan, config))
        timings = {**state["timings"], "execute": time.perf_counter() - started}
        return {"results": execution.results, "timings": timings}

    def aggregate(self, state: CompLLMState, config: RunnableConfig) -> Steps[_Call, Any]:
        query, plan, results = state["query"], _plan(state), state["results"]
        started = time.perf_counter()
        data = AggregationInput(query=query, results=list(results.values()))
        timings = dict(state["timings"])
        try:
            message: AIMessage = yield _stage(self.aggregator, data, config)
        except Exception as exc:
            partial_output = CompLLMOutput.model_construct(
                query=query, answer="", plan=plan, results=results, timings=timings
            )
            raise AggregationError(
                f"the aggregator failed ({type(exc).__name__}: {exc}); the error's output "
                "holds the plan and every sub-answer",
                partial_output,
            ) from exc
        timings["aggregate"] = time.perf_counter() - started
        timings["total"] = sum(timings.values())
        answer = message.text
        # Built from validated parts: no need to validate them again.
        output = CompLLMOutput.model_construct(
            query=query, answer=answer, plan=plan, results=results, timings=timings
        )
        emit({"type": "done", "data": output}, config)
        return {"answer": answer, "timings": timings, "messages": [message]}


def _plan(state: CompLLMState) -> Plan:
    plan = state.get("plan")
    assert plan is not None  # written by the decompose node, the first of every run
    return plan


def _keep_routes(plan: Plan, routed: Plan) -> Plan:
    """``plan`` with the routes of ``routed``'s sub-queries (by id), keeping the routes
    ``plan`` already had (given, set by a reviewer, or streamed)."""
    routes = routed.by_id
    return plan.model_copy(
        update={
            "sub_queries": tuple(
                sq if sq.route is not None else routes.get(sq.id, sq) for sq in plan.sub_queries
            )
        }
    )


# --- plan review ----------------------------------------------------------------------------


def _review_request(plan: Plan, experts: list[str]) -> dict[str, Any]:
    return {
        "type": PLAN_REVIEW,
        "plan": plan.model_dump(mode="json"),
        "text": plan.to_text(),
        "experts": experts,
        "resume": (
            "Command(resume=...) with 'approve'; or {'action': 'edit', 'sub_queries': "
            "{id: {'question': ..., 'depends_on': [...], 'expert': ...}}}; or "
            "{'action': 'replace', 'plan': {'sub_queries': [...]}}"
        ),
    }


def apply_review(plan: Plan, answer: Any, experts: Iterable[str]) -> Plan:
    """The plan a reviewer's ``answer`` to the plan-review interrupt asks for.

    ``answer`` approves (``"approve"``, ``True``, ``None`` or ``{"action": "approve"}``),
    edits sub-queries (``{"action": "edit", "sub_queries": {id: {"question": ...,
    "depends_on": [...], "expert": ...}}}``; fields left out are kept) or replaces the plan
    (``{"action": "replace", "plan": ...}`` or a :class:`Plan`; its sub-queries without an
    expert are routed). An edited question keeps its expert unless the edit names one.

    Raises:
        PlanReviewError: the answer is not one of those, names an unknown sub-query, field or
            expert, or gives a plan that is not a valid DAG.
    """
    names = sorted(experts)
    if isinstance(answer, Plan):
        answer = {"action": "replace", "plan": answer}
    if answer is None or answer is True or answer == "approve":
        answer = {"action": "approve"}
    if not isinstance(answer, Mapping) or "action" not in answer:
        raise PlanReviewError(
            f"a plan review answer is 'approve' or a dict with an 'action', got {answer!r}"
        )
    action = answer["action"]
    if action == "approve":
        return plan
    if action == "edit":
        edited = _edit(plan, answer.get("sub_queries"), names)
    elif action == "replace":
        edited = _replacement(plan, answer.get("plan"))
    else:
        raise PlanReviewError(
            f"unknown plan review action {action!r} (use 'approve', 'edit' or 'replace')"
        )
    for sq in edited.sub_queries:
        check_known(f"sub-query {sq.id!r}", [sq.expert], names, error=PlanReviewError)
    try:
        return edited.validate_dag(max_sub_queries=None)
    except PlanValidationError as exc:
        raise PlanReviewError(f"the reviewed plan is not valid: {exc}") from None


_EDITABLE = ("question", "depends_on", "expert")


def _edit(plan: Plan, edits: Any, experts: Sequence[str]) -> Plan:
    if not isinstance(edits, Mapping) or not edits:
        raise PlanReviewError("an 'edit' needs 'sub_queries': {id: {field: value}}")
    unknown = sorted(set(edits) - set(plan.by_id))
    if unknown:
        raise PlanReviewError(
            f"no sub-query {', '.join(map(repr, unknown))} in the plan "
            f"(ids: {', '.join(plan.by_id)})"
        )
    sub_queries = []
    for sq in plan.sub_queries:
        change = edits.get(sq.id, {})
        if not isinstance(change, Mapping) or set(change) - set(_EDITABLE):
            raise PlanReviewError(
                f"edit of {sq.id!r}: give a dict of {', '.join(_EDITABLE)}, got {change!r}"
            )
        question = change.get("question", sq.question)
        deps = change.get("depends_on", sq.depends_on)
        if not isinstance(question, str) or isinstance(deps, str):
            raise PlanReviewError(
                f"edit of {sq.id!r}: 'question' is text and 'depends_on' a list of ids"
            )
        expert = change.get("expert", sq.expert)
        route = sq.route
        if expert is not None and (route is None or expert != route.expert):
            check_known(f"edit of {sq.id!r}", [expert], experts, error=PlanReviewError)
            scores = route.scores if route is not None else {}
            route = RoutingDecision(
                sub_query_id=sq.id,
                question=question,
                expert=expert,
                score=scores.get(expert, 0.0),
                scores=scores,
            )
        elif route is not None and question != sq.question:
            route = route.model_copy(update={"question": question})
        sub_queries.append(
            SubQuery(id=sq.id, question=question, depends_on=tuple(deps), route=route)
        )
    return plan.model_copy(update={"sub_queries": tuple(sub_queries), "fallback_reason": None})


def _replacement(plan: Plan, value: Any) -> Plan:
    if isinstance(value, Mapping):
        value = {"query": plan.query, **value}
    try:
        replacement = value if isinstance(value, Plan) else Plan.model_validate(value)
    except ValidationError as exc:
        raise PlanReviewError(f"the replacement plan is not a plan: {exc}") from None
    return replacement.model_copy(update={"query": plan.query})


def _pending_review(state: Any) -> tuple[Plan, str] | None:
    """The plan and interrupt id a thread waits on review for, if it does."""
    for pending in state.interrupts:
        value = pending.value
        if isinstance(value, Mapping) and value.get("type") == PLAN_REVIEW:
            return Plan.model_validate(value["plan"]), pending.id
    return None


# --- the runnable ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSettings:
    """What the graph checks at its boundary, before LangGraph runs anything."""

    max_query_chars: int | None
    experts: tuple[str, ...]
    review: bool


class CompLLMGraph(CompiledStateGraph[CompLLMState, None, CompLLMInput, CompLLMOutputState]):
    """The compiled Comp-LLM ``StateGraph`` (what :func:`create_comp_llm` returns).

    A LangGraph graph in every way; it adds the input forms LangGraph alone would reject (a
    plain string, chat messages, a plan), fails fast on bad input or an invalid plan-review
    answer with a clear error, and reads a run's ``max_concurrency`` as the cap on experts
    running at once (never starving the graph's own threads). ``as_tool()`` makes a tool
    that returns the answer text, and ``comp | output_parser`` parses the answer.
    """

    def __init__(self, *, pipeline_settings: PipelineSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline_settings = pipeline_settings

    def stream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        input, config = self._boundary(input, config)
        if self._reviewing(input):
            self._check_review(input, self.get_state(config))
        try:
            yield from super().stream(input, config, **kwargs)
        except EmptyInputError:
            raise _not_a_query(None, _NOTHING_TO_RESUME) from None

    async def astream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        input, config = self._boundary(input, config)
        if self._reviewing(input):
            self._check_review(input, await self.aget_state(config))
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        except EmptyInputError:
            raise _not_a_query(None, _NOTHING_TO_RESUME) from None

    def _boundary(self, input: Any, config: RunnableConfig | None) -> tuple[Any, RunnableConfig]:
        config = langgraph_config(config)
        if input is None:
            if not (config.get("configurable") or {}).get("thread_id"):
                raise _not_a_query(None, _NONE_RESUMES)
            return None, config
        if isinstance(input, Command):
            return input, config
        return coerce_input(input, self.pipeline_settings.max_query_chars), config

    def _reviewing(self, input: Any) -> bool:
        return (
            self.pipeline_settings.review
            and isinstance(input, Command)
            and input.resume is not None
        )

    def _check_review(self, command: Command, state: Any) -> None:
        pending = _pending_review(state)
        if pending is None:
            return
        plan, interrupt_id = pending
        answer = command.resume
        if isinstance(answer, Mapping) and interrupt_id in answer:
            answer = answer[interrupt_id]
        apply_review(plan, answer, self.pipeline_settings.experts)

    def as_tool(  # type: ignore[override]
        self,
        args_schema: type[BaseModel] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> BaseTool:
        """A tool that takes a ``query`` and returns the answer text (the trace stays in
        the run's own output)."""
        return StructuredTool.from_function(
            func=self._answer,
            coroutine=self._aanswer,
            name=name or "comp_llm",
            description=description
            or "Answers a question with several expert models: it decomposes the question, "
            "asks an expert for each part and combines their answers. Input: the question.",
            args_schema=args_schema or _ToolInput,
        )

    def _answer(self, query: str, config: RunnableConfig) -> str:
        return self.invoke({"query": query}, config)["answer"]  # type: ignore[no-any-return]

    async def _aanswer(self, query: str, config: RunnableConfig) -> str:
        return (await self.ainvoke({"query": query}, config))["answer"]  # type: ignore[no-any-return]

    def __or__(self, other: Any) -> Runnable[Any, Any]:  # type: ignore[override]
        if isinstance(other, BaseOutputParser):
            # An output parser reads text or a message: hand it the answer.
            return RunnableSequence(self, _ANSWER, other)
        return super().__or__(other)

    def pipe(self, *others: Any, name: str | None = None) -> Runnable[Any, Any]:  # type: ignore[override]
        if others and isinstance(others[0], BaseOutputParser):
            return RunnableSequence(self, _ANSWER, *others, name=name)
        return super().pipe(*others, name=name)


_NONE_RESUMES = (
    " (None only resumes an interrupted run, on a thread of a graph with a checkpointer)"
)
_NOTHING_TO_RESUME = " (this thread has no interrupted run to resume)"


class _ToolInput(BaseModel):
    query: str = Field(description="The question to answer.")


def _answer_chunks(chunks: Iterator[Any]) -> Iterator[AIMessageChunk]:
    for chunk in chunks:
        if text := _answer_text(chunk):
            yield AIMessageChunk(content=text)


async def _aanswer_chunks(chunks: AsyncIterator[Any]) -> AsyncIterator[AIMessageChunk]:
    async for chunk in chunks:
        if text := _answer_text(chunk):
            yield AIMessageChunk(content=text)


def _answer_text(chunk: Any) -> str:
    """The answer text in a run's output (invoke) or in one of its progress events (stream)."""
    if isinstance(chunk, Mapping):
        if "type" in chunk:
            return chunk.get("content", "") if chunk["type"] == "token" else ""
        return chunk.get("answer", "")
    return ""


_ANSWER = RunnableGenerator(_answer_chunks, _aanswer_chunks, name="answer")


def create_comp_llm(
    experts: Iterable[Expert],
    *,
    generator: Runnable[Any, Plan] | BaseChatModel,
    router: BaseRouter | Embeddings,
    aggregator: ResponseAggregator | BaseChatModel | None = None,
    mode: ScheduleMode = "superstep",
    max_concurrency: int | None = None,
    failure_policy: FailurePolicy | None = None,
    routing_threshold: float | None = None,
    fallback_expert: str | None = None,
    max_sub_queries: int = DEFAULT_MAX_SUB_QUERIES,
    max_query_chars: int | None = DEFAULT_MAX_QUERY_CHARS,
    review_plan: bool = False,
    stream_plan: bool = False,
    checkpointer: BaseCheckpointSaver | None = None,
    name: str = "CompLLM",
) -> CompLLMGraph:
    """Build the Comp-LLM runnable: a compiled LangGraph ``StateGraph``.

    Args:
        experts: The expert models with their profiles; names must be unique.
        generator: A chat model, decomposing with :class:`SubQueryGenerator`'s default prompt,
            or any ``Runnable[str, Plan]`` (a configured :class:`SubQueryGenerator`, the
            :class:`~langchain_complm.decompose.StructuralSubQueryGenerator`, ...).
            :func:`~langchain_complm.config.build_comp_llm` fills in the embedded defaults.
            A :class:`SubQueryGenerator` also sees the conversation before the question.
        router: A router (an :class:`EmbeddingRouter`, a
            :class:`~langchain_complm.route.TwoStepRouter`, ...), or an embeddings model to
            build an :class:`EmbeddingRouter` over the experts.
        aggregator: A :class:`ResponseAggregator`, or a chat model to build one. ``None``
            uses the generator's chat model (required when the generator has none).
        mode: How sub-queries are scheduled (see :data:`ScheduleMode`).
        max_concurrency: At most this many experts run at once (default: unlimited).
        failure_policy: Retries, fallback expert, timeout and raise-or-continue for experts.
        routing_threshold: With ``fallback_expert``, sub-queries whose best routing score is
            lower go to the fallback expert (ignored when ``router`` is a router).
        fallback_expert: The expert for low-scoring sub-queries.
        max_sub_queries: Cap on sub-queries per plan (ignored when ``generator`` is a
            SubQueryGenerator, which has its own).
        max_query_chars: Longer queries are rejected with a ``ValueError``.
        review_plan: Pause every run after routing (a LangGraph interrupt carrying the
            routed plan) until it is resumed with ``Command(resume=...)``: see
            :func:`apply_review`. Needs a checkpointer (here, or the parent graph's or the
            server's).
        stream_plan: Plan streaming: start each sub-query as soon as it and its parents
            are written, while the generator writes the rest (a :class:`SubQueryGenerator`
            streams its model's reply; another generator's plan arrives whole). Decompose,
            route and execute are then one node, ``decompose_execute``; the whole plan is
            still validated when it ends, and decides what runs. Needs ``mode`` ``"eager"``
            or ``"sequential"``; not with ``review_plan``.
        checkpointer: Optional LangGraph checkpointer (threads, resumption, plan review).
        name: The run name shown in traces.

    Returns:
        A :class:`CompLLMGraph`. ``invoke("...")`` (or ``{"query": ...}``, chat messages,
        ``{"plan": ...}``) returns the output state: ``query``, ``answer``, ``plan``,
        ``results``, ``timings`` and ``messages`` (the conversation with the answer
        appended); ``stream`` yields :class:`~langchain_complm.events.ProgressEvent` dicts
        (``stream_mode="custom"`` by default; any LangGraph stream mode can be asked for).

    Raises:
        ValueError: no experts, duplicate expert names, an unknown fallback expert, no
            model to aggregate with, or ``stream_plan`` with ``review_plan`` or supersteps.
    """
    by_name = check_experts(experts)
    if stream_plan and review_plan:
        raise ValueError(
            "stream_plan starts experts before the plan is complete, review_plan waits for "
            "it: choose one"
        )
    if stream_plan and mode == "superstep":
        raise ValueError(
            "stream_plan starts each sub-query once its parents are known; supersteps wait "
            "for the whole plan's levels: use mode='eager' (or 'sequential')"
        )
    check_known("fallback_expert", [fallback_expert], by_name)
    if isinstance(generator, BaseChatModel):
        generator = SubQueryGenerator(llm=generator, max_sub_queries=max_sub_queries)
    if not isinstance(router, BaseRouter):
        router = EmbeddingRouter(
            experts=list(by_name.values()),
            embeddings=router,
            threshold=routing_threshold,
            fallback_expert=fallback_expert if routing_threshold is not None else None,
        )
    check_known("the router", router.expert_names, by_name)
    if not isinstance(aggregator, ResponseAggregator):
        llm = aggregator or getattr(generator, "llm", None)
        if llm is None:
            raise ValueError(
                "an aggregator (a chat model or a ResponseAggregator) is required when the "
                "generator has no chat model of its own"
            )
        aggregator = ResponseAggregator(llm=llm)
    executor = QueryExecutor(
        experts=by_name,
        mode=mode,
        max_concurrency=max_concurrency,
        failure_policy=failure_policy or FailurePolicy(),
        load=router.load,
    )
    stages = _Stages(generator, router, executor, aggregator)
    builder = StateGraph(CompLLMState, input_schema=CompLLMInput, output_schema=CompLLMOutputState)
    if stream_plan:
        order = ["decompose_execute", "aggregate"]
    else:
        order = ["decompose", "route", *(["review"] if review_plan else []), "execute", "aggregate"]
    for stage in order:
        builder.add_node(stage, _Node(getattr(stages, stage), stage))
    for src, dst in zip([START, *order], [*order, END], strict=True):
        builder.add_edge(src, dst)
    compiled = builder.compile(checkpointer=checkpointer, name=name)
    graph = CompLLMGraph(
        pipeline_settings=PipelineSettings(max_query_chars, tuple(by_name), review_plan),
        **{k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"},
    )
    graph.stream_mode = "custom"
    return graph


__all__ = [
    "CHECKPOINT_TYPES",
    "DEFAULT_MAX_QUERY_CHARS",
    "PLAN_REVIEW",
    "CompLLMGraph",
    "CompLLMInput",
    "CompLLMOutput",
    "CompLLMOutputState",
    "CompLLMState",
    "apply_review",
    "coerce_input",
    "coerce_query",
    "create_comp_llm",
]
