"""What a question's phrasing tells about the plan it needs.

* :func:`comparison_items`: the two things a comparison question names ("..., A or B?",
  "Are A and B both ...?");
* :func:`multihop_kind`: a multi-hop question's kind (comparison, bridge comparison,
  compositional chain);
* :func:`comparison_plan`: the plan a comparison's phrasing asks for: each item's attribute
  looked up on its own, then compared.

One reading serves three readers: plan repair (a comparison whose plan does not look each
item up gets the plan its phrasing asks for), the training data (HotpotQA train comparisons
become pairs with that plan) and the plan evaluation (the kind of a benchmark question, and
the items its plan must look up apart).
"""

from __future__ import annotations

import re
from typing import Literal

MultihopKind = Literal["chain", "comparison", "bridge"]

_OR_PAIR = re.compile(
    r"[,:]\s*(?:the\s+)?(?P<a>[^,:?]+?),?\s+or\s+(?:the\s+)?(?P<b>[^,?]+?)\s*\?\s*$", re.I
)
_BOTH = re.compile(
    r"^\s*(?P<verb>are|were|is|was|do|did|does|have|has)\s+(?:both\s+)?(?P<a>.+?)\s+and\s+(?P<b>.+?)\s+"
    r"(?P<how>both|(?:have\s+|share\s+)?the same|of the same|from the same|each|either)\b",
    re.IGNORECASE,
)
_RELATED = (
    r"director|author|writer|composer|performer|singer|creator|founder|father|mother|"
    r"spouse|wife|husband|producer|publisher|designer|owner|manufacturer"
)
_BRIDGE = re.compile(
    r"\b(?:has|had|with)\s+the\s+(?:" + _RELATED + r")\b|\bwhose\s+(?:" + _RELATED + r")\b"
    r"|\b(?:" + _RELATED + r")s?\s+of\s+(?:the\s+)?(?:film|movie|book|novel|song|album|"
    r"opera|company|band|play|series)\b",
    re.IGNORECASE,
)
_NESTED = re.compile(
    r"\b(?:the|a|an)\s+(?:[\w-]+\s+){0,3}?(?:who|that|which|whose|where|when)\b"
    r"|\bof\s+the\s+[\w-]+\s+(?:of|who|that|which)\b|\b\w+['’]s\s+\w+",
    re.IGNORECASE,
)


def comparison_items(question: str) -> tuple[str, str] | None:
    """The two things a comparison question compares ("Who was born first, A or B?"),
    when its phrasing names them."""
    for pattern in (_OR_PAIR, _BOTH):
        if m := pattern.search(question):
            return m.group("a").strip(), m.group("b").strip()
    return None


def multihop_kind(question: str) -> MultihopKind | None:
    """The kind of a multi-hop question, read from its phrasing: a ``comparison`` of two
    named items, a ``bridge`` comparison (of an entity related to each item: "Which film
    has the director born later, A or B?"), or a compositional ``chain`` ("the X of the Y
    of Z", "the woman who ...", "Z's Y"); None when the phrasing does not tell."""
    if comparison_items(question) is not None:
        return "bridge" if _BRIDGE.search(question) else "comparison"
    if _NESTED.search(question):
        return "chain"
    return None


# --- the plan a comparison asks for ------------------------------------------------------------

_EARLIER = "Which date is earlier: {q1} or {q2}?"
_LATER = "Which date is later: {q1} or {q2}?"
_LARGER = "Which number is larger: {q1} or {q2}?"
_SMALLER = "Which number is smaller: {q1} or {q2}?"

