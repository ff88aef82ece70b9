"""What a question's phrasing tells about the plan it needs.

* :func:`comparison_items`: the two things a comparison question names ("..., A or B?",
  "Are A and B both ...?");
* :func:`multihop_kind`: a multi-hop question's kind (comparison, bridge comparison,
  compositional chain);
* :func:`comparison_plan`: the plan a comparison's phrasing asks for: each item's attribute
  looked up on its own, then compared;
* :func:`bridge_plan`: the plan a bridge comparison's phrasing asks for: each item's
  related entity found, its attribute looked up, then compared;
* :func:`chain_plan`: the plan a compositional question's phrasing asks for: each
  description it holds ("the person who said ...") looked up, innermost first.

One reading serves three readers: plan repair (a comparison whose plan does not look each
item up, or a chain asked whole, gets the plan its phrasing asks for), the training data
(HotpotQA train comparisons become pairs with that plan) and the plan evaluation (the kind
of a benchmark question, and the items its plan must look up apart).
"""

from __future__ import annotations

import re
from typing import Literal

from langchain_complm.text import content_stems, words

MultihopKind = Literal["chain", "comparison", "bridge"]

_OR_PAIR = re.compile(
    r"[,:]\s*(?:(?-i:the)\s+)?(?P<a>[^,:?]+?),?\s+or\s+(?:(?-i:the)\s+)?(?P<b>[^,?]+?)\s*\?\s*$",
    re.I,
)
_BOTH = re.compile(
    r"^\s*(?P<verb>are|were|is|was|do|did|does|have|has)\s+(?:both\s+)?(?P<a>.+?)\s+and\s+(?P<b>.+?)\s+"
    r"(?P<how>both|(?:have\s+|share\s+)?the same|of the same|from the same|each|either)\b",
    re.IGNORECASE,
)
_RELATED = (
    r"director|author|writer|composer|performer|singer|creator|founder|father|mother|"
    r"spouse|wife|husband|producer|publisher|designer|owner|manufacturer|artist|painter|"
    r"architect|inventor"
)
_BRIDGE = re.compile(
    r"\b(?:has|had|with)\s+the\s+(?:" + _RELATED + r")\b|\bwhose\s+(?:" + _RELATED + r")\b"
    r"|\b(?:" + _RELATED + r")s?\s+of\s+(?:the\s+)?(?:film|movie|book|novel|song|album|"
    r"opera|company|band|play|series)\b",
    re.IGNORECASE,
)
# "Which band's lead singer is younger, ...", "Whose director was born first, ...": the
# relation named at the head of a comparison, before its attribute.
_BRIDGE_HEAD = re.compile(
    r"^\s*(?:(?:which|what)\s+(?P<category>[\w-]+(?:\s+[\w-]+)?)(?:['’]s\s+|\s+(?:has|had)\s+"
    r"the\s+)|whose\s+)(?P<relation>(?:lead\s+|main\s+|original\s+)?(?:"
    + _RELATED
    + r"|capital|headquarters))\b",
    re.IGNORECASE,
)
_NESTED = re.compile(
    r"\b(?:the|a|an)\s+(?:[\w-]+\s+){0,3}?(?:who|that|which|whose|where|when)\b"
    r"|\bof\s+the\s+[\w-]+\s+(?:of|who|that|which)\b|\b\w+['’]s\s+\w+",
    re.IGNORECASE,
)


_MAX_CHARS = 600
"""Longer text is no multi-hop question (the benchmarks' longest is under 300 characters);
the readings' lazy patterns would take time quadratic in it."""


def comparison_items(question: str) -> tuple[str, str] | None:
    """The two things a comparison question compares ("Who was born first, A or B?"),
    when its phrasing names them."""
    if len(question) > _MAX_CHARS:
        return None
    for pattern in (_OR_PAIR, _BOTH):
        if m := pattern.search(question):
            return m.group("a").strip(), m.group("b").strip()
    return None


def _relates(question: str) -> bool:
    """Whether a comparison compares an entity related to each item, not the items."""
    return bool(_BRIDGE.search(question) or _BRIDGE_HEAD.match(question))


