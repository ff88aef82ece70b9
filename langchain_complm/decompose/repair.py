"""Plan repair: deterministic fixes for the mistakes decomposers make, applied to every plan.

Small generators (and larger ones under unfamiliar phrasing) write plans that are valid
JSON but do not do what the question asks. :func:`repair_plan` fixes the recurring ones,
in this order:

1. **Repeats**: a sub-query asking what an earlier one asks (same content words, same
   parents) is removed; its dependents use the earlier one.
2. **The whole query re-asked**: an independent sub-query that restates the whole question
   beside sub-queries that already cover it is removed (it would answer everything again).
   **Merged parts**: a sub-query that holds two or more of the question's marked parts
   (an enumeration, ordinals, several questions in a row: ``split_query``) copied whole,
   or with a copying slip or two, is replaced by those parts. **Miscopied parts**: an
   independent final sub-query that copies a source question (options, a word problem, a
   vignette) with slips ("Hepular" for "Hepatic", an option dropped) gets the user's text.
3. **Invented steps**: a final dependent sub-query computing with numbers that appear
   nowhere in the question ("Add 16 to {q1} and multiply that result by 10"), asking about
   nothing the question names, or combining answers when the question asks for no
   comparison or combination ("What is the number of years that separate {q1} and {q2}?"
   after two unrelated parts) is removed, as is a step adding no hop: "What is {q1}?", or
   its parent's relation asked again of its parent's answer. Removal repeats until no
   final step is invented, so a generator's loop of one hop is cut back to the hop.
4. **Implicit references**: a sub-query that refers to an earlier answer in words ("that
   number", "the result", "that organ", "at that speed", "that in Fahrenheit", "its",
   "between them") instead of a placeholder
   gets the dependency, and the placeholder where the words can be replaced by one. A
   pronoun that names something of the earlier question rather than its answer ("Who wrote
   Hamlet? When was it written?") gets the dependency only: the expert then sees the
   earlier question and its answer as context. A pronoun in a second clause about what its
   own sub-query names ("What is gout, and how is it treated?") is no reference. A
   sub-query whose second question asks about its first one's answer ("Who founded X, and
   when was he born?") is split first, so the reference can become a dependency. A
   sub-query that resolved the reference by copying what an earlier one asks ("Is 2 to
   the power of 10 larger than 1000?" for "is that number larger than 1000?") gets the
   placeholder in place of the copy.
5. **Placeholders without their dependency** get the dependency, once before rule 3 (so a
   step naming ``{q1}`` is judged as the dependent step it is, and a second repair changes
   nothing) and again after rule 4.
6. **Comparisons**: a question comparing two named items ("Which is heavier, A or B?",
   "Are A and B both P?", "Were A and B from the same country?") whose plan does not look
   each item up in an independent sub-query of its own (it asks the comparison whole, or
   both items at once) gets the plan its phrasing asks for: each item's attribute, then
   the comparison. A bridge comparison ("Which film has the director born later, A or
   B?") whose plan holds no two-hop path (it compares the items, or their related
   entities, directly) gets each item's related entity found, its attribute looked up,
   then the comparison. Phrasings with no attribute to look up are left to the other
   rules. A lookup asking the same of two items at once ("What are the populations of
   Lagos and Cairo?") in a question that compares or combines them becomes one lookup per
   item, and the steps using it get both.
7. **Coverage**: each part of the question (its structural parts, else the whole; a
   source question with options, a word problem or a vignette counts as one) must be
   asked by the plan. A part no sub-query asks is added as a sub-query of its own; a part
   only partly asked (a chain cut short: "Who directed X?" for "Where was the director of
   X born?") gets a final step: the part with the asked span replaced by the placeholder
   ("Where was {q1} born?"), depending on it; a question with options has one answer, so
   the independent step asking part of it gets the user's text instead. A plan that asks
   nothing of the question falls back to the whole question.
8. **Chains**: a compositional question ("When did the president who said ... die?",
   "the X of the Y of Z", "Z's father", "the tallest ...") whose plan, after coverage, still
   has no hop (no sub-query depends on another: it asks the question whole) gets the plan
   its phrasing asks for: each description looked up, innermost first, and the question
   asked of the last answer. So does a one-line chain with more hops than its phrasing
   asks, one of them in between asking what the question does not ("In which year was
   {q1} born?" on the way to "... die?"). Other plans with a hop are the model's
   (coverage completes a chain cut short), comparisons are rule 6's.

Every change is recorded in :attr:`Plan.repairs <langchain_complm.plan.Plan.repairs>`.
The rules work on words, not meaning: they are tuned to leave gold plans alone (the
training pairs' plans and the held-out evaluation plans are unchanged, tested) and to fix
the hand-written broken plans in ``unit_tests/test_repair.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import Match, SequenceMatcher
from functools import cached_property

from langchain_complm.decompose._split import normalize_space, split_query
from langchain_complm.decompose.phrasing import (
    bridge_plan,
    chain_plan,
    comparison_items,
    comparison_plan,
)
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES, Plan, SubQuery, braced_names
from langchain_complm.text import (
    FUNCTION_WORDS,
    content_stems,
    numbers,
    stem,
    word_spans,
    words,
)

# --- words ------------------------------------------------------------------------------------

_AGENT_NOUNS = {
    "wrote": ("author", "writer"), "written": ("author", "writer"), "write": ("author", "writer"),
    "sang": ("singer",), "sung": ("singer",), "sing": ("singer",), "won": ("winner",),
    "married": ("spouse", "wife", "husband"), "led": ("leader",), "ran": ("runner",),
    "built": ("builder", "architect"), "born": ("birth", "birthplace"),
    "founded": ("founder",), "discovered": ("discoverer",),
}  # fmt: skip
"""Verbs whose agent noun does not share their stem (``directed``/``director`` do)."""


_ASKED_BY = {
    "where": ("place", "location", "located"), "when": ("year", "date", "time"),
    "who": ("person", "name"), "whom": ("person", "name"), "many": ("number",),
    "much": ("amount",), "old": ("age",),
}  # fmt: skip
"""What a question word asks for: "Where was {q1} born?" asks the place of birth."""


def _content_with_agents(text: str) -> set[str]:
    """The content stems of a sub-query plus what its words also ask: the agent nouns of
    its verbs ("wrote" covers "author") and what its question words ask ("where": place)."""
    stems = content_stems(text)
    for word in words(text):
        related = _AGENT_NOUNS.get(word.lower(), ()) + _ASKED_BY.get(word.lower(), ())
        stems.update(stem(noun) for noun in related)
    return stems


def _overlap(a: set[str], b: set[str]) -> float:
    """Share of ``a`` found in ``b`` (1 when ``a`` is empty)."""
    return len(a & b) / len(a) if a else 1.0


def _f1(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    hits = len(a & b)
    return 2 * hits / (len(a) + len(b))


# --- the mutable plan -------------------------------------------------------------------------


@dataclass
class _Step:
    id: str
    question: str
    depends_on: list[str]

    @property
    def braced(self) -> list[str]:
        """Names in braces: placeholders once they name a dependency."""
        return braced_names(self.question)


@dataclass
class _Work:
    query: str
    steps: list[_Step]
    notes: list[str] = field(default_factory=list)

    # The question never changes while its plan is repaired; rules ask these of it per step.
    @cached_property
    def units(self) -> list[str]:
        """The question's parts whose coverage is checked (:func:`_units`)."""
        return _units(self.query)

    @cached_property
    def named(self) -> set[str]:
        """What the question names: its content words, with agents."""
        return _content_with_agents(self.query)

    def index(self, sq_id: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.id == sq_id)

    def dependents(self, sq_id: str) -> list[_Step]:
        return [s for s in self.steps if sq_id in s.depends_on]

    def hops(self) -> list[_Step]:
        """The steps in between: each depends on a step and has a step depending on it."""
        used = {d for s in self.steps for d in s.depends_on}
        return [s for s in self.steps if s.depends_on and s.id in used]

    def remove(self, step: _Step, replacement: str | None, why: str) -> None:
        """Drop ``step``; its dependents depend on ``replacement`` (or on its own parents)."""
        self.steps.remove(step)
        for other in self.dependents(step.id):
            new_parents = [replacement] if replacement else step.depends_on
            other.depends_on = list(
                dict.fromkeys(
                    p for d in other.depends_on for p in (new_parents if d == step.id else [d])
                )
            )
            if replacement:
                other.question = other.question.replace(
                    "{" + step.id + "}", "{" + replacement + "}"
                )
        self.notes.append(f"{step.id}: removed ({why})")

    def split(self, step: _Step, pieces: Sequence[str]) -> list[str]:
        """``step`` asks ``pieces[0]``; the other pieces become independent steps right
        after it. Returns the ids, ``step``'s first."""
        step.question = pieces[0]
        at = self.index(step.id)
        ids = [step.id]
        for offset, piece in enumerate(pieces[1:], start=1):
            ids.append(self.new_id())
            self.steps.insert(at + offset, _Step(id=ids[-1], question=piece, depends_on=[]))
        return ids

    def replace_all(self, steps: Sequence[tuple[str, Sequence[str]]], why: str) -> None:
        """Replace the whole plan by ``steps`` ((question, parents), ids ``q1``...)."""
        replaced = ", ".join(s.id for s in self.steps)
        self.steps = [_Step(f"q{i}", q, list(d)) for i, (q, d) in enumerate(steps, 1)]
        self.notes.append(f"{replaced}: replaced: {why}")

    def new_id(self) -> str:
        taken = {s.id for s in self.steps}
        n = len(self.steps) + 1
        while f"q{n}" in taken:
            n += 1
        return f"q{n}"

    def ancestors(self, sq_id: str) -> set[str]:
        by_id = {s.id: s for s in self.steps}
        seen: set[str] = set()
        stack = [sq_id]
        while stack:
            node = by_id.get(stack.pop())
            for parent in node.depends_on if node else ():
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def add_dependency(self, step: _Step, parent: str) -> bool:
        """Add ``parent`` to ``step``'s dependencies unless that would close a cycle."""
        if parent == step.id or parent in step.depends_on:
            return False
        if step.id in self.ancestors(parent):
            return False
        step.depends_on.append(parent)
        return True


