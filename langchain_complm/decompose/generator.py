"""Sub-query Generator: decomposes a query into a :class:`~langchain_complm.plan.Plan`."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
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


MAX_REPLY_CHARS = 65_536
"""How much of a decomposition reply :func:`parse_plan` reads; the rest is ignored (a reply
that long is a model looping until its token limit, and is read as cut off there)."""
_MAX_STARTS = 16
"""How many places where a plan could start are tried."""
_REPAIR_BUDGET = 2 * MAX_REPLY_CHARS
"""Characters the repairs (trailing commas, stray quotes, Python literals) may rewrite per
reply: a few places in a long reply, all of them in a short one. Decoding as written is
not counted: it stops at the first error."""


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


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_PLACEHOLDER = re.compile(r"\{([^{}\s]+)\}")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_LIST_KEYS = ("sub_queries", "subqueries", "sub_questions", "subquestions", "queries", "steps")
_QUESTION_KEYS = ("question", "text", "query", "sub_query", "subquery")
_DEPS_KEYS = ("depends_on", "dependencies", "deps", "parents")

_START = re.compile(r"""(?:(["'])\s*:\s*)?([{\[])(?=\s*[{\["'])""")
"""An opening bracket followed by what a plan holds (an object, a list or a string). A list
that is a key's value (``"depends_on": ["q1"]``) is part of a plan, never a plan."""
_LIST_OPEN = re.compile(r"""(["'])(?:""" + "|".join(_LIST_KEYS) + r""")\1\s*:\s*\[""")
_DECODER = json.JSONDecoder(strict=False)


def parse_plan(text: str, query: str) -> Plan:
    """Parse a model's decomposition into a plan, tolerating the usual noise.

    Accepts code fences, prose around the JSON, trailing commas, single quotes and other
    Python literals, unescaped double quotes and raw line breaks inside strings, a string
    closed by the wrong quote before the next key, a bare list instead of an object, braces
    doubled as in the package's prompt templates (``{{...}}``), common key aliases, numeric
    ids, and a sub-query listed among its own dependencies (or a dependency listed twice). A
    sub-query that repeats an earlier one (same question, same parents) is dropped and its
    dependents point to the earlier one. A reply cut off by the token limit is accepted
    only when the model had started repeating itself: the plan is what came before the
    first repeat. The plan is not validated otherwise.

    Only the first :data:`MAX_REPLY_CHARS` characters are read, and the work is linear in
    their number: a plan is looked for at the first few places one could start, and each
    is decoded in one pass (no Python ``eval`` of the reply).

    Raises:
        ValueError: when no JSON plan can be recovered from ``text``; never anything else.
    """
    reply = text[:MAX_REPLY_CHARS]
    fenced = _FENCE.search(reply)
    candidate = fenced.group(1) if fenced else reply
    try:
        return _parse_candidate(candidate, query)
    except ValueError as error:
        if "{{" in candidate:
            # The package's prompts double their braces; a model may copy the doubling.
            with contextlib.suppress(ValueError):
                return _parse_candidate(candidate.replace("{{", "{").replace("}}", "}"), query)
        if len(text) > MAX_REPLY_CHARS:
            raise ValueError(
                f"{error} (only the first {MAX_REPLY_CHARS} characters of a reply are read)"
            ) from None
        raise


def _parse_candidate(text: str, query: str) -> Plan:
    first_error: ValueError | None = None
    resume = 0
    budget = _REPAIR_BUDGET
    starts = (m for m in _START.finditer(text) if not (m.group(1) and m.group(2) == "["))
    for match in itertools.islice(starts, _MAX_STARTS):
        start = match.start(2)
        if start < resume:
            continue  # inside a value already decoded
        try:
            data, end = _decode_at(text, start, repair=budget >= len(text) - start)
        except ValueError as exc:
            first_error = first_error or exc
            budget -= len(text) - start
            continue
        try:
            return _plan_from(data, query)
        except ValueError as exc:
            first_error = first_error or exc
        if end is None:
            # Decoded only after a repair, so its extent in ``text`` is unknown, and a list
            # nested in it (its dependencies) must not be taken for a plan.
            break
        resume = end
    cut_off = _LIST_OPEN.search(text)
    if cut_off is not None:
        return _items_before_the_cut(text, cut_off.end(), query, first_error)
    raise first_error or ValueError("no JSON object found in the reply")


def _decode(text: str, start: int = 0) -> tuple[Any, int]:
    """The JSON value at ``start`` and where it ends (trailing text is allowed)."""
    try:
        return _DECODER.raw_decode(text, start)
    except RecursionError:  # brackets nested deeper than the C decoder recurses
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, or a number too long to convert
        raise ValueError(f"invalid JSON: {error}") from None


def _decode_at(text: str, start: int, *, repair: bool) -> tuple[Any, int | None]:
    """The value at ``start``, as written or (with ``repair``) after a repair, and where it
    ends in ``text`` (None after a repair)."""
    try:
        return _decode(text, start)
    except ValueError as error:
        if not repair:
            raise
        json_error = error
    for repaired in _repairs(text[start:]):
        try:
            return _decode(repaired)[0], None
        except ValueError:
            continue
    raise json_error


def _repairs(snippet: str) -> Iterator[str]:
    """``snippet`` with each repair in turn, computed only when the previous one failed."""
    without_commas = _TRAILING_COMMA.sub(r"\1", snippet)
    if without_commas != snippet:
        yield without_commas
    # Small models copy questions verbatim, quotes included ("3 ft 2" tall").
    yield _escape_stray_quotes(without_commas)
    # Models often write Python literals (single quotes, True/None, tuples).
    yield _TRAILING_COMMA.sub(r"\1", _python_to_json(snippet))


def _items_before_the_cut(text: str, position: int, query: str, error: ValueError | None) -> Plan:
    """The plan from the sub-queries listed in full from ``position`` (just inside the
    list): the reply was cut off inside the list, or broken after it."""
    items: list[Any] = []
    while True:
        position = _skip(text, position, " \t\r\n,")
        if position == len(text):
            return _plan_from({"sub_queries": items}, query, cut_off=True)
        if text[position] == "]":
            return _plan_from({"sub_queries": items}, query)
        try:
            item, position = _decode(text, position)
        except ValueError as exc:
            if _is_cut_off(text, position):
                return _plan_from({"sub_queries": items}, query, cut_off=True)
            raise error or exc from None
        items.append(item)


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position


_STRUCTURE = re.compile(r'["\\{}\[\]]')


def _is_cut_off(text: str, position: int) -> bool:
    """Whether ``text`` from ``position`` (in a list) is the start of valid JSON cut short:
    its brackets never close the list and never mismatch."""
    expected = ["]"]
    in_string = False
    index = position
    while (match := _STRUCTURE.search(text, index)) is not None:
        char, index = match.group(), match.end()
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            expected.append("}" if char == "{" else "]")
        elif char != expected.pop():
            return False
        elif not expected:
            return False  # the list closed: the reply is broken, not cut off
    return True


def _plan_from(data: Any, query: str, *, cut_off: bool = False) -> Plan:
    items = data
    if isinstance(data, dict):
        items = next((data[k] for k in _LIST_KEYS if k in data), None)
    if not isinstance(items, list):
        raise ValueError('expected a JSON object with a "sub_queries" list')
    reader = _ItemReader()
    sub_queries: list[SubQuery] = []
    for item in items:
        sq = reader.read(item)
        if sq is None:
            if cut_off:
                # Small models that start repeating sub-queries loop until the token limit.
                break
            continue
        sub_queries.append(sq)
    else:
        if cut_off:
            raise ValueError("the reply ends before its JSON plan does (cut off?)")
    return Plan(query=query, sub_queries=tuple(sub_queries))


class _ItemReader:
    """Reads a plan's list items one at a time into sub-queries: key aliases, numeric ids,
    a sub-query among its own parents; a repeat of an earlier sub-query (same question, same
    parents) is dropped and its dependents point to the earlier one."""

    def __init__(self) -> None:
        self._position = 0
        # (question, parents) -> id of its first occurrence; repeats map onto it.
        self._first: dict[tuple[str, tuple[str, ...]], str] = {}
        self._repeats: dict[str, str] = {}

    def read(self, item: Any) -> SubQuery | None:
        """The sub-query of the next ``item``, or ``None`` for a repeat.

        Raises:
            ValueError: the item is not a sub-query.
        """
        self._position += 1
        position = self._position
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
        dep_ids = [_normalize_id(d) for d in deps]
        parent_ids = (self._repeats.get(i, i) for i in dep_ids)
        # A sub-query listed among its own parents is a slip, not a cycle to report.
        parents = tuple(dict.fromkeys(p for p in parent_ids if p != sq_id))
        question = _normalize_placeholders(question, dep_ids, self._repeats)
        key = (" ".join(question.split()), parents)
        if key in self._first:
            self._repeats[sq_id] = self._first[key]
            return None
        self._first[key] = sq_id
        return SubQuery(id=sq_id, question=question, depends_on=parents)


class PlanStreamParser:
    """Reads a decomposition reply while the model writes it and hands out each sub-query as
    soon as it, and every sub-query it depends on, is written in full (the streaming planner
    of LLMCompiler, for this package's JSON plans).

    Each item of the ``"sub_queries"`` list is read as :func:`parse_plan` reads it, and
    comes out once its parents have: with the sub-queries out before it, it must form a
    valid plan (ids, questions, placeholders, the cap on sub-queries). The first item that
    is not a sub-query, or would make that plan invalid, stops the parser (:attr:`stopped`
    says why): nothing more comes out, and the whole reply is judged when it ends, as
    without streaming. A reply that does not hold a ``"sub_queries": [...]`` list gives
    nothing early.

    Linear in the reply's length: the text is scanned once, and only the first
    :data:`MAX_REPLY_CHARS` characters are read.
    """

    def __init__(self, query: str, max_sub_queries: int | None = DEFAULT_MAX_SUB_QUERIES):
        self.query = query
        self.max_sub_queries = max_sub_queries
        self.stopped: str | None = None
        """Why no more sub-queries come out (``None`` while they may)."""
        self._read = 0  # characters fed so far
        self._tail = ""  # the end of the text before the list, where its opening may be cut
        self._in_list = False
        self._ended = False  # the list closed
        self._item: list[str] | None = None  # the text of the item being written
        self._depth = 0
        self._in_string = False
        self._escaped = False  # the previous piece ended with a backslash inside a string
        self._reader = _ItemReader()
        self._out: list[SubQuery] = []
        self._held: list[SubQuery] = []  # waiting for a parent not written yet

    @property
    def sub_queries(self) -> tuple[SubQuery, ...]:
        """Every sub-query handed out so far, in that order."""
        return tuple(self._out)

    def feed(self, text: str) -> list[SubQuery]:
        """Read the next piece of the reply; the sub-queries that became complete with it."""
        if self.stopped or self._ended or self._read >= MAX_REPLY_CHARS:
            return []
        text = text[: MAX_REPLY_CHARS - self._read]
        self._read += len(text)
        position = 0
        if not self._in_list:
            window = self._tail + text
            opening = _LIST_OPEN.search(window)
            if opening is None:
                self._tail = window[-_LIST_OPEN_CHARS:]
                return []
            self._in_list = True
            text, position = window, opening.end()
        ready: list[SubQuery] = []
        while position < len(text) and not (self.stopped or self._ended):
            if self._item is None:
                position = self._next_item(text, position)
            else:
                position = self._scan_item(text, position, ready)
        return ready

    def _next_item(self, text: str, position: int) -> int:
        position = _skip(text, position, " \t\r\n,")
        if position == len(text):
            return position
        char = text[position]
        if char == "]":
            self._ended = True
        elif char in '{"':
            self._item, self._depth, self._in_string = [], 0, False
            return position  # scanned from its first character
        else:
            self.stopped = f"sub-query {len(self._out) + len(self._held) + 1} is not an object"
        return position + 1

    def _scan_item(self, text: str, position: int, ready: list[SubQuery]) -> int:
        """Scan the item being written from ``position``; at its end, read it."""
        assert self._item is not None
        start = position
        if self._escaped:
            self._escaped, position = False, position + 1
        while (match := _STRUCTURE.search(text, position)) is not None:
            char, position = match.group(), match.end()
            if self._in_string:
                if char == "\\":
                    if position == len(text):
                        self._escaped = True
                    position += 1
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
                continue
            elif char in "{[":
                self._depth += 1
                continue
            else:
                self._depth -= 1
            if self._depth <= 0 and not self._in_string:
                self._item.append(text[start:position])
                item, self._item = "".join(self._item), None
                ready += self._take(item)
                return position
        self._item.append(text[start:])
        return len(text)

    def _take(self, item: str) -> list[SubQuery]:
        """The sub-queries that come out once ``item`` (an item's text) is complete."""
        try:
            sq = self._reader.read(_decode_item(item))
        except ValueError as error:
            self.stopped = str(error)
            return []
        if sq is None:  # a repeat of an earlier sub-query, dropped as parse_plan drops it
            return []
        self._held.append(sq)
        ready = []
        known = {out.id for out in self._out}
        while parent_known := [h for h in self._held if set(h.depends_on) <= known]:
            candidate = parent_known[0]
            try:
                Plan(query=self.query, sub_queries=(*self._out, candidate)).validate_dag(
                    self.max_sub_queries
                )
            except PlanValidationError as error:
                self.stopped = str(error)
                break
            self._held.remove(candidate)
            self._out.append(candidate)
            known.add(candidate.id)
            ready.append(candidate)
        return ready


_LIST_OPEN_CHARS = 64
"""Enough of the text before the list to find its opening cut between two pieces."""


def _decode_item(text: str) -> Any:
    """One list item, as written or after a repair."""
    try:
        return _decode(text)[0]
    except ValueError as error:
        json_error = error
    for repaired in _repairs(text):
        try:
            return _decode(repaired)[0]
        except ValueError:
            continue
    raise json_error


def _normalize_id(value: Any) -> str:
    """Ids the model writes as numbers ("1", 1) become "q1" so placeholders can name them."""
    text = str(value).strip()
    return f"q{text}" if text.isdigit() else text


def _normalize_placeholders(question: str, deps: list[str], renamed: dict[str, str]) -> str:
    """``{1}`` naming dependency 1 becomes ``{q1}``, and a placeholder of a dropped repeat
    names the original; other braces (code, math) are text and stay as written."""

    def replace(match: re.Match[str]) -> str:
        name = _normalize_id(match.group(1))
        if name not in deps:
            return match.group(0)
        return "{" + renamed.get(name, name) + "}"

    return _PLACEHOLDER.sub(replace, question)


_PYTHON_TOKEN = re.compile(
    r"""("(?:\\.|[^"\\])*")|'((?:\\.|[^'\\])*)'|\b(True|False|None)\b|([()])""", re.DOTALL
)
_PYTHON_ESCAPE = re.compile(r"""\\x([0-9a-fA-F]{2})|\\(['"])|(\\.)|(")""", re.DOTALL)
_JSON_WORDS = {"True": "true", "False": "false", "None": "null", "(": "[", ")": "]"}


def _python_to_json(snippet: str) -> str:
    """A Python literal rewritten as JSON, in one pass: single-quoted strings become
    double-quoted ones, True/False/None and tuples their JSON forms. JSON's own true, false
    and null are left alone, so a reply mixing both reads as one."""

    def escape(match: re.Match[str]) -> str:
        hex_code, quote, other, _ = match.groups()
        if hex_code is not None:
            return f"\\u00{hex_code}"
        if quote is not None:
            return '\\"' if quote == '"' else "'"
        return other if other is not None else '\\"'

    def token(match: re.Match[str]) -> str:
        double, single, word, paren = match.groups()
        body = double[1:-1] if double is not None else single
        if body is None:
            return _JSON_WORDS[word or paren]
        if "\\" in body or '"' in body:
            body = _PYTHON_ESCAPE.sub(escape, body)
        return f'"{body}"'

    return _PYTHON_TOKEN.sub(token, snippet)


_STRING_END = re.compile(r'\s*(?:[:}\]]|,\s*["{\[]|$)')
"""What follows a double quote that really closes a JSON string."""
_NEXT_KEY = re.compile(r',\s*"(?:id|question|depends_on)"\s*:')
"""The next key of a sub-query: a string still open here lost its closing quote."""
_KEY_MISSING_QUOTE = re.compile(r'"\s*,\s*(id|question|depends_on)"\s*:')
"""A string's closing quote followed by the next key without its opening quote."""
_IN_STRING_MARK = re.compile(r'["\\,]')
"""The only characters inside a string where :func:`_escape_stray_quotes` has something to
decide (outside strings, only a quote)."""


def _escape_stray_quotes(snippet: str) -> str:
    """Escape the double quotes inside string values that end no string: a quote closes a
    string only when a colon, a closing bracket, or a comma and the next value follow it.
    A string still open where the next sub-query key starts is closed there (models copying
    a question that ends in ' sometimes close it with that quote), and a next key that lost
    its opening quote gets it back. The text between quotes, commas and backslashes is
    copied in slices, not looked at character by character."""
    out: list[str] = []
    in_string = False
    copied = 0  # snippet[:copied] is in out
    i = 0
    while True:
        if not in_string:
            i = snippet.find('"', i)
            if i < 0:
                break
            in_string = True
            i += 1
            continue
        match = _IN_STRING_MARK.search(snippet, i)
        if match is None:
            break
        i = match.start()
        char = snippet[i]
        if char == "\\":
            i += 2
        elif char == ",":
            if _NEXT_KEY.match(snippet, i):
                out += (snippet[copied:i], '"')
                copied = i
                in_string = False
            i += 1
        elif key := _KEY_MISSING_QUOTE.match(snippet, i):
            out += (snippet[copied:i], f'","{key.group(1)}":')
            copied = i = key.end()
            in_string = False
        elif _STRING_END.match(snippet, i + 1):
            in_string = False
            i += 1
        else:
            out += (snippet[copied:i], '\\"')
            copied = i = i + 1
    out.append(snippet[copied:])
    return "".join(out)


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
    """The chat model that writes the decomposition."""
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

    def _use_structured(self) -> bool:
        if self.structured_output is not None:
            return self.structured_output
        return supports_structured_output(self.llm)

    def messages(self, query: str, history: Sequence[BaseMessage] = ()) -> list[BaseMessage]:
        """The prompt the generator sends for ``query`` asked after ``history``."""
        messages = self.prompt.format_messages(query=query, max_sub_queries=self.max_sub_queries)
        if conversation := self.conversation.render(history):
            context = SystemMessage(self.conversation_message.format(conversation=conversation))
            messages.insert(len(messages) - 1, context)
        return messages

    def reply_model(self) -> Runnable[list[BaseMessage], Any]:
        """What the generator calls with its :meth:`messages`: the chat model, or with
        structured output its ``with_structured_output(PlanOutput, include_raw=True)``
        runnable; :func:`reply_text` reads either reply."""
        if self._use_structured():
            schema = self.plan_schema or PlanOutput
            return self.llm.with_structured_output(schema, include_raw=True)
        return self.llm

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
        model = self.reply_model()
        child: RunnableConfig = {**config, "callbacks": run_manager.get_child()}
        messages = self.messages(query, history)
        streamed = None
        # Structured output has nothing to stream: its sub-queries come with the plan.
        if on_sub_query is not None and not self._use_structured():
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
    """One reply of the decomposer's model, invoked or (with ``streamed``) streamed."""

    model: Runnable[list[BaseMessage], Any]
    messages: list[BaseMessage]
    config: RunnableConfig
    timeout: float | None
    streamed: _Streamed | None


def _reply(call: _Reply) -> Any:
    if call.streamed is None:
        invoke = partial(call.model.invoke, call.messages, call.config)
        return call_with_timeout(invoke, call.timeout, _DECOMPOSER)
    stream = partial(call.model.stream, call.messages, call.config)
    return stream_with_timeout(stream, call.streamed.add, call.timeout, _DECOMPOSER)


async def _areply(call: _Reply) -> Any:
    if call.streamed is None:
        invoke = call.model.ainvoke(call.messages, call.config)
        return await await_with_timeout(invoke, call.timeout, _DECOMPOSER)
    stream = partial(call.model.astream, call.messages, call.config)
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
    "PlanStreamParser",
    "PlanValidationError",
    "SubQueryGenerator",
    "parse_plan",
    "plan_from_reply",
    "plan_json_schema",
    "reply_text",
    "supports_structured_output",
]
