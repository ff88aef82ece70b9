"""Sub-query Generator: decomposes a query into a :class:`~langchain_complm.plan.Plan`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    SystemMessage,
)
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from langchain_complm.concurrency import (
    DEFAULT_TIMEOUT,
    Steps,
    arun_steps,
    astream_with_timeout,
    await_with_timeout,
    call_with_timeout,
    run_steps,
    stream_with_timeout,
)
from langchain_complm.decompose._parser import PlanStreamParser, parse_plan
from langchain_complm.decompose.repair import repair_plan
from langchain_complm.errors import PlanValidationError
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, Plan, SubQuery, invalid_text
from langchain_complm.prompts import DECOMPOSE_CONVERSATION, DECOMPOSE_PROMPT, DECOMPOSE_RETRY

logger = logging.getLogger(__name__)


_ID_SCHEMA: dict[str, JsonValue] = {"pattern": "^q[1-9][0-9]?$"}
"""Ids as the prompts ask for them (q1, q2, ...)."""
_STRICT: dict[str, JsonValue] = {"additionalProperties": False}
"""Schema-only strictness: a grammar built from the schema allows no other keys, while
validation still ignores extra keys a tool-calling model adds."""


class _SubQueryOut(BaseModel):
    """One sub-question, as the model writes it."""

    # All three keys are required of a model writing JSON, in this order (the order the
    # trained generator learned); validation still defaults ``depends_on``.
    model_config = ConfigDict(
        json_schema_extra=_STRICT | {"required": ["id", "question", "depends_on"]}
    )

    id: str = Field(description="Identifier such as q1.", json_schema_extra=_ID_SCHEMA)
    question: str = Field(
        description="The self-contained sub-question.", json_schema_extra={"minLength": 1}
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Ids of earlier sub-questions whose answers it needs.",
        json_schema_extra={"items": {"type": "string", **_ID_SCHEMA}},
    )


class PlanOutput(BaseModel):
    """Structured-output schema of a decomposition."""

    model_config = ConfigDict(json_schema_extra=_STRICT)

    sub_queries: list[_SubQueryOut] = Field(
        description="The sub-questions, in order.", json_schema_extra={"minItems": 1}
    )


def plan_json_schema(max_sub_queries: int = DEFAULT_MAX_SUB_QUERIES) -> dict[str, Any]:
    """The plan's grammar as a JSON schema, for constrained decoding: at most
    ``max_sub_queries`` sub-queries; the k-th has the id ``qk``, depends only on ``q1`` to
    ``q(k-1)`` and names no other id as a placeholder (other braces, as in code, are text).
    A reply that follows it is a DAG by construction: no unknown or self dependency, no
    cycle, no placeholder ahead of its sub-query (one without its dependency is added by
    repair). Keys in the order the trained generator writes them.
    """
    items = []
    for k in range(1, max_sub_queries + 1):
        earlier = [f"q{i}" for i in range(1, k)]
        placeholders = rf"|\{{(?:{'|'.join(earlier)})\}}" if earlier else ""
        items.append(
            {
                "type": "object",
                "properties": {
                    "id": {"const": f"q{k}"},
                    "question": {
                        "type": "string",
                        "pattern": rf"^(?:[^{{]|\{{[^q}}]{placeholders})+$",
                    },
                    "depends_on": {
                        "type": "array",
                        **({"items": {"enum": earlier}} if earlier else {}),
                        "maxItems": len(earlier),
                    },
                },
                "required": ["id", "question", "depends_on"],
                "additionalProperties": False,
            }
        )
    return {
        "title": "PlanOutput",
        "type": "object",
        "properties": {
            "sub_queries": {"type": "array", "prefixItems": items, "items": False, "minItems": 1}
        },
        "required": ["sub_queries"],
        "additionalProperties": False,
    }


def supports_structured_output(llm: BaseChatModel) -> bool:
    """Whether ``llm`` can be held to a schema: it implements ``with_structured_output``
    (a served engine's JSON schema, a local model's constrained decoding) or tool calling,
    which the default ``with_structured_output`` builds on."""
    cls = type(llm)
    return (
        cls.bind_tools is not BaseChatModel.bind_tools
        or cls.with_structured_output is not BaseChatModel.with_structured_output
    )


class DecompositionInput(BaseModel):
    """A question and the conversation before it (system messages and earlier turns)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    query: str
    history: Sequence[BaseMessage] = ()