# --- 2: merged parts ----------------------------------------------------------------------------


_REQUESTS = "list|tell|give|name|explain|describe|compute|calculate|find|determine|convert|define"
"""Verbs with which a user asks without a question mark ("..., calculate the total")."""
_REQUEST = re.compile(rf"(?:^|[.,;:]\s+)(?:please\s+)?(?:{_REQUESTS})\b", re.IGNORECASE)


def _asks(part: str, query: str) -> bool:
    """Whether a part of ``query`` reads as a question: options to pick, or, as the user
    wrote it, a question mark (``split_query`` ends a part that starts with a question word
    with one) or a clause that asks ("..., calculate the total number of ...")."""
    if _OPTIONS.search(part):
        return True
    flat = " ".join(part.split())
    return bool("?" in flat or _REQUEST.search(flat)) and flat[1:] in " ".join(query.split())


_COPIED = 0.9
"""A part counts as copied into a sub-query when this share of its words occur there in
order, in runs broken at most once per ``_WORDS_PER_SLIP`` words: generators copy long
parts with small slips (a line doubled, "2)" for "2."); a short part must occur whole."""
_WORDS_PER_SLIP = 10


def _lower_words(text: str) -> list[str]:
    return [w.lower() for w in words(text)]


def _in_order(parts: Sequence[str], text: str) -> list[str]:
    """The parts copied into ``text`` (see ``_COPIED``), each after the one before."""
    haystack = _lower_words(text)
    found, at = [], 0
    for part in parts:
        needle = _lower_words(part)
        matcher = SequenceMatcher(None, haystack[at:], needle, autojunk=False)
        blocks = [b for b in matcher.get_matching_blocks() if b.size]
        copied = sum(b.size for b in blocks) >= _COPIED * len(needle)
        if needle and copied and len(blocks) <= 1 + len(needle) // _WORDS_PER_SLIP:
            found.append(part)
            at += blocks[-1].a + blocks[-1].size
    return found


def _marked_parts(query: str, max_sub_queries: int | None) -> list[str]:
    """The question's marked parts in the user's own text, when it has two or more and
    each reads as a question; else none."""
    parts = split_query(query, max_sub_queries, joined=False)
    return parts if len(parts) >= 2 and all(_asks(p, query) for p in parts) else []


def _split_merged_parts(work: _Work, parts: Sequence[str], max_sub_queries: int | None) -> None:
    """Replace a sub-query that copies two or more of the question's marked parts ("(1) ...
    (2) ..." whole) by those parts, in its place."""
    for step in list(work.steps):
        if step.depends_on or work.dependents(step.id):
            continue
        inside = _in_order(parts, step.question)
        grown = len(work.steps) - 1 + len(inside)
        if len(inside) < 2 or (max_sub_queries is not None and grown > max_sub_queries):
            continue
        ids = work.split(step, inside)
        work.notes.append(
            f"{step.id}: split into {', '.join(ids)}: it asked {len(inside)} parts of the question"
        )


_MISCOPIED = 0.8
"""An independent final sub-query holding this share of a source question's words in order,
and not many more, is that question copied with slips ("Hepular" for "Hepatic", an option
dropped): the expert should read what the user wrote."""
_SPLIT_ON_PURPOSE = 0.5
"""A miscopy whose missing words another sub-query asks, this share of them or more, left
those words out on purpose (the part was split); fewer shared ("best", "following") are
the words that any two questions share."""


def _is_source(part: str) -> bool:
    """A source question: options to pick, or a word problem or vignette."""
    return bool(_OPTIONS.search(part)) or len(words(part)) > _LONG_SUB_QUERY_WORDS