def multihop_kind(question: str) -> MultihopKind | None:
    """The kind of a multi-hop question, read from its phrasing: a ``comparison`` of two
    named items, a ``bridge`` comparison (of an entity related to each item: "Which film
    has the director born later, A or B?"), or a compositional ``chain`` ("the X of the Y
    of Z", "the woman who ...", "Z's Y"); None when the phrasing does not tell."""
    if comparison_items(question) is not None:
        return "bridge" if _relates(question) else "comparison"
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
_PLACE = r"(?P<noun>(?:the )?[\w-]+(?: [\w-]+){0,2}?)\s*[,:]"  # "closer to the Sun, ..."
# "is further north": the item itself lies there ("originates from a region farther east"
# asks of a region, not of the item).
_LIES = r"\b(?:is|are|was|were|lies|lie|located)\s+(?:further|farther|more)\s+"
_COMPARED: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"\bborn (?:first|earlier)\b|\bolder\b", re.I), "When was {x} born?", _EARLIER),
    (re.compile(r"\bdied (?:younger|at a younger age)\b", re.I), "At what age did {x} die?",
     _SMALLER),
    (re.compile(r"\bdied (?:older|at an older age)\b", re.I), "At what age did {x} die?",
     _LARGER),
    (re.compile(r"\bborn later\b|\byounger\b", re.I), "When was {x} born?", _LATER),
    (re.compile(r"\bdied (?:first|earlier|sooner)\b", re.I), "When did {x} die?", _EARLIER),
    (re.compile(r"\bdied (?:later|last)\b", re.I), "When did {x} die?", _LATER),
    (re.compile(_LIES + r"north(?:erly)?\b", re.I),
     "What is the latitude of {x}?", _LARGER),
    (re.compile(_LIES + r"south(?:erly)?\b", re.I),
     "What is the latitude of {x}?", _SMALLER),
    (re.compile(_LIES + r"east(?:erly)?\b", re.I),
     "What is the longitude of {x}?", _LARGER),
    (re.compile(_LIES + r"west(?:erly)?\b", re.I),
     "What is the longitude of {x}?", _SMALLER),
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
    (re.compile(r"\b(?:closer|nearer) to " + _PLACE, re.I), "How far is {x} from {noun}?",
     _SMALLER),
    (re.compile(r"\b(?:farther|further) from " + _PLACE, re.I), "How far is {x} from {noun}?",
     _LARGER),
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
    names = b.split()
    tail: list[str] = []
    while names and names[-1].islower():
        tail.insert(0, names.pop())
    b = " ".join(names)
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
    if (items := comparison_items(question)) is None or _relates(question):
        return None
    # Items that point back ("his brother Dexter") cannot be cut out reliably either.
    if _commas_in_items(question):
        return None
    if any(re.search(r"\b(?:his|her|its|their)\b", item, re.I) for item in items):
        return None
    if not _OR_PAIR.search(question):
        return _both_plan(question)
    # "Which American rock band ..." keeps its category in each lookup.
    category = _CATEGORY.match(question)
    named = [f"the {category.group(1)} {x}" if category else x for x in items]
    if (compared := _compared(question, *named)) is None:
        return None
    first, second, compare = compared
    return [(first, ()), (second, ()), (compare, ("q1", "q2"))]


def _commas_in_items(question: str) -> bool:
    """Whether a comparison's items have commas of their own ("University of California,
    Berkeley"), so that they cannot be cut out reliably."""
    return len(re.findall(r"[,:]", question)) > 1


def _compared(text: str, a: str, b: str) -> tuple[str, str, str] | None:
    """The attribute ``text``'s comparative phrasing asks of ``a`` and of ``b``, and the
    comparison of the two answers (of ``{q1}`` and ``{q2}``)."""
    for pattern, attribute, compare in _COMPARED:
        if (match := pattern.search(text)) is None:
            continue
        verb = match.group().split()[0].lower()
        fields = match.groupdict()
        return (
            attribute.format(x=a, verb=verb, **fields),
            attribute.format(x=b, verb=verb, **fields),
            compare,
        )
    return None


def bridge_plan(question: str) -> list[tuple[str, tuple[str, ...]]] | None:
    """The plan a bridge comparison's phrasing asks for ("Which film has the director born
    later, A or B?"): each item's related entity found ("Who is the director of the film
    A?"), its attribute looked up ("When was {q1} born?"), then the two compared. None when
    the question names no relation at its head ("Which film has the director ...",
    "Whose director ...", "Which band's lead singer ...") or no attribute this reading maps."""
    items = comparison_items(question)
    if items is None or (head := _BRIDGE_HEAD.match(question)) is None:
        return None
    if _commas_in_items(question) or not _OR_PAIR.search(question):
        return None
    kind = f"the {head.group('category')} " if head.group("category") else ""
    relation = head.group("relation").lower()
    if (compared := _compared(question[head.end() :], "{q1}", "{q2}")) is None:
        return None
    first, second, compare = compared
    return [
        *((_hop(f"the {relation} of {kind}{x}"), ()) for x in items),
        (first, ("q1",)),
        (second, ("q2",)),
        (compare.format(q1="{q3}", q2="{q4}"), ("q3", "q4")),
    ]