# Comparative phrasings of "..., A or B?" questions: the attribute each asks of an item
# ({x}; {verb} is the phrasing's first word, {noun} what it compares), and the comparison.
_NOUN = r"(?P<noun>(?:[\w-]+ ){0,2}[\w-]+)\s*[,:]"  # "has a higher melting point, ..."
_COMPARED: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"\bborn (?:first|earlier)\b|\bolder\b", re.I), "When was {x} born?", _EARLIER),
    (re.compile(r"\bborn later\b|\byounger\b", re.I), "When was {x} born?", _LATER),
    (re.compile(r"\b(?:formed|founded|established|created) (?:first|earlier)\b", re.I),
     "When was {x} {verb}?", _EARLIER),
    (re.compile(r"\b(?:released|published|launched|opened|built) (?:first|earlier)\b", re.I),
     "When was {x} {verb}?", _EARLIER),
    (re.compile(r"\b(?:released|published|launched|opened|built) (?:later|more recently)\b", re.I),
     "When was {x} {verb}?", _LATER),
    (re.compile(r"\bsame nationality\b", re.I), "What is the nationality of {x}?",
     "Are {q1} and {q2} the same nationality?"),
    (re.compile(r"\blived longer\b", re.I), "How long did {x} live?",
     "Which is longer: {q1} or {q2}?"),
    (re.compile(r"\b(?:is|stands) (?:taller|higher)\s*[,:]", re.I), "How tall is {x}?",
     "Which is taller: {q1} or {q2}?"),
    (re.compile(r"\b(?:is|was) (?:the )?longer\s*[,:]", re.I), "How long is {x}?",
     "Which is longer: {q1} or {q2}?"),
    (re.compile(r"\b(?:is|was) (?:the )?heavier\s*[,:]", re.I), "How heavy is {x}?",
     "Which is heavier: {q1} or {q2}?"),
    (re.compile(r"\b(?:is|was) (?:the )?(?:larger|bigger)\s*[,:]", re.I), "How large is {x}?",
     "Which is larger: {q1} or {q2}?"),
    (re.compile(r"\bmore populous\b|\blarger population\b", re.I),
     "What is the population of {x}?", _LARGER),
    (re.compile(r"\b(?:has|had|have) (?:a |the )?(?:higher|greater|larger|bigger) " + _NOUN, re.I),
     "What is the {noun} of {x}?", _LARGER),
    (re.compile(r"\b(?:has|had|have) (?:a |the )?(?:lower|smaller) " + _NOUN, re.I),
     "What is the {noun} of {x}?", _SMALLER),
    (re.compile(r"\b(?:has|had|have) (?:the )?(?:more|most) " + _NOUN, re.I),
     "How many {noun} does {x} have?", _LARGER),
    (re.compile(r"\b(?:has|had|have) (?:the )?(?:fewer|fewest) " + _NOUN, re.I),
     "How many {noun} does {x} have?", _SMALLER),
)  # fmt: skip

_CATEGORY = re.compile(
    r"^\s*(?:which|what)\s+((?!of\b)[\w' -]+?)\s+(?:is|was|were|are|has|had|did|does)\b", re.I
)
_SINGULAR = {"are": "is", "were": "was", "do": "does", "have": "has"}
_PAST = {"were", "was", "did", "had"}


def _both_plan(question: str) -> list[tuple[str, tuple[str, ...]]] | None:
    """The plan of "Are A and B both P?" (each item asked P) or "Were A and B of the same
    N?" (each item's N looked up, then compared)."""
    m = _BOTH.search(question)
    if m is None:
        return None
    rest = question[m.end("how") :].split("?")[0].strip()
    how = m.group("how").lower()
    if not rest or "\n" in rest:
        return None
    a, b = m.group("a").strip(), m.group("b").strip()
    if " and " in f"{a} {b}":  # "A and B and C" cannot be cut into two items
        return None
    verb = m.group("verb").lower()
    if how in {"both", "each", "either"}:
        ask = _SINGULAR.get(verb, verb).capitalize()
        return [
            (f"{ask} {a} {rest}?", ()),
            (f"{ask} {b} {rest}?", ()),
            ("Are both {q1} and {q2} yes?", ("q1", "q2")),
        ]
    # "Were A and B born in the same country?": the words after the second name ("born
    # in"), in lower case, say how each item has its N: "What country was A born in?".
    tail: list[str] = []
    while b.split() and b.split()[-1].islower():
        *kept, last = b.split()
        tail.insert(0, last)
        b = " ".join(kept)
    if not b:
        return None
    if how == "from the same":
        tail.append("from")
    be = "was" if verb in _PAST else "is"
    ask = f"What {rest} {be} {{x}} {' '.join(tail)}?" if tail else f"What {be} the {rest} of {{x}}?"
    return [
        (ask.format(x=a), ()),
        (ask.format(x=b), ()),
        (f"Are {{q1}} and {{q2}} the same {rest}?", ("q1", "q2")),
    ]


def comparison_plan(question: str) -> list[tuple[str, tuple[str, ...]]] | None:
    """The plan a comparison question's phrasing asks for, as (question, parents) steps:
    each item's attribute looked up on its own, then compared. None when the question is
    no comparison of two named items, a bridge comparison (the attribute belongs to an
    entity related to each item), or phrased in a way this reading does not map to an
    attribute."""
    if multihop_kind(question) != "comparison":
        return None
    items = comparison_items(question)
    assert items is not None  # a comparison names its items
    # Items with commas of their own ("University of California, Berkeley") or that point
    # back ("his brother Dexter") cannot be cut out reliably.
    if len(re.findall(r"[,:]", question)) > 1:
        return None
    if any(re.search(r"\b(?:his|her|its|their)\b", item, re.I) for item in items):
        return None
    if not _OR_PAIR.search(question):
        return _both_plan(question)
    # "Which American rock band ..." keeps its category in each lookup.
    category = _CATEGORY.match(question)
    named = [f"the {category.group(1)} {x}" if category else x for x in items]
    for pattern, attribute, compare in _COMPARED:
        if (match := pattern.search(question)) is None:
            continue
        verb = match.group().split()[0].lower()
        fields = {k: v.lower() for k, v in match.groupdict().items()}
        return [
            (attribute.format(x=named[0], verb=verb, **fields), ()),
            (attribute.format(x=named[1], verb=verb, **fields), ()),
            (compare, ("q1", "q2")),
        ]
    return None