def _cut_with_options(own: list[str], source: str, blocks: list[Match]) -> bool:
    """Whether a sub-query's words ``own`` copy a multiple-choice source question from its
    start with words cut out (options, the passage, the question line): every word it holds
    is the source's, in order. No hop asks part of a question with options: it has one
    answer, the option picked."""
    held = sum(b.size for b in blocks)
    starts = bool(blocks) and blocks[0].a == blocks[0].b == 0
    return bool(_OPTIONS.search(source)) and starts and held >= _COPIED * len(own)


def _borrows(own: list[str], wanted: list[str], others: list[list[str]]) -> bool:
    """Whether a sub-query's words ``own`` are a part's (``wanted``) followed by words of
    another part (``others``): a generator gluing the next question's options onto a word
    problem."""
    rest = own[len(wanted) :]
    if own[: len(wanted)] != wanted or not rest:
        return False
    held = (SequenceMatcher(None, rest, other, autojunk=False) for other in others)
    return any(sum(b.size for b in m.get_matching_blocks()) >= _COPIED * len(rest) for m in held)


def _restore_miscopied_parts(work: _Work, parts: Sequence[str]) -> None:
    """Give an independent final sub-query that miscopies one of the question's source
    questions (among its marked parts, else the question itself), cuts one with options
    short, or glues another part's words onto it, the user's own text, unless what it lacks
    is asked by another sub-query (the part was split on purpose)."""
    copied = {s.id: _lower_words(s.question) for s in work.steps}
    text = normalize_space(work.query)
    # Only parts the splitter left as the user wrote them (it may flatten lines or share a
    # stem between items) are the user's text.
    copies = [p for p in parts if p in text] or ([text] if len(work.units) == 1 else [])
    for source in (p for p in copies if _is_source(p)):
        wanted = _lower_words(source)
        others = [_lower_words(p) for p in parts if p != source]
        if wanted in copied.values():
            continue
        for step in work.steps:
            own = copied[step.id]
            if step.depends_on or work.dependents(step.id):
                continue
            if len(own) > len(wanted) / _MISCOPIED and not _borrows(own, wanted, others):
                continue
            matcher = SequenceMatcher(None, own, wanted, autojunk=False)
            blocks = [b for b in matcher.get_matching_blocks() if b.size]
            cut = _cut_with_options(own, source, blocks)
            if not cut and sum(b.size for b in blocks) < _MISCOPIED * len(wanted):
                continue
            # The source's first words and nothing else: a chain's first hop (a word problem
            # before its follow-up), for coverage to complete, unless options were dropped.
            prefix = bool(blocks) and blocks[0].a == blocks[0].b == 0 and blocks[0].size == len(own)
            if prefix and len(_OPTIONS.findall(step.question)) >= len(_OPTIONS.findall(source)):
                continue
            lacking = content_stems(source) - content_stems(step.question)
            if lacking and any(
                len(lacking & content_stems(s.question)) >= _SPLIT_ON_PURPOSE * len(lacking)
                for s in work.steps
                if s is not step
            ):
                continue
            step.question, copied[step.id] = source, wanted
            work.notes.append(f"{step.id}: restored to the user's text of a part it miscopied")
            break


# --- 1-3: removals ------------------------------------------------------------------------------


def _remove_repeats(work: _Work) -> None:
    seen: dict[tuple[frozenset[str], frozenset[str], str], str] = {}
    for step in list(work.steps):
        content = frozenset(content_stems(step.question))
        normalized = " ".join(words(step.question.lower())) if not content else ""
        key = (content, frozenset(step.depends_on), normalized)
        if key in seen:
            work.remove(step, seen[key], f"repeats {seen[key]}")
        else:
            seen[key] = step.id


def _covers(steps: Iterable[_Step], work: _Work) -> bool:
    asked: set[str] = set()
    for step in steps:
        asked |= _content_with_agents(step.question)
    return all(_missing_share(unit, asked) <= _MISSING_OK for unit in work.units)


def _remove_whole_query_repeats(work: _Work) -> None:
    if len(work.steps) < 2:
        return
    query = content_stems(work.query)
    # Read once: this rule removes steps but rewrites none, and pairs them all.
    stems = {s.id: content_stems(s.question) for s in work.steps}
    for step in list(work.steps):
        if step.depends_on or work.dependents(step.id) or len(work.steps) < 2:
            continue
        own = stems[step.id]
        others = [s for s in work.steps if s is not step]
        # It holds another sub-query's question and more: the others are its parts.
        subsumes = any(
            0 < len(part) < len(own) and _overlap(part, own) >= 0.6
            for part in (stems[o.id] for o in others)
        )
        if _f1(own, query) >= 0.8 and subsumes and _covers(others, work):
            work.remove(step, None, "re-asks the whole question")


_COMBINES = re.compile(
    r"\b(?:than|more|less|fewer|most|least|first|last|earl(?:y|ier|iest)|later|latest|"
    r"old(?:er|est)|young(?:er|est)|bigg(?:er|est)|larg(?:er|est)|small(?:er|est)|higher|"
    r"lower|longer|shorter|taller|greater|same|different|differ\w*|between|both|compar\w*|"
    r"before|after|versus|vs|sum|total|combined|together|apart|ratio|times|each|either|or|"
    r"whether|and then)\b",
    re.IGNORECASE,
)
"""Words with which a question asks to compare or combine answers ("which is older",
"how many years apart", "the total"); without them it asks for its parts alone."""


_ABOUT_THE_QUESTION = 0.5
"""An independent sub-query with less than this share of its content words in the question
asks about something else (when the other sub-queries already ask the whole question)."""


def _remove_invented_steps(work: _Work) -> None:
    """Remove final steps the question does not ask for (see :func:`_invented`), until none
    is left: removing one makes its parent final, and a generator stuck in a loop writes the
    same hop many times over."""
    removed = True
    while removed:
        removed = False
        # Counted once a pass, not asked per step: a looping reply of hundreds of hops
        # would make each pass quadratic.
        parents = Counter(p for s in work.steps for p in s.depends_on)
        for step in list(work.steps):
            why = None if parents[step.id] else _invented(work, step)
            if why:
                work.remove(step, None, why)
                parents.subtract(step.depends_on)
                removed = True


def _invented(work: _Work, step: _Step) -> str | None:
    """Why a final step is not asked for: it computes with numbers the question does not
    hold, (one parent, or none beside sub-queries that ask the whole question) asks about
    nothing it names ("What is the mass of {q1}?" when the question asks no mass), adds no
    hop, or (several parents) combines answers of parts the plan already asks when the
    question asks for no comparison or combination."""
    named = work.named
    others = [s for s in work.steps if s is not step]
    if not step.depends_on:
        # "What is the number of years that separate the first two questions?"
        own = content_stems(step.question)
        if (
            others
            and _readable(work.query)
            and _overlap(own, named) < _ABOUT_THE_QUESTION
            and _covers(others, work)
        ):
            return "asks about nothing the question names"
        return None
    invented = numbers(step.question) - numbers(work.query)
    if invented:
        return f"computes with {', '.join(sorted(invented))}, not in the question"
    if not _readable(work.query):
        return None
    own = _content_with_agents(step.question)
    hop = _repeated_hop(work, step)
    if hop:
        return hop
    if len(step.depends_on) == 1 and own and not own & named:
        return "asks about nothing the question names"
    if len(step.depends_on) > 1 and not _COMBINES.search(work.query) and _covers(others, work):
        return "combines answers the question does not ask to combine"
    return None


