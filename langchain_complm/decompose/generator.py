"""Sub-query Generator: decomposes a query into a :class:`~langchain_complm.plan.Plan`."""

from __future__ import annotations

import ast
import json
import logging
import re
from typing import Any

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.utils.json import parse_partial_json
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_complm.errors import PlanValidationError
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, Plan, SubQuery
from langchain_complm.prompts import DECOMPOSE_PROMPT, DECOMPOSE_RETRY

logger = logging.getLogger(__name__)


class _SubQueryOut(BaseModel):
    """One sub-question, as the model writes it."""

    id: str = Field(description="Identifier such as q1.")
    question: str = Field(description="The self-contained sub-question.")
    depends_on: list[str] = Field(
        default_factory=list, description="Ids of earlier sub-questions whose answers it needs."
    )


class PlanOutput(BaseModel):
    """Structured-output schema of a decomposition."""

    sub_queries: list[_SubQueryOut] = Field(description="The sub-questions, in order.")


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_PLACEHOLDER = re.compile(r"\{([^{}\s]+)\}")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_LIST_KEYS = ("sub_queries", "subqueries", "sub_questions", "subquestions", "queries", "steps")
_QUESTION_KEYS = ("question", "text", "query", "sub_query", "subquery")
_DEPS_KEYS = ("depends_on", "dependencies", "deps", "parents")