class ConversationPolicy(BaseModel):
    """How much of the conversation the decomposer sees.

    System messages come first, then the turns before the question: the most recent ones,
    at most ``max_messages`` of them and ``max_chars`` characters in all (the older turns are
    left out), each message cut to ``max_message_chars``. Only the text of user and
    assistant messages counts; tool calls and tool results are left out.
    """

    model_config = ConfigDict(frozen=True)

    max_messages: int = Field(default=6, ge=0)
    max_chars: int = Field(default=2000, ge=0)
    max_message_chars: int = Field(default=500, ge=1)

    def render(self, history: Sequence[BaseMessage]) -> str:
        """The conversation as ``Role: text`` lines, oldest first, within the bounds."""
        system = [self._line("System", m) for m in history if isinstance(m, SystemMessage)]
        turns: list[str] = []
        budget = self.max_chars - sum(len(line) for line in system)
        for message in reversed(history):
            role = {HumanMessage: "User", AIMessage: "Assistant"}.get(type(message))
            if role is None or not message.text.strip() or len(turns) >= self.max_messages:
                continue
            line = self._line(role, message)
            if len(line) > budget:
                break
            turns.append(line)
            budget -= len(line)
        return "\n".join([*system, *reversed(turns)])

    def _line(self, role: str, message: BaseMessage) -> str:
        text = " ".join(message.text.split())
        if len(text) > self.max_message_chars:
            text = text[: self.max_message_chars - 3] + "..."
        return f"{role}: {text}"