def _repeated_hop(work: _Work, step: _Step) -> str | None:
    """Why a one-parent step adds no hop: it asks nothing beyond its parent's answer ("What
    is {q1}?"), or it asks its parent's own relation of that answer again ("In which city
    was {q2} born?" after "In which city was {q1} born?") where the question asks that
    relation once."""
    parent = next((s for s in work.steps if s.id in step.depends_on), None)
    if len(step.depends_on) != 1 or parent is None:
        return None  # a dangling dependency is the validator's to report
    own = content_stems(step.question)
    if not own:
        return f"asks nothing beyond {parent.id}"
    if not parent.depends_on or own != content_stems(parent.question):
        return None
    counts = Counter(stem(w) for w in words(work.query))
    if all(counts[s] >= 2 for s in own):
        return None  # "the father of the father of X" asks the hop twice
    return f"asks {parent.id}'s hop again"


# --- 4-5: references ----------------------------------------------------------------------------

_LONG_SUB_QUERY_WORDS = 25
"""Longer sub-queries (word problems, vignettes) introduce their own referents."""
_OPTIONS = re.compile(r"\n\s*\(?[A-H][.)]\s")
"""Multiple-choice options: such a question is a self-contained source question."""

_PERSON = (
    "person|man|woman|author|writer|director|actor|actress|singer|painter|artist|composer|"
    "scientist|player|leader|king|queen|president|founder|inventor|poet|novelist|musician|"
    "architect|philosopher|explorer|politician|athlete|individual|people|spouse|wife|husband"
)
_PLACE = "place|city|town|country|state|nation|capital|region|location|province|continent|island"
_QUANTITY = (
    "number|result|answer|value|amount|figure|sum|total|difference|product|quotient|"
    "remainder|count|quantity|percentage|score|age|price|cost"
)
_TIME = "year|date|day|decade|century|month|time|era"
_OPERATOR = (
    r"by|times|multiplied|divided|plus|minus|squared|cubed|doubled|halved|increased|"
    r"decreased|raised|to the power"
)
_BARE = r"(?=\s*(?:[?.!,;:]|$|\s(?:" + _OPERATOR + r"|and|is|was|in|of\s+(?:that|this|it))\b))"

_PLURAL = re.compile(
    r"\b(?:between|among|of|for|compare|comparing)\s+(?:them|the two|these two|those two|both)\b"
    r"|\bthe two(?:\s+(?:" + _QUANTITY + r"|answers|results|numbers|values|years|dates))?\b"
    r"|\bthe (?:difference|sum|ratio|product|total|average|gap)" + _BARE,
    re.IGNORECASE,
)
_ANSWER_PHRASE = re.compile(
    r"\b(?:that|this|the said|the same)\s+(?:"
    + _QUANTITY
    + r"|"
    + _TIME
    + r"|"
    + _PERSON
    + r"|"
    + _PLACE
    + r"|one)\b"
    r"|\bthe (?:result|answer|number|value|amount|figure|total|sum|product|quotient)"
    + _BARE
    + r"|\b(?:that|this|it)"
    + r"(?=\s*(?:[?.!]|$)|\s+(?:"
    + _OPERATOR
    + r")\b"
    # "What is that in Fahrenheit?", "convert it to miles"
    + r"|\s+(?:in|into|to)\s+[^\W\d_]+(?:\s+[^\W\d_]+)?\s*[?.!]?\s*$)",
    re.IGNORECASE,
)
_OPERAND = re.compile(
    r"\b(?:double|twice|triple|halve|square|cube|multiply|divide|add|subtract|increase|"
    r"decrease)\s+(that|this|it)\b",
    re.IGNORECASE,
)
_NAMED_REFERENCE = re.compile(r"\b(?:that|this|the said)\s+([^\W\d_]{3,})\b", re.IGNORECASE)
_PLURAL_PRONOUN = re.compile(r"\b(?:they|them|their|theirs)\b", re.IGNORECASE)
_PERSON_PRONOUN = re.compile(r"\b(?:he|she|him|his|her|hers)\b", re.IGNORECASE)
_THING_PRONOUN = re.compile(r"\b(?:it|its)\b", re.IGNORECASE)
_COMPARATIVE = r"(?:\w{2,}er|more|less|first|earlier|later)\b"
"""A word picking one of two things ("taller", "more ...", "first")."""
_BARE_COMPARISON = re.compile(
    r"^\W*(?:which|who|what)\s+(?:one\s+)?(?:is|was|are|were|has|had|came|comes|happened|did)?"
    r"\s*" + _COMPARATIVE + r"[^,]*\??$",
    re.IGNORECASE,
)
"""A comparison naming nothing it compares ("Which is older?")."""