def parse_plan(text: str, query: str) -> Plan:
    """Parse a model's decomposition into a plan, tolerating the usual noise.

    Accepts code fences, prose around the JSON, trailing commas, single quotes, unescaped
    double quotes and raw line breaks inside strings, a string closed by the wrong quote
    before the next key, a bare list instead of an object, common key aliases, numeric ids,
    and a sub-query listed among its own dependencies (or a dependency listed twice). A
    sub-query that repeats an earlier one (same question, same parents) is dropped and its
    dependents point to the earlier one. A reply cut off by the token limit is accepted
    only when the model had started repeating itself: the plan is what came before the
    first repeat. The plan is not validated otherwise.

    Raises:
        ValueError: when no JSON plan can be recovered from ``text``.
    """
    try:
        return _plan_from(_load_json_like(text), query)
    except ValueError:
        start = text.find("{")
        try:
            data = parse_partial_json(text[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            raise
        return _plan_from(data, query, cut_off=True)


def _plan_from(data: Any, query: str, *, cut_off: bool = False) -> Plan:
    items = data
    if isinstance(data, dict):
        items = next((data[k] for k in _LIST_KEYS if k in data), None)
    if not isinstance(items, list):
        raise ValueError('expected a JSON object with a "sub_queries" list')
    sub_queries: list[SubQuery] = []
    # (question, parents) -> id of its first occurrence; repeats map onto it.
    first: dict[tuple[str, tuple[str, ...]], str] = {}
    repeats: dict[str, str] = {}
    for position, item in enumerate(items, start=1):
        if isinstance(item, str):
            item = {"question": item}
        if not isinstance(item, dict):
            raise ValueError(f"sub-query {position} is not an object")
        question = next((item[k] for k in _QUESTION_KEYS if k in item), None)
        if not isinstance(question, str):
            raise ValueError(f'sub-query {position} has no "question" text')
        deps = next((item[k] for k in _DEPS_KEYS if k in item), None) or []
        if not isinstance(deps, list):
            deps = [deps]
        sq_id = _normalize_id(item.get("id", position))
        parent_ids = (repeats.get(i, i) for i in map(_normalize_id, deps))
        # A sub-query listed among its own parents is a slip, not a cycle to report.
        parents = tuple(dict.fromkeys(p for p in parent_ids if p != sq_id))
        question = _normalize_placeholders(question, repeats)
        key = (" ".join(question.split()), parents)
        if key in first:
            if cut_off:
                # Small models that start repeating sub-queries loop until the token limit.
                break
            repeats[sq_id] = first[key]
            continue
        first[key] = sq_id
        sub_queries.append(SubQuery(id=sq_id, question=question, depends_on=parents))
    else:
        if cut_off:
            raise ValueError("the reply ends before its JSON plan does (cut off?)")
    return Plan(query=query, sub_queries=tuple(sub_queries))


def _normalize_id(value: Any) -> str:
    """Ids the model writes as numbers ("1", 1) become "q1" so placeholders can name them."""
    text = str(value).strip()
    return f"q{text}" if text.isdigit() else text


def _normalize_placeholders(question: str, renamed: dict[str, str]) -> str:
    """``{1}`` becomes ``{q1}``, and a placeholder of a dropped repeat names the original."""

    def replace(match: re.Match[str]) -> str:
        name = _normalize_id(match.group(1))
        return "{" + renamed.get(name, name) + "}"

    return _PLACEHOLDER.sub(replace, question)


def _load_json_like(text: str) -> Any:
    fenced = _FENCE.search(text)
    candidate = fenced.group(1) if fenced else text
    # Prose may hold brackets of its own before the JSON: try each opening bracket in turn.
    starts = [i for i, char in enumerate(candidate) if char in "{["]
    if not starts:
        raise ValueError("no JSON object found in the reply")
    first_error: ValueError | None = None
    for start in starts:
        end = candidate.rfind("}" if candidate[start] == "{" else "]")
        if end <= start:
            continue
        try:
            return _parse_snippet(_TRAILING_COMMA.sub(r"\1", candidate[start : end + 1]))
        except ValueError as exc:
            first_error = first_error or exc
    raise first_error or ValueError("unterminated JSON in the reply")


_PY_LITERALS = {"true": "True", "false": "False", "null": "None"}
_STRING_OR_LITERAL = re.compile(r"(\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')|\b(true|false|null)\b")


def _parse_snippet(snippet: str) -> Any:
    try:
        return json.loads(snippet, strict=False)
    except json.JSONDecodeError as json_error:
        try:
            # Small models copy questions verbatim, quotes included ("3 ft 2" tall").
            return json.loads(_escape_stray_quotes(snippet), strict=False)
        except json.JSONDecodeError:
            pass
        # Models often write Python literals (single quotes); JSON's true/false/null are
        # translated outside string values only, so the sub-questions' text is untouched.
        pythonish = _STRING_OR_LITERAL.sub(
            lambda m: m.group(1) or _PY_LITERALS[m.group(2)], snippet
        )
        try:
            return ast.literal_eval(pythonish)
        except (ValueError, SyntaxError):
            raise ValueError(f"invalid JSON: {json_error}") from None


_STRING_END = re.compile(r'\s*(?:[:}\]]|,\s*["{\[]|$)')
"""What follows a double quote that really closes a JSON string."""
_NEXT_KEY = re.compile(r',\s*"(?:id|question|depends_on)"\s*:')
"""The next key of a sub-query: a string still open here lost its closing quote."""
_KEY_MISSING_QUOTE = re.compile(r'"\s*,\s*(id|question|depends_on)"\s*:')
"""A string's closing quote followed by the next key without its opening quote."""


def _escape_stray_quotes(snippet: str) -> str:
    """Escape the double quotes inside string values that end no string: a quote closes a
    string only when a colon, a closing bracket, or a comma and the next value follow it.
    A string still open where the next sub-query key starts is closed there (models copying
    a question that ends in ' sometimes close it with that quote), and a next key that lost
    its opening quote gets it back."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(snippet):
        char = snippet[i]
        if in_string and char == "\\":
            out.append(snippet[i : i + 2])
            i += 2
            continue
        if in_string and char == "," and _NEXT_KEY.match(snippet, i):
            out.append('"')
            in_string = False
        if in_string and (key := _KEY_MISSING_QUOTE.match(snippet, i)):
            out.append(f'","{key.group(1)}":')
            in_string = False
            i = key.end()
            continue
        if char == '"':
            if not in_string:
                in_string = True
            elif _STRING_END.match(snippet, i + 1):
                in_string = False
            else:
                char = '\\"'
        out.append(char)
        i += 1
    return "".join(out)


def supports_structured_output(llm: BaseChatModel) -> bool:
    """Whether ``llm`` implements tool calling, which ``with_structured_output`` builds on."""
    return type(llm).bind_tools is not BaseChatModel.bind_tools


class SubQueryGenerator(RunnableSerializable[str, Plan]):
    """Decomposes a query into sub-queries with dependencies, over any chat model.

    Uses structured output when the model supports tool calling, otherwise a few-shot prompt
    and a tolerant JSON parser. An invalid decomposition is retried once with the error
    shown to the model; if it fails again (or the model raises), the generator falls back to
    a single sub-query holding the whole query and records why in ``Plan.fallback_reason``.

    Example:
        .. code-block:: python

            generator = SubQueryGenerator(llm=chat_model)
            plan = generator.invoke("What is 2+2, and who wrote Hamlet?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: BaseChatModel
    """The chat model that writes the decomposition."""
    prompt: ChatPromptTemplate = DECOMPOSE_PROMPT
    """Prompt with ``query`` and ``max_sub_queries`` variables."""
    retry_message: str = DECOMPOSE_RETRY
    """Sent after an invalid reply, with ``error``."""
    max_sub_queries: int = Field(default=DEFAULT_MAX_SUB_QUERIES, ge=1)
    """Plans with more sub-queries are invalid."""
    structured_output: bool | None = None
    """Force structured output on or off; ``None`` uses it when the model supports it."""
    name: str | None = "SubQueryGenerator"

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> Plan:
        return self._call_with_config(self._decompose, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Plan:
        return await self._acall_with_config(
            self._adecompose, input, config, run_type="chain", **kwargs
        )

    def _use_structured(self) -> bool:
        if self.structured_output is not None:
            return self.structured_output
        return supports_structured_output(self.llm)

    def _messages(self, query: str) -> list[BaseMessage]:
        return self.prompt.format_messages(query=query, max_sub_queries=self.max_sub_queries)

    def _to_plan(self, reply: Any, query: str) -> Plan:
        if isinstance(reply, PlanOutput):
            plan = Plan(
                query=query,
                sub_queries=tuple(
                    SubQuery(id=s.id, question=s.question, depends_on=tuple(s.depends_on))
                    for s in reply.sub_queries
                ),
            )
        else:
            plan = parse_plan(_reply_text(reply), query)
        return plan.validate_dag(self.max_sub_queries)

    def _decompose(
        self, query: str, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Plan:
        model = self.llm.with_structured_output(PlanOutput) if self._use_structured() else self.llm
        child: RunnableConfig = {**config, "callbacks": run_manager.get_child()}
        messages = self._messages(query)
        error: Exception | None = None
        for attempt in range(2):
            reply = None
            try:
                reply = model.invoke(messages, child)
                return self._to_plan(reply, query)
            except Exception as exc:
                error = exc
                if attempt or not _is_bad_output(exc):
                    break
                messages = self._retry_messages(messages, reply, exc)
        return self._fallback(query, error)

    async def _adecompose(self, query: str, run_manager: Any, config: RunnableConfig) -> Plan:
        model = self.llm.with_structured_output(PlanOutput) if self._use_structured() else self.llm
        child: RunnableConfig = {**config, "callbacks": run_manager.get_child()}
        messages = self._messages(query)
        error: Exception | None = None
        for attempt in range(2):
            reply = None
            try:
                reply = await model.ainvoke(messages, child)
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
        shown = [] if reply is None else [AIMessage(content=_reply_text(reply))]
        return [
            *messages,
            *shown,
            HumanMessage(content=self.retry_message.format(error=_short(error))),
        ]

    def _fallback(self, query: str, error: Exception | None) -> Plan:
        reason = f"{type(error).__name__}: {_short(error)}"
        logger.warning("decomposition failed, answering the query whole (%s)", reason)
        return Plan.single(query, fallback_reason=reason)


def _is_bad_output(error: Exception) -> bool:
    """Unusable model output (worth one retry), as opposed to the model failing to run.

    Parse errors, including structured-output ``OutputParserException``, and plan validation
    errors are all ``ValueError``s.
    """
    return isinstance(error, (ValueError, ValidationError))


def _reply_text(reply: Any) -> str:
    if isinstance(reply, BaseMessage):
        return reply.text
    if isinstance(reply, BaseModel):
        return reply.model_dump_json()
    return str(reply)


def _short(error: Exception | None, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["PlanOutput", "PlanValidationError", "SubQueryGenerator", "parse_plan"]
