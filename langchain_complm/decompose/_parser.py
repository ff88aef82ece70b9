"""The tolerant reader of a decomposer's reply: :func:`parse_plan` for a whole reply,
:class:`PlanStreamParser` for one being written.

Small models write plans that are almost JSON: fenced, wrapped in prose, with trailing
commas, stray quotes, Python literals, numeric ids, other key names, or cut off by the
token limit. This module reads what they mean, within a budget linear in the reply's
length; what a valid plan is stays :class:`~langchain_complm.plan.Plan`'s rule.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

from langchain_complm.errors import PlanValidationError
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, Plan, SubQuery

MAX_REPLY_CHARS = 65_536
"""How much of a decomposition reply :func:`parse_plan` reads; the rest is ignored (a reply
that long is a model looping until its token limit, and is read as cut off there)."""
_MAX_STARTS = 16
"""How many places where a plan could start are tried."""
_REPAIR_BUDGET = 2 * MAX_REPLY_CHARS
"""Characters the repairs (trailing commas, stray quotes, Python literals) may rewrite per
reply: a few places in a long reply, all of them in a short one. Decoding as written is
not counted: it stops at the first error."""


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