_ASKS_PERSON = re.compile(r"^\W*(?:who|whom|whose)\b|\b(?:" + _PERSON + r")\b", re.IGNORECASE)
_ASKS_PLACE = re.compile(
    r"^\W*where\b|\b(?:which|what)\s+(?:" + _PLACE + r")\b|\bcapital\b", re.IGNORECASE
)
_ASKS_TIME = re.compile(
    r"^\W*when\b|\b(?:what|which)\s+(?:" + _TIME + r")\b|\bhow long ago\b", re.IGNORECASE
)
_ASKS_QUANTITY = re.compile(
    r"\bhow (?:many|much|old|long|far|tall|big|high|deep|heavy)\b|\d|%|\bpercent|\b(?:"
    + _QUANTITY
    + r"|population|area|height|distance|speed|temperature|weight|atomic|"
    r"boiling|melting|length|mass|density)\b|\b(?:when|what year|which year)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Reference:
    start: int
    end: int
    plural: bool
    wants: re.Pattern[str] | None
    """What the referent asks for (a person, a place, ...); None: the nearest one."""
    substitute: bool
    """Whether the words can be replaced by the placeholder (they name the answer)."""
    possessive: bool = False


def _find_reference(question: str, earlier: Sequence[_Step]) -> _Reference | None:
    m = _PLURAL.search(question)
    # "between them" always points back; "of them" may be the question's own things
    # ("Dean has 30 marbles. He gives 1/5 of them ...").
    if m and (
        m.group().lower().startswith(("between", "among", "compar", "the "))
        or _names_little_before(question, m.start())
    ):
        return _Reference(m.start(), m.end(), plural=True, wants=None, substitute=True)
    if _BARE_COMPARISON.match(question) and len(content_stems(question)) <= 2:
        end = len(question.rstrip(" ?.!"))
        return _Reference(end, end, plural=True, wants=None, substitute=True)
    m = _ANSWER_PHRASE.search(question)
    if m is None and (operand := _OPERAND.search(question)):
        return _Reference(
            operand.start(1), operand.end(1), plural=False, wants=_ASKS_QUANTITY, substitute=True
        )
    if m is not None:
        words = m.group().lower()
        wants = (
            _ASKS_PERSON if re.search(_PERSON, words)
            else _ASKS_PLACE if re.search(_PLACE, words)
            else _ASKS_TIME if re.search(_TIME, words)
            else _ASKS_QUANTITY if re.search(_QUANTITY + "|it|that|this", words)
            else None
        )  # fmt: skip
        return _Reference(m.start(), m.end(), plural=False, wants=wants, substitute=True)
    for m in _NAMED_REFERENCE.finditer(question):
        if m.group(1).lower() in FUNCTION_WORDS:
            continue
        noun = stem(m.group(1))
        asks = re.compile(r"\b(?:which|what)\s+(?:\w+\s+)?" + re.escape(m.group(1)), re.I)
        # "at that speed" after "What is the speed of light?": the noun an earlier
        # sub-query asks for, its agent ("that director" after "Who directed X?"), or
        # what it is about.
        if any(
            asks.search(s.question)
            or noun in _agent_stems(s.question)
            or noun in content_stems(s.question)
            for s in earlier
        ):
            return _Reference(m.start(), m.end(), plural=False, wants=asks, substitute=True)
    # A pronoun after the question has named things of its own most likely refers to them
    # ("The pitch of a sound is related to its ...").
    if (m := _PLURAL_PRONOUN.search(question)) and _names_little_before(question, m.start()):
        return _Reference(m.start(), m.end(), plural=True, wants=None, substitute=True)
    if (m := _PERSON_PRONOUN.search(question)) and _names_little_before(question, m.start()):
        possessive = m.group().lower() in {"his", "hers"} or (
            m.group().lower() == "her" and re.match(r"\s+[a-z]", question[m.end() :]) is not None
        )
        return _Reference(
            m.start(), m.end(), plural=False, wants=_ASKS_PERSON, substitute=True,
            possessive=possessive,
        )  # fmt: skip
    if (m := _THING_PRONOUN.search(question)) and _names_little_before(question, m.start()):
        return _Reference(
            m.start(), m.end(), plural=False, wants=None, substitute=True,
            possessive=m.group().lower() == "its",
        )  # fmt: skip
    return None


_SECOND_CLAUSE = re.compile(
    r"(?:,\s*|\s)and\s+(?:how|why|when|where|what|which|who|can|could|does|do|did|is|was|"
    r"are|were|will|should)\b",
    re.IGNORECASE,
)
"""Where a sub-query's second clause starts ("What is gout, and how is it treated?")."""


def _names_little_before(question: str, position: int) -> bool:
    """Whether a pronoun at ``position`` can only point outside its own sub-query: little is
    named before it, and it is not in a second clause about what the first one names
    ("What is pneumonia and how is it diagnosed?": "it" is pneumonia)."""
    head = question[:position]
    clauses = list(_SECOND_CLAUSE.finditer(head))
    if clauses and content_stems(head[: clauses[-1].start()]):
        return False
    return len(content_stems(head)) <= 1


def _agent_stems(question: str) -> set[str]:
    """Stems of the agent a "who <verb>" question asks for (``who directed`` -> ``direc``)."""
    m = re.match(r"^\W*who\s+(?:was\s+|is\s+)?(\w+)", question, re.IGNORECASE)
    if not m:
        return set()
    verb = m.group(1).lower()
    return {stem(verb), *(stem(n) for n in _AGENT_NOUNS.get(verb, ()))}


def _frontier(work: _Work, before: int) -> list[_Step]:
    """Earlier sub-queries whose answers nothing uses yet, nearest last."""
    used = {d for s in work.steps for d in s.depends_on}
    return [s for s in work.steps[:before] if s.id not in used]


def _pick_referents(work: _Work, index: int, ref: _Reference) -> list[_Step]:
    earlier = work.steps[:index]
    if ref.plural:
        frontier = _frontier(work, index)
        pool = frontier if len(frontier) >= 2 else earlier
        return pool[-2:] if len(pool) >= 2 else []
    if ref.wants is not None:
        typed = [s for s in earlier if ref.wants.search(s.question)]
        if typed:
            return typed[-1:]
        if ref.wants is _ASKS_PERSON:
            return []  # "he" with no earlier "who": not an answer of this plan
    return earlier[-1:]


def _rewrite(question: str, ref: _Reference, ids: Sequence[str]) -> str:
    names = [f"{{{i}}}" for i in ids]
    words = question[ref.start : ref.end].lower()
    if len(names) == 1:
        replacement = names[0] + ("'s" if ref.possessive else "")
    elif ref.start == ref.end:  # a bare comparison: "Which is older?"
        return question[: ref.start] + f": {names[0]} or {names[1]}" + question[ref.end :]
    elif words.startswith(("the difference", "the gap")):
        replacement = f"{question[ref.start : ref.end]} between {names[0]} and {names[1]}"
    elif words.startswith("the "):  # the sum, the ratio, ...
        replacement = f"{question[ref.start : ref.end]} of {names[0]} and {names[1]}"
    elif words in {"their", "theirs"}:
        return _their(question, ref, names)
    else:
        preposition = re.match(r"(between|among|of|for|compare|comparing)\s", words)
        lead = preposition.group(1) + " " if preposition else ""
        replacement = f"{lead}{names[0]} and {names[1]}"
    return question[: ref.start] + replacement + question[ref.end :]


def _their(question: str, ref: _Reference, names: Sequence[str]) -> str:
    """ "What is their sum?" -> "What is the sum of {q1} and {q2}?" """
    m = re.match(r"\s+(\w+)", question[ref.end :])
    if m is None:
        return question[: ref.start] + f"{names[0]} and {names[1]}" + question[ref.end :]
    noun_end = ref.end + m.end()
    return (
        question[: ref.start]
        + f"the {m.group(1)} of {names[0]} and {names[1]}"
        + question[noun_end:]
    )


def _split_inner_references(work: _Work, max_sub_queries: int | None) -> None:
    """Split a sub-query whose second question refers to the answer of its first ("Who
    founded Microsoft with Bill Gates, and when was he born?"), so that the reference can
    become a dependency. A pronoun about what the first question names ("Who wrote Beloved, and
    when was it published?") is no such reference: the sub-query stays whole."""
    for step in list(work.steps):
        if step.depends_on or work.dependents(step.id) or step.braced:
            continue
        if max_sub_queries is not None and len(work.steps) >= max_sub_queries:
            return
        pieces = split_query(step.question, allow_references=True)
        if len(pieces) != 2:
            continue
        first = _Step(step.id, pieces[0], [])
        ref = _find_reference(pieces[1], [first])
        if ref is None or ref.wants is None or not ref.wants.search(pieces[0]):
            continue
        if _THING_PRONOUN.fullmatch(pieces[1][ref.start : ref.end]):
            continue
        first_id, second_id = work.split(step, pieces)
        work.notes.append(
            f"{first_id}: split into {first_id}, {second_id}: {second_id} refers to it"
        )


def _link_references(work: _Work) -> None:
    for index, step in enumerate(work.steps):
        if index == 0 or step.depends_on or step.braced:
            continue
        if _is_source(step.question):
            continue
        earlier = work.steps[:index]
        ref = _find_reference(step.question, earlier)
        if ref is None:
            continue
        referents = _pick_referents(work, index, ref)
        if not referents:
            continue
        names = [s.id for s in referents]
        if not all(work.add_dependency(step, n) for n in names):
            continue
        phrase = step.question[ref.start : ref.end] or "a comparison"
        # A "it"/"he" pronoun that is not about the answer's kind names something of the
        # earlier question ("Who wrote Hamlet? When was it written?"): context only.
        thing_of_a_person = _THING_PRONOUN.fullmatch(phrase) and _ASKS_PERSON.search(
            referents[0].question
        )
        if ref.substitute and not thing_of_a_person:
            step.question = _rewrite(step.question, ref, names)
            work.notes.append(
                f"{step.id}: {phrase!r} refers to {', '.join(names)}: dependency and placeholder"
            )
        else:
            work.notes.append(f"{step.id}: {phrase!r} refers to {', '.join(names)}: dependency")


def _holds(asked: Sequence[str], phrase: str) -> bool:
    return f" {phrase} " in f" {' '.join(asked)} "


def _link_copied_referents(work: _Work) -> None:
    """A sub-query asking a part of the question whose reference it resolved by copying
    what an earlier sub-query asks ("Is 2 to the power of 10 larger than 1000?" for "is
    that number larger than 1000?") asks that again instead of using its answer: the copy
    becomes the earlier sub-query's placeholder."""
    for unit in work.units if len(work.units) > 1 else ():
        ref = _find_reference(unit, [])
        if ref is None or ref.plural or ref.start == ref.end:
            continue
        head, tail = _lower_words(unit[: ref.start]), _lower_words(unit[ref.end :])
        phrase = " ".join(_lower_words(unit[ref.start : ref.end]))
        for index, step in enumerate(work.steps):
            spans = word_spans(step.question)
            asked = [w.lower() for _, _, w in spans]
            middle = len(asked) - len(head) - len(tail)
            if step.depends_on or middle < 1 or len(asked) > _LONG_SUB_QUERY_WORDS:
                continue
            if asked[: len(head)] != head or (tail and asked[-len(tail) :] != tail):
                continue
            copy = " ".join(asked[len(head) : len(head) + middle])
            if copy == phrase:  # the part asked as the question words it
                continue
            earlier = work.steps[:index]
            source = next((e for e in earlier if _holds(_lower_words(e.question), copy)), None)
            if source is None:
                continue
            start, end = spans[len(head)][0], spans[len(head) + middle - 1][1]
            step.question = f"{step.question[:start]}{{{source.id}}}{step.question[end:]}"
            step.depends_on.append(source.id)
            work.notes.append(
                f"{step.id}: asked {source.id}'s {copy!r} again where the question refers to "
                f"its answer: dependency and placeholder"
            )


def _link_placeholders(work: _Work) -> None:
    ids = {s.id for s in work.steps}
    for step in work.steps:
        for name in step.braced:
            if name in ids and name not in step.depends_on and work.add_dependency(step, name):
                work.notes.append(f"{step.id}: uses {{{name}}}: dependency on {name} added")


# --- 6: comparisons -----------------------------------------------------------------------------


def _looks_up(asked: set[str], item: set[str], other: set[str]) -> bool:
    """Whether a sub-query's words name one item (any of its own words: "J. S. Bach" for
    "Johann Sebastian Bach") and not the other."""
    return bool(asked & item) and not asked & other


_TWO_ITEM_LOOKUP = re.compile(
    r"^\s*(?P<ask>what|how\s+\w+)\s+(?:are|were)\s+the\s+(?P<noun>(?:[\w-]+\s+){0,2}[\w-]+s)\s+"
    r"of\s+(?P<a>[^,?]+?)\s+and\s+(?P<b>[^,?]+?)\s*\?\s*$",
    re.IGNORECASE,
)


def _singular(noun: str) -> str:
    """The singular of a plural noun phrase's last word ("melting points": "melting point")."""
    head, _, last = noun.rpartition(" ")
    for plural, one in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("s", "")):
        if last.endswith(plural) and not last.endswith("ss"):
            last = last[: -len(plural)] + one
            break
    return f"{head} {last}".strip()