class SubQueryGenerator(RunnableSerializable[str | DecompositionInput, Plan]):
    """Decomposes a query into sub-queries with dependencies, over any chat model.

    Uses structured output when the model supports it (tool calling, a served engine's JSON
    schema, or a local model's grammar-constrained decoding, so that every reply is a plan),
    otherwise a few-shot prompt and a tolerant JSON parser. Given a
    :class:`DecompositionInput`, the model also sees the conversation before the question
    (bounded by ``conversation``) and is asked to make every sub-question self-contained.
    With a ``shape_router``, each question's plan is written by the model for its shape
    (``shape_llms``; see :mod:`~langchain_complm.decompose.shapes`).
    Every plan then goes through :func:`~langchain_complm.decompose.repair.repair_plan`
    (unless ``repair=False``). An invalid decomposition is retried once with the error shown
    to the model; if it fails again (or the model raises, or takes longer than ``timeout``),
    the generator falls back to a single sub-query holding the whole query and records why
    in ``Plan.fallback_reason``. The query itself must be non-empty text.

    Example:
        .. code-block:: python

            generator = SubQueryGenerator(llm=chat_model)
            plan = generator.invoke("What is 2+2, and who wrote Hamlet?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: BaseChatModel
    """The chat model that writes the decomposition (of a question whose shape has no model
    in ``shape_llms``)."""
    shape_router: Runnable[str, str] | None = None
    """Names each question's shape (e.g. a :class:`~langchain_complm.decompose.shapes.ShapeRouter`);
    None: ``llm`` writes every plan. A router that fails leaves the question to ``llm``."""
    shape_llms: dict[str, BaseChatModel] = Field(default_factory=dict)
    """The chat model that writes the plans of each shape the router names."""
    prompt: ChatPromptTemplate = DECOMPOSE_PROMPT
    """Prompt with ``query`` and ``max_sub_queries`` variables."""
    retry_message: str = DECOMPOSE_RETRY
    """Sent after an invalid reply, with ``error``."""
    max_sub_queries: int = Field(default=DEFAULT_MAX_SUB_QUERIES, ge=1)
    """Plans with more sub-queries are invalid."""
    structured_output: bool | None = None
    """Force structured output on or off; ``None`` uses it when the model supports it."""
    timeout: float | None = Field(default=DEFAULT_TIMEOUT, gt=0)
    """Seconds the model may take per reply (``None``: no limit); a slower reply is given up
    (an async call is cancelled) and the query answered whole."""
    conversation: ConversationPolicy = Field(default_factory=ConversationPolicy)
    """How much of a question's conversation the model sees."""
    conversation_message: str = DECOMPOSE_CONVERSATION
    """System message before the question when it has a conversation (``conversation``)."""
    repair: bool = True
    """Repair every plan (see :mod:`~langchain_complm.decompose.repair`)."""
    plan_schema: dict[str, Any] | None = None
    """The JSON schema structured output asks for; None: :class:`PlanOutput`'s (what tool
    calling and served engines get). A local model's constrained decoding can follow
    :func:`plan_json_schema`, which only valid DAGs satisfy."""
    name: str | None = "SubQueryGenerator"

    def invoke(
        self, input: str | DecompositionInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Plan:
        return self._call_with_config(self._decompose, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: str | DecompositionInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Plan:
        return await self._acall_with_config(
            self._adecompose, input, config, run_type="chain", **kwargs
        )

    def _use_structured(self, llm: BaseChatModel) -> bool:
        if self.structured_output is not None:
            return self.structured_output
        return supports_structured_output(llm)

    def messages(self, query: str, history: Sequence[BaseMessage] = ()) -> list[BaseMessage]:
        """The prompt the generator sends for ``query`` asked after ``history``."""
        messages = self.prompt.format_messages(query=query, max_sub_queries=self.max_sub_queries)
        if conversation := self.conversation.render(history):
            context = SystemMessage(self.conversation_message.format(conversation=conversation))
            messages.insert(len(messages) - 1, context)
        return messages

    def _llm(self, shape: str | None) -> BaseChatModel:
        return self.shape_llms.get(shape, self.llm) if shape is not None else self.llm

    def reply_model(self, shape: str | None = None) -> Runnable[list[BaseMessage], Any]:
        """What the generator calls with its :meth:`messages` for a question of ``shape``
        (the shape router's name; None: ``llm``'s): the chat model, or with structured
        output its ``with_structured_output(PlanOutput, include_raw=True)`` runnable;
        :func:`reply_text` reads either reply."""
        llm = self._llm(shape)
        if self._use_structured(llm):
            schema = self.plan_schema or PlanOutput
            return llm.with_structured_output(schema, include_raw=True)
        return llm

    def _to_plan(self, reply: Any, query: str) -> Plan:
        return plan_from_reply(
            reply, query, max_sub_queries=self.max_sub_queries, repair=self.repair
        )

    def stream_plan(
        self,
        input: str | DecompositionInput,
        on_sub_query: Callable[[SubQuery], None],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Plan:
        """:meth:`invoke`, with the model's reply streamed: ``on_sub_query(sq)`` gets each
        sub-query as soon as it and its parents are written in full (see
        :class:`PlanStreamParser`), while the model writes the rest.

        The plan returned is the one :meth:`invoke` makes of the whole reply (validated,
        retried once, or the fallback), which may leave out or change sub-queries handed out
        early. Only the first reply streams; with structured output nothing streams (the
        sub-queries come with the plan). ``on_sub_query`` must not raise, and under a
        ``timeout`` it may run in another thread (it is not called once the reply is given
        up).
        """
        decompose = partial(self._decompose, on_sub_query=on_sub_query)
        return self._call_with_config(decompose, input, config, run_type="chain", **kwargs)

    async def astream_plan(
        self,
        input: str | DecompositionInput,
        on_sub_query: Callable[[SubQuery], None],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Plan:
        """:meth:`stream_plan` with the model's async stream (``on_sub_query`` is called on
        the event loop)."""
        decompose = partial(self._adecompose, on_sub_query=on_sub_query)
        return await self._acall_with_config(decompose, input, config, run_type="chain", **kwargs)

    def _decompose(
        self,
        input: str | DecompositionInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        on_sub_query: Callable[[SubQuery], None] | None = None,
    ) -> Plan:
        return run_steps(self._steps(input, run_manager, config, on_sub_query), _reply)

    async def _adecompose(
        self,
        input: str | DecompositionInput,
        run_manager: Any,
        config: RunnableConfig,
        on_sub_query: Callable[[SubQuery], None] | None = None,
    ) -> Plan:
        steps = self._steps(input, run_manager, config, on_sub_query)
        return await arun_steps(steps, _areply)

    def _steps(
        self,
        input: str | DecompositionInput,
        run_manager: Any,
        config: RunnableConfig,
        on_sub_query: Callable[[SubQuery], None] | None,
    ) -> Steps[_Reply, Plan]:
        query, history = _unpack(input)
        _check_query(query)
        child: RunnableConfig = {**config, "callbacks": run_manager.get_child()}
        shape = None
        if self.shape_router is not None:
            try:
                shape = yield _Reply(self.shape_router, query, child, self.timeout, None)
            except Exception as exc:
                logger.warning("shape router failed, llm writes the plan (%s)", _short(exc))
        model = self.reply_model(shape)
        messages = self.messages(query, history)
        streamed = None
        # Structured output has nothing to stream: its sub-queries come with the plan.
        if on_sub_query is not None and not self._use_structured(self._llm(shape)):
            streamed = _Streamed(PlanStreamParser(query, self.max_sub_queries), on_sub_query)
        error: Exception | None = None
        for attempt in range(2):
            reply = None
            try:
                # Only the first reply streams: a retry's plan replaces it whole.
                call = _Reply(model, messages, child, self.timeout, None if attempt else streamed)
                reply = yield call
                return self._to_plan(reply, query)
            except Exception as exc:
                error = exc
                if attempt or not _is_bad_output(exc):
                    break
                messages = self._retry_messages(messages, reply, exc)
        return self._fallback(query, error)

    def _retry_messages(
        self, messages: list[BaseMessage], reply: Any, error: Exception
    ) -> list[BaseMessage]:
        text = "" if reply is None else reply_text(reply)
        shown = [AIMessage(content=text)] if text else []
        return [
            *messages,
            *shown,
            HumanMessage(content=self.retry_message.format(error=_short(error))),
        ]

    def _fallback(self, query: str, error: Exception | None) -> Plan:
        reason = f"{type(error).__name__}: {_short(error)}"
        logger.warning("decomposition failed, answering the query whole (%s)", reason)
        return Plan.single(query, fallback_reason=reason)


_DECOMPOSER = "the decomposer model"


@dataclass(frozen=True)
class _Streamed:
    """Where a streamed reply's sub-queries go as they come out."""

    parser: PlanStreamParser
    on_sub_query: Callable[[SubQuery], None]

    def add(self, reply: BaseMessageChunk | None, chunk: BaseMessageChunk) -> BaseMessageChunk:
        for sq in self.parser.feed(chunk.text):
            self.on_sub_query(sq)
        return chunk if reply is None else reply + chunk


@dataclass(frozen=True)
class _Reply:
    """One reply of the decomposer's model (or its shape router), invoked or (with
    ``streamed``) streamed."""

    model: Runnable[Any, Any]
    input: Any
    config: RunnableConfig
    timeout: float | None
    streamed: _Streamed | None


def _reply(call: _Reply) -> Any:
    if call.streamed is None:
        invoke = partial(call.model.invoke, call.input, call.config)
        return call_with_timeout(invoke, call.timeout, _DECOMPOSER)
    stream = partial(call.model.stream, call.input, call.config)
    return stream_with_timeout(stream, call.streamed.add, call.timeout, _DECOMPOSER)


async def _areply(call: _Reply) -> Any:
    if call.streamed is None:
        invoke = call.model.ainvoke(call.input, call.config)
        return await await_with_timeout(invoke, call.timeout, _DECOMPOSER)
    stream = partial(call.model.astream, call.input, call.config)
    return await astream_with_timeout(stream, call.streamed.add, call.timeout, _DECOMPOSER)


def _unpack(input: str | DecompositionInput) -> tuple[str, Sequence[BaseMessage]]:
    if isinstance(input, DecompositionInput):
        return input.query, input.history
    return input, ()


def _check_query(query: Any) -> None:
    """The fallback answers the query whole, so it must be a valid sub-query's question."""
    if not isinstance(query, str):
        raise TypeError(f"the query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("the query is empty")
    if (problem := invalid_text(query)) is not None:
        raise ValueError(f"the query has {problem}")


def _is_bad_output(error: Exception) -> bool:
    """Unusable model output (worth one retry), as opposed to the model failing to run.

    Parse errors, including structured-output ``OutputParserException``, and plan validation
    errors are all ``ValueError``s.
    """
    return isinstance(error, (ValueError, ValidationError))


def reply_text(reply: Any) -> str:
    """The text of a generator model's reply: a message's text, a structured output as JSON,
    or for ``include_raw`` structured output the raw reply's text (its parsed output when
    the raw reply holds no text, as with tool calls)."""
    if isinstance(reply, dict) and "raw" in reply:
        raw_text = reply_text(reply["raw"]) if reply["raw"] is not None else ""
        parsed = reply.get("parsed")
        return raw_text if raw_text.strip() or parsed is None else reply_text(parsed)
    text: str
    if isinstance(reply, BaseMessage):
        text = str(reply.text)
    elif isinstance(reply, BaseModel):
        text = reply.model_dump_json()
    else:
        text = str(reply)
    # Lone surrogates (which a reply can hold) become "?": the message that shows the reply
    # back to the model must be valid text.
    return text.encode("utf-8", "replace").decode("utf-8")


def plan_from_reply(
    reply: Any,
    query: str,
    *,
    max_sub_queries: int | None = DEFAULT_MAX_SUB_QUERIES,
    repair: bool = True,
) -> Plan:
    """The validated plan a generator model's reply stands for, as the generator makes it:
    parsed (structured output, or :func:`parse_plan`), repaired
    (:func:`~langchain_complm.decompose.repair.repair_plan`) unless ``repair=False``, and
    validated.

    Raises:
        ValueError: the reply holds no plan, or its plan is invalid (``PlanValidationError``),
            or repair found that it asks nothing of the question.
    """
    plan = _reply_plan(reply, query)
    if repair:
        repaired = repair_plan(plan, max_sub_queries)
        if repaired.is_fallback:
            plan.validate_dag(max_sub_queries)  # a malformed plan says so first
            raise PlanValidationError(repaired.fallback_reason)
        plan = repaired
    return plan.validate_dag(max_sub_queries)


def _reply_plan(reply: Any, query: str) -> Plan:
    """The plan in a reply, not yet repaired or validated."""
    if isinstance(reply, dict) and "raw" in reply:
        raw, parsed = reply["raw"], reply.get("parsed")
        cut_off = (
            isinstance(raw, BaseMessage) and raw.response_metadata.get("finish_reason") == "length"
        )
        # A structured parser completes a cut-off document; parse_plan keeps one only up
        # to where the model started repeating itself.
        if parsed is None or cut_off:
            text = reply_text(raw) if raw is not None else ""
            if not text.strip():
                raise reply.get("parsing_error") or ValueError("the model returned no plan")
            return parse_plan(text, query)
        reply = PlanOutput.model_validate(parsed) if isinstance(parsed, dict) else parsed
    if isinstance(reply, PlanOutput):
        return Plan(
            query=query,
            sub_queries=tuple(
                SubQuery(id=s.id, question=s.question, depends_on=tuple(s.depends_on))
                for s in reply.sub_queries
            ),
        )
    return parse_plan(reply_text(reply), query)


def _short(error: Exception | None, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "ConversationPolicy",
    "DecompositionInput",
    "PlanOutput",
    "PlanValidationError",
    "SubQueryGenerator",
    "plan_from_reply",
    "plan_json_schema",
    "reply_text",
    "supports_structured_output",
]