# --- the plan a compositional chain asks for ---------------------------------------------------

_SUPERLATIVE = (
    r"(?:(?:second|third|fourth|fifth|\d+(?:st|nd|rd|th))\s+)?(?:(?:most|least)\s+[\w-]+|first|"
    r"last|best|worst|largest|biggest|smallest|highest|lowest|longest|shortest|tallest|oldest|"
    r"youngest|earliest|latest|newest|fastest|slowest|deepest|heaviest|richest|hottest|coldest|"
    r"greatest|closest|farthest|furthest|busiest|wealthiest|poorest|strongest|brightest|"
    r"widest|smallest|most\s+recent)"
)
_KIN = (
    r"father|mother|son|daughter|brother|sister|uncle|aunt|nephew|niece|grandfather|"
    r"grandmother|child|children|parent|parents|successor|predecessor|employer|birthplace|"
    r"hometown|capital|headquarters|label|team|leader|" + _RELATED
)
# Where a description starts: a relative clause ("the city where ...", "the band who
# performs ..."), a superlative ("the tallest ..."), a relation ("the composer of ...") and
# "the Y of Z" inside "the X of the Y of Z" run to the end of the question (or to its own
# verb); a name's relative ("Mesih Pasha's uncle") is the match.
_BETWEEN = (  # the words of a relative's noun: no verb, no preposition ("of that country")
    r"(?:(?!(?:the|is|was|are|were|it|be|has|have|had|of|in|for|to|with|from|by|and|than|"
    r"both)\b)[\w-]+\s+){0,4}?"
)
_DESCRIPTION = re.compile(
    r"(?P<relative>the\s+" + _BETWEEN + r"(?:who|that|which|where|whose|during\s+which|"
    r"in\s+which|responsible\s+for|named\s+after|(?:[\w]+ed|written|known|made|built|sung|"
    r"won|held|born)\s+(?:by|in|for|after|as))\b)"
    r"|(?P<superlative>the\s+" + _SUPERLATIVE + r"\b)"
    r"|(?P<relation>the\s+(?:[\w-]+\s+)?(?:" + _KIN + r")\s+of\s+\S)"
    r"|(?P<of>(?<=\bof\s)the\s+[a-z][\w-]*\s+of\s+(?:the\s+)?\S)"
    r"|(?P<kin>(?:[A-Z][\w.-]*\s+){0,3}[A-Z][\w.-]*['’]s?\s+(?:[\w-]+\s+){0,2}?(?:"
    + _KIN
    + r")\b)",
)
_STARTS = re.compile(r"\bthe\b|(?<![\w'’])[A-Z]")
# A question whose subject comes after its verb ("When did D die?", "In what year was D
# completed?", "What company is D a part of?") ends with its own verb, after D.
_INVERTED = re.compile(
    r"^\s*(?:(?:in|into|from|to|for|at|on|with|by)\s+)?(?:when|where|why|how(?:\s+(?:many|much|long|old)(?:\s+[\w-]+)?)?|"
    r"(?:what|which)\s+[\w-]+)\s+(?P<aux>was|were|is|are|did|does|do|has|have|had)\s+",
    re.IGNORECASE,
)
_PARTICLES = {"out", "up", "in", "of", "from", "on", "to", "for", "by", "at", "with", "off"}
_PERSON_HEAD = re.compile(
    r"\b(?:person|man|woman|people|president|king|queen|actor|actress|player|scientist|poet|"
    r"artist|politician|commander|"
    + _KIN.replace("capital|", "").replace("headquarters|", "")
    + r")\b",
    re.IGNORECASE,
)
_ASKED_HERE = re.compile(r"\b(?:what|how\s+(?:many|much))\b", re.IGNORECASE)
_MAX_HOPS = 4
_LISTED = re.compile(r"(?:,|\b(?:and|or))\s+$", re.IGNORECASE)


_IRREGULAR_PARTICIPLES = {
    "born", "built", "made", "held", "won", "sung", "written", "known", "sold", "shot", "set",
    "led", "run", "begun", "found", "taught", "bought", "thought", "drawn", "grown", "hit",
}  # fmt: skip