def _split_two_item_lookups(work: _Work, max_sub_queries: int | None) -> None:
    """A lookup asking the same of two items at once ("What are the populations of Lagos
    and Cairo?") when the question goes on to combine or compare them becomes one lookup
    per item, so the two can run, and be routed, apart; the steps using it get both."""
    if not _COMBINES.search(work.query):
        return
    for step in list(work.steps):
        m = _TWO_ITEM_LOOKUP.match(step.question)
        if step.depends_on or m is None:
            continue
        if max_sub_queries is not None and len(work.steps) >= max_sub_queries:
            return
        noun = _singular(m.group("noun"))
        items = m.group("a").strip(), m.group("b").strip()
        first, second = work.split(step, [f"What is the {noun} of {item}?" for item in items])
        one, two = "{" + first + "}", "{" + second + "}"
        for later in work.steps:
            if first not in later.depends_on:
                continue
            if later.question.count(one) >= 2:  # "the difference between {q1} and {q1}"
                later.question = later.question.replace(one, two).replace(two, one, 1)
            else:
                later.question = later.question.replace(one, f"{one} and {two}")
            later.depends_on.insert(later.depends_on.index(first) + 1, second)
        # An independent comparison that names the two items ("Which is higher: gold or
        # silver?") compares the two lookups' answers.
        for later in work.steps:
            if later.depends_on or later.id in {first, second}:
                continue
            text = later.question
            for sq_id, item in zip((first, second), items, strict=True):
                text = re.sub(rf"\b{re.escape(item)}\b", "{" + sq_id + "}", text, flags=re.I)
            if text != later.question and one in text and two in text:
                later.question, later.depends_on = text, [first, second]
        work.notes.append(
            f"{first}: split into {first}, {second}: it asked the {noun} of two items at once"
        )


def _compare_apart(work: _Work, max_sub_queries: int | None) -> None:
    """A comparison of two named items whose plan does not look each one up in an
    independent sub-query of its own (it asks the comparison whole, or both items at once)
    gets the plan its phrasing asks for: each item's attribute, then the comparison."""
    if len(work.units) != 1 or (max_sub_queries is not None and max_sub_queries < 3):
        return
    if (steps := comparison_plan(work.query)) is None:
        return
    a, b = (content_stems(item) for item in comparison_items(work.query) or ("", ""))
    a, b = a - b, b - a
    if not a or not b:
        return
    lookups = [content_stems(s.question) for s in work.steps if not s.depends_on]
    # Words every lookup has ("capital" in "the capitals of Portugal and Greece") tell
    # nothing about which item a lookup asks.
    frame = set.intersection(*lookups) if len(lookups) > 1 else set()
    a, b = a - frame, b - frame
    if any(_looks_up(x, a, b) for x in lookups) and any(_looks_up(x, b, a) for x in lookups):
        return
    work.replace_all(steps, "the comparison's items are looked up one by one, then compared")


def _bridge_apart(work: _Work, max_sub_queries: int | None) -> None:
    """A bridge comparison ("Which film has the director born later, A or B?") whose plan
    has no step in between (none found from one answer and feeding another: "When was
    {q1} born?" after "Who directed A?"), so that it compares the items, or their related
    entities, directly, gets the plan its phrasing asks for."""
    if len(work.units) != 1 or (steps := bridge_plan(work.query)) is None:
        return
    if (max_sub_queries is not None and len(steps) > max_sub_queries) or work.hops():
        return
    work.replace_all(
        steps, "each item's related entity is found, its attribute looked up, compared"
    )


def _chain_apart(work: _Work, max_sub_queries: int | None) -> None:
    """A compositional question ("When did the president who said ... die?") whose plan
    has no hop (no sub-query depends on another: it asks the question whole, or lookups
    that cannot feed each other), or more hops than its phrasing asks with one in between
    that asks what the question does not ("In which year was {q1} born?" on the way to
    "... die?"), gets the plan its phrasing asks for, description by description."""
    if len(work.units) != 1:
        return
    if comparison_items(work.query) is not None or (steps := chain_plan(work.query)) is None:
        return
    if max_sub_queries is not None and len(steps) > max_sub_queries:
        return
    if any(s.depends_on for s in work.steps):
        if any(len(s.depends_on) > 1 for s in work.steps):
            return  # a plan that combines answers is no chain gone wrong
        invented = [s for s in work.hops() if content_stems(s.question) - work.named]
        if not invented or len(steps) >= len(work.steps):
            return
    work.replace_all(steps, "the question's descriptions are looked up hop by hop")


# --- 7: coverage --------------------------------------------------------------------------------

_MISSING_OK = 0.15
"""A part of the question is asked when at most this share of its content words is missing
from every sub-query (paraphrases drop a word or two)."""
_MISSING_OK_STEPPED = 0.5
"""The same for a part the plan asks in dependent steps, which rephrase more (and may
always drop two words: "how many people live in that city" is "the population of {q1}")."""
_DROPPED = 0.34
"""A part with less than this share of its content words asked was dropped, not cut short."""
_UNRELATED = 0.2
"""A plan whose sub-queries share less than this with the question asks something else."""


_UNIT_BREAK = re.compile(
    r"(?<=[?!])\s+"  # after a question
    r"|\n(?!\s*\(?[A-Ha-h][.)]\s)"  # a new line that is not a multiple-choice option
    r"|;\s+"
    r"|(?:,?\s+and|:)\s+(?=(?:what|who|whom|whose|which|when|where|why|how)\b)"
    rf"|,?\s+and\s+(?:also|then)\s+|,\s+and\s+(?=(?:{_REQUESTS})\b)",
    re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"(?:^|(?<=[:,]\s))\(?\d{1,2}[.)]\s+(?=[^\W\d_])")
"""A list marker starting a part, also after a lead-in ("hey, 1. Which is bigger, 92 or 874?"):
its number is not something the part asks about."""
_PREAMBLE = re.compile(r"\b(?:questions?|things|facts|queries|tasks)\b", re.IGNORECASE)
"""A part that talks about the request ("Two questions about space:") asks nothing."""


def _units(query: str) -> list[str]:
    """The parts of a question whose coverage is checked: its marked parts, and within a
    short one its questions, lines and "..., and what ..." clauses. A source question (one
    with options, a word problem, a vignette) is one unit: its sentences, passage lines and
    "... and then ..." clauses are not questions of their own. Preambles ("I have two
    questions.") ask nothing and pass."""
    units: list[str] = []
    for part in split_query(query, allow_references=True) or [query]:
        units += [part] if _is_source(part) else _UNIT_BREAK.split(part)
    units = [_LIST_MARKER.sub("", u.strip()) for u in units]
    asked = [u for u in units if u and not (_PREAMBLE.search(u) and "?" not in u)]
    return asked or [query]


def _missing_share(unit: str, asked: set[str]) -> float:
    content = content_stems(unit)
    return 1.0 - _overlap(content, asked) if content else 0.0


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    step: _Step


def _span(unit: str, step: _Step) -> _Span | None:
    """Where in ``unit`` the question of ``step`` is asked: the longest run of its content
    words (gaps of up to three other words, none across a question mark), widened over a
    leading article."""
    wanted = _content_with_agents(step.question)
    tokens = [(start, end, stem(word)) for start, end, word in word_spans(unit)]
    hits = [
        i
        for i, (start, end, stem) in enumerate(tokens)
        if stem in wanted and unit[start:end].lower() not in FUNCTION_WORDS
    ]
    if not hits:
        return None
    runs: list[list[int]] = [[hits[0]]]
    for i in hits[1:]:
        # A question mark ends what is asked: "... does she use? Then multiply ..." is a
        # next hop even where its words echo the first ("twice" and "multiply").
        between = unit[tokens[runs[-1][-1]][1] : tokens[i][0]]
        if i - runs[-1][-1] <= 4 and "?" not in between:
            runs[-1].append(i)
        else:
            runs.append([i])
    best = max(runs, key=len)
    in_unit = wanted & {tokens[i][2] for i in hits}
    if len({tokens[i][2] for i in best}) < max(1, len(in_unit) / 2):
        return None
    first = best[0]
    while first > 0 and unit[tokens[first - 1][0] : tokens[first - 1][1]].lower() in {
        "the", "a", "an", "that", "this",
    }:  # fmt: skip
        first -= 1
    end = tokens[best[-1]][1]
    # The question mark of a question the step asks whole, before the next one, goes with
    # it ("{q1} Then multiply that result ...").
    end += unit.startswith("?", end) and bool(unit[end + 1 :].strip())
    return _Span(tokens[first][0], end, step)