def _verb_tail(body: str, aux: str) -> int:
    """Where the own verb of an inverted question starts ("When did D die?", "When was D
    born?", "What company is D a part of?"); the end when its verb is the copula ("Where
    is the casino that Summer Nights takes place in?")."""
    tokens = list(re.finditer(r"\S+", body))
    words_ = [t.group() for t in tokens]
    if "{" in words_[-1]:  # "... given to {q1}": a hop's answer, not a verb, ends it
        return len(body)
    cut = len(words_) - 1
    while cut > 0 and words_[cut].lower() in _PARTICLES:
        cut -= 1
    word = words_[cut].lower()
    if cut > 0 and words_[cut - 1].lower() in {"a", "an"} and cut < len(words_) - 1:
        cut -= 1  # "a part of"
    elif aux not in {"do", "does", "did"} and not (
        word.endswith(("ed", "en")) or word in _IRREGULAR_PARTICIPLES
    ):
        return len(body)
    return tokens[cut].start() if cut > 0 else len(body)


def _description(body: str) -> tuple[int, int] | None:
    """The innermost description of ``body`` (a question without its final mark) that the
    rest of the question asks something of, as a span."""
    inverted = _INVERTED.match(body)
    # An inverted question whose subject is a description ends with its own verb, and so
    # does any description inside that subject ("the director of Jaws" in "Where was the
    # wife of the director of Jaws born?"); "How many times did plague occur in the place
    # where ... died?" has its verb after a plain subject, and ends with the description's.
    subject = inverted.end() if inverted else len(body)
    verb = len(body)
    if inverted is not None and _DESCRIPTION.match(body, subject):
        verb = _verb_tail(body, inverted.group("aux").lower())
    found: list[tuple[int, int, str]] = []
    for start in (m.start() for m in _STARTS.finditer(body)):
        if (m := _DESCRIPTION.match(body, start)) is None:
            continue
        kind = m.lastgroup or ""
        end = m.end() if kind == "kin" else verb if subject <= start < verb else len(body)
        if m.end() > end:  # its own words run into the question's verb
            continue
        # "the city with the largest population": the superlative belongs to the city.
        if kind == "superlative" and re.search(r"\bwith\s+$", body[:start]):
            continue
        while end > start and body[end - 1].isspace():
            end -= 1
        # "Mesih Pasha's uncle", not "Pasha's uncle".
        if kind == "kin" and found and found[-1][2] == "kin" and found[-1][1] == end:
            continue
        found.append((start, end, kind))
    for start, end, kind in reversed(found):  # the innermost first
        # A superlative inside an enclosing relative clause ("the space mission that had
        # the first spacewalk") is part of what the clause describes.
        if kind == "superlative" and any(k == "relative" and s < start for s, _, k in found):
            continue
        text = body[start:end]
        if end <= start or _ASKED_HERE.search(text):
            continue
        # "the freezing point of mercury and the author of Moby-Dick": an item of a list
        # is asked beside the others, not asked something of.
        if _LISTED.search(body[:start]):
            continue
        if _asks_more(body[:start] + body[end:]):
            return start, end
    return None


def _hop(description: str) -> str:
    head = re.split(r"\b(?:who|that|which|where|whose|when|of|in)\b", description, maxsplit=1)[0]
    ask = "Who" if _PERSON_HEAD.search(head) else "What"
    return f"{ask} is {description}?"


_ASKS_OF = frozenset(["where", "when", "why", "how"])
"""Question words that ask something of a description ("Where is {q1}?"), where "What is
{q1}?" only names it."""


def _asks_more(outer: str) -> bool:
    """Whether a question with its description cut out still asks something of it."""
    rest = re.sub(r"\{q\d+\}", " ", outer)
    return bool(content_stems(rest)) or any(w.lower() in _ASKS_OF for w in words(rest))


def chain_plan(question: str) -> list[tuple[str, tuple[str, ...]]] | None:
    """The plan a compositional question's phrasing asks for ("When did the president who
    said Tear Down This Wall die?": "Who is the president who said Tear Down This Wall?",
    then "When did {q1} die?"), innermost description first; None when its phrasing names
    no description to look up first, or the question is more than one sentence."""
    text = question.strip()
    if len(text) > _MAX_CHARS or not text.endswith("?") or "\n" in text:
        return None
    if re.search(r"[.?!]\s+\S", text[:-1]):
        return None
    body = text[:-1].rstrip()
    steps: list[tuple[str, tuple[str, ...]]] = []
    while len(steps) < _MAX_HOPS - 1 and (span := _description(body)) is not None:
        start, end = span
        description = body[start:end].strip()
        steps.append((_hop(description), tuple(re.findall(r"\{(q\d+)\}", description))))
        body = f"{body[:start]}{{q{len(steps)}}}{body[end:]}"
    if not steps:
        return None
    return [*steps, (body + "?", (f"q{len(steps)}",))]