def _complete(work: _Work, unit: str, candidates: Sequence[_Step]) -> _Step | None:
    """A step that asks ``unit`` with the spans the candidates ask replaced by their
    placeholders (a chain's next hop, or the comparison of parallel lookups); None when
    the spans leave nothing to ask (the candidates ask the whole part, in other words)."""
    spans: list[_Span] = []
    for step in candidates:
        span = _span(unit, step)
        # A step that only shares the part's numbers ("What is 17 times 17?" for "the
        # square of 17") rephrases the part; a hop answers a phrase of it.
        if span is None or not content_stems(unit[span.start : span.end]) - numbers(unit):
            continue
        if not any(span.start < s.end and s.start < span.end for s in spans):
            spans.append(span)
    text = unit
    for span in sorted(spans, key=lambda s: s.start, reverse=True):
        text = text[: span.start] + "{" + span.step.id + "}" + text[span.end :]
    if not spans or not content_stems(text):
        return None
    parents = [s.step.id for s in sorted(spans, key=lambda s: s.start)]
    return _Step(id=work.new_id(), question=text.strip(), depends_on=parents)


def _readable(query: str) -> bool:
    """Whether the coverage rules can judge the question: English words (the stopwords are
    English), and enough of them to ask about something."""
    all_words = words(query)
    function_words = sum(w.lower() in FUNCTION_WORDS for w in all_words)
    return len(content_stems(query)) >= 2 and function_words >= 0.15 * len(all_words)


_PICKS_ONE = re.compile(r"^\W*(?:which|who)\b[^.?]*\b" + _COMPARATIVE + r"[^.]*\??\s*$", re.I)
"""A question picking one of two answers by a comparison ("Which of them is taller?")."""


def _compares_unasked(work: _Work, unit: str) -> bool:
    """Whether ``unit`` compares earlier answers ("Which of them is taller?") that no step
    combines."""
    compares = bool(_PICKS_ONE.match(unit) and _PLURAL_PRONOUN.search(unit))
    return (
        compares
        and len(work.steps) >= 2
        and not any(len(s.depends_on) >= 2 for s in work.steps)
        and not any(
            normalize_space(s.question).lower() == normalize_space(unit).lower() for s in work.steps
        )
    )


def _repair_coverage(work: _Work, max_sub_queries: int | None) -> bool:
    """Make the plan ask every part of the question; False when it asks none of it. No
    step is added beyond ``max_sub_queries``."""
    if not _readable(work.query):
        return True
    query_content = content_stems(work.query)
    plan_content: set[str] = set()
    for step in work.steps:
        plan_content |= _content_with_agents(step.question)
    own_content = set().union(*(content_stems(s.question) for s in work.steps))
    if query_content and own_content and _overlap(own_content, query_content) < _UNRELATED:
        return False
    units = work.units
    # A plan asking one part of many (a short question beside a long vignette) asks little
    # of the question's words, but it asks the question.
    if (
        query_content
        and _overlap(query_content, plan_content) < _UNRELATED
        and not any(_missing_share(unit, plan_content) <= _MISSING_OK for unit in units)
    ):
        return False
    for unit in units:
        asked: set[str] = set()
        for step in work.steps:
            asked |= _content_with_agents(step.question)
        # Its words are the lookups' words, but no step compares them.
        unasked_comparison = _compares_unasked(work, unit)
        share = _missing_share(unit, asked)
        unit_content = content_stems(unit)
        related = [s for s in work.steps if _content_with_agents(s.question) & unit_content]
        # A part the plan already answers in steps was rephrased on purpose: its words
        # ("the usual first-line drug") may be gone without a hop being lost.
        stepped = any(s.depends_on or work.dependents(s.id) for s in related)
        missing = len(unit_content - asked)
        if not unasked_comparison and (
            share <= _MISSING_OK or (stepped and (share <= _MISSING_OK_STEPPED or missing <= 2))
        ):
            continue
        if max_sub_queries is not None and len(work.steps) >= max_sub_queries:
            work.notes.append(f"the part {unit!r} is not asked; the plan is at its cap")
            continue
        if unasked_comparison or 1.0 - share < _DROPPED or not related:
            text = unit[:1].upper() + unit[1:]
            step = _Step(id=work.new_id(), question=text, depends_on=[])
            work.steps.append(step)
            work.notes.append(
                f"{step.id}: added: the question's part {unit.strip()!r} was not asked"
            )
            continue
        used = {d for s in work.steps for d in s.depends_on}
        sinks = [s for s in related if s.id not in used]
        if _OPTIONS.search(unit):
            # A question with options has one answer, the option picked: no hop completes
            # it. The independent step asking most of it gets the user's text.
            copies = [s for s in sinks if not s.depends_on]
            if copies:
                step = max(copies, key=lambda s: len(content_stems(s.question) & unit_content))
                step.question = unit.strip()
                work.notes.append(
                    f"{step.id}: restored to the user's text of a question with options it "
                    "asked only partly"
                )
                continue
        completion = _complete(work, unit, sinks or related)
        if completion is None:
            continue
        step = completion
        work.steps.append(step)
        work.notes.append(
            f"{step.id}: added: completes the part {unit.strip()!r}, which "
            f"{', '.join(step.depends_on)} only partly asked"
        )
    return True


# --- public API ---------------------------------------------------------------------------------


def repair_plan(plan: Plan, max_sub_queries: int | None = DEFAULT_MAX_SUB_QUERIES) -> Plan:
    """Fix a decomposer's plan (see the module docstring); a plan needing nothing is
    returned as it is. The result is not validated (the decomposer does that); repair adds
    no sub-query beyond ``max_sub_queries``.

    A plan whose sub-queries ask nothing of the question becomes :meth:`Plan.single` with a
    ``fallback_reason``. Fallback plans are returned unchanged.
    """
    if plan.is_fallback or not plan.sub_queries:
        return plan
    work = _Work(
        query=plan.query,
        steps=[_Step(s.id, s.question, list(s.depends_on)) for s in plan.sub_queries],
    )
    _remove_repeats(work)
    _remove_whole_query_repeats(work)
    parts = _marked_parts(plan.query, max_sub_queries)
    _split_merged_parts(work, parts, max_sub_queries)
    _restore_miscopied_parts(work, parts)
    # A step naming {q1} without depending on it is a dependent step: the invented-step
    # rules judge it as one (else a second repair would remove what the first kept).
    _link_placeholders(work)
    _remove_invented_steps(work)
    _split_inner_references(work, max_sub_queries)
    _link_copied_referents(work)
    _link_references(work)
    _link_placeholders(work)
    _split_two_item_lookups(work, max_sub_queries)
    _compare_apart(work, max_sub_queries)
    _bridge_apart(work, max_sub_queries)
    if not _repair_coverage(work, max_sub_queries):
        return Plan.single(
            plan.query,
            fallback_reason="the plan's sub-queries do not ask the question: "
            + "; ".join(s.question for s in plan.sub_queries)[:200],
        )
    _link_references(work)  # a comparison coverage added refers to the answers it compares
    _chain_apart(work, max_sub_queries)
    if not work.notes:
        return plan
    sub_queries = tuple(
        SubQuery(id=s.id, question=s.question, depends_on=tuple(s.depends_on)) for s in work.steps
    )
    return plan.model_copy(
        update={"sub_queries": sub_queries, "repairs": (*plan.repairs, *work.notes)}
    )


__all__ = ["repair_plan"]
