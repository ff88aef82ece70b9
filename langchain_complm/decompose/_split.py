"""Splitting a query at its explicit structure: enumerations, ordinals, several questions in
a row, and questions joined by ", and". Used by the structural decomposer and by plan repair
(a sub-query that merges the query's marked parts is split into them), so it sits below both.
"""

from __future__ import annotations

import re
from bisect import bisect_right

_QWORDS = (
    "what|who|whom|whose|which|when|where|why|how|is|are|was|were|am|does|do|did|can|could|"
    "should|would|will|shall|has|have|had|may|might|must"
)
# Used with .match(text, pos): anchored where the part starts, without slicing it out.
_QSTART = re.compile(rf"\W*(?:{_QWORDS})\b", re.IGNORECASE)
_QWORD_CAP = re.compile(r"\b(?:" + "|".join(w.capitalize() for w in _QWORDS.split("|")) + r")\b")

# Words that make a later part depend on an earlier one ("Who wrote Hamlet? When was it
# written?"); such queries are not split, since the parts would not be self-contained. Only
# short parts count: a long part (a word problem, a case vignette) introduces its own
# referents ("Jaime places eggs... If he has 64 eggs...").
_SHORT_PART_WORDS = 15
_ANAPHORA = re.compile(
    r"\b(?:it|its|itself|he|him|his|she|her|they|them|their|theirs|themselves)\b",
    re.IGNORECASE,
)
# A leading sentence that talks about the request rather than asking something.
_META = re.compile(
    r"\b(?:questions?|answer|following|both|these|help|queries|things|quick)\b", re.IGNORECASE
)
# Joiners around a part: punctuation, whitespace and the words "and" / "also". Each
# alternative starts with a different character, so a match never backtracks between them
# (the old "and\s+also|and|also" alternatives matched " and also" two ways: exponential).
_LEADING_JOINER = re.compile(r"(?:[,;\s]|(?:and|also)\b)+", re.IGNORECASE)
# The trailing joiners are matched at the start of the reversed text: a pattern anchored
# with $ is tried from every position and is quadratic on a long run of joiners.
_TRAILING_JOINER_REVERSED = re.compile(r"(?:[,;:\s]|(?:dna|osla)\b)+", re.IGNORECASE)
_COURTESY = re.compile(r"^(?:thanks?|thank you|thx|cheers)\b", re.IGNORECASE)
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "st", "vs", "etc", "jr", "sr", "prof", "no", "fig"}

# Enumeration markers. Each pattern captures the label; labels must run 1, 2, 3... / a, b, c...
_ENUMERATIONS = (
    re.compile(r"(?:^|(?<=\s))(?:question|part|q)\s*(\d{1,2})\s*[:.)]\s*", re.IGNORECASE),
    re.compile(r"(?:^|(?<=[\s:;,.?!]))\((\d{1,2})\)\s*"),  # (1) ... (2) ...
    re.compile(r"(?:^|(?<=[\s:;,?!]))(\d{1,2})[.)]\s+"),  # 1. ... 2. ...  /  1) ... 2) ...
    re.compile(r"(?:^|(?<=[\s:;,.?!]))\(([a-h])\)\s*"),  # (a) ... (b) ...
    re.compile(r"(?:^|(?<=[\s:;,.?!]))([a-h])\)\s+"),  # a) ... b) ...
)
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_ORDINAL = re.compile(
    r"(?:^|(?<=[\s:;,.?!]))(first|second|third|fourth|fifth|sixth|seventh|eighth|finally|"
    r"lastly|last)(?:ly)?\s*[,:]\s*",
    re.IGNORECASE,
)
_OPTION_LABEL = re.compile(r"(?:^|(?<=\s))\(?([A-H])[.)]\s")
_CONJUNCTIONS = re.compile(r"\s*(?:[,;]\s*and(?:\s+also)?|\s+and\s+also|[,;.]?\s+Also,)\s+")


def split_query(
    query: str,
    max_sub_queries: int | None = None,
    *,
    allow_references: bool = False,
    joined: bool = True,
) -> list[str]:
    """Split ``query`` into parts at its explicit structure.

    Returns ``[]`` when no structure is found, when there are more than ``max_sub_queries``
    parts, or (unless ``allow_references``) when a short later part refers back to an
    earlier one with a pronoun, so that the parts would not be self-contained. With
    ``joined=False`` questions joined by ", and" stay one part ("Who wrote Beloved, and
    when was it published?" may be one question).
    """
    text = normalize_space(query)
    if not text:
        return []
    parts = _split_enumeration(text) or _split_ordinals(text) or _split_sentences(text, joined)
    parts = [p for p in (_finish(p) for p in parts) if p]
    if len(parts) < 2:
        return []
    if max_sub_queries is not None and len(parts) > max_sub_queries:
        return []
    if allow_references:
        return parts
    if any(_ANAPHORA.search(p) and len(p.split()) <= _SHORT_PART_WORDS for p in parts[1:]):
        return []
    return parts


def normalize_space(query: str) -> str:
    """Every whitespace run becomes one space, or one newline if it holds a line break.

    With no run longer than one character, the ``\\s*``/``\\s+`` in the patterns below
    cannot try a run in many ways, which keeps every match linear in the query's length.
    """
    return _LINE_BREAK_RUN.sub("\n", _SPACE_RUN.sub(" ", query)).strip()


_SPACE_RUN = re.compile(r"[^\S\n]+")
_LINE_BREAK_RUN = re.compile(r"\s*\n\s*")


def _strip_joiners(part: str) -> str:
    """``part`` without the joiners ("and", "also", commas, ...) at either end."""
    start = _LEADING_JOINER.match(part)
    part = part[start.end() :] if start else part
    end = _TRAILING_JOINER_REVERSED.match(part[::-1])
    return (part[: len(part) - end.end()] if end else part).strip()


# --- enumerations -----------------------------------------------------------------------------


_OPTION_LINE = re.compile(r"^\(?[A-H][.)] [^\n]*", re.MULTILINE)
"""A multiple-choice option on a line of its own: an enumeration inside it ("C) Treaties may
1) codify ..., 2) crystallise ...") is the option's, not the query's."""


def _split_enumeration(text: str) -> list[str]:
    options = [m.span() for m in _OPTION_LINE.finditer(text)]
    for pattern in _ENUMERATIONS:
        markers = _sequential(pattern, text, _labels(pattern), options)
        if len(markers) >= 2:
            return _cut(text, markers)
    return []


def _labels(pattern: re.Pattern[str]) -> list[str]:
    if "a-h" in pattern.pattern:
        return list("abcdefgh")
    return [str(i) for i in range(1, 100)]


def _sequential(
    pattern: re.Pattern[str], text: str, labels: list[str], skipped: list[tuple[int, int]]
) -> list[re.Match[str]]:
    """The markers labelled labels[0], labels[1], ... in order (greedy, first match each),
    none inside the ``skipped`` spans (sorted, disjoint)."""
    starts = [start for start, _ in skipped]
    found: list[re.Match[str]] = []
    for match in pattern.finditer(text):
        at = bisect_right(starts, match.start()) - 1
        if at >= 0 and match.start() < skipped[at][1]:
            continue
        if len(found) < len(labels) and match.group(1).lower() == labels[len(found)]:
            found.append(match)
    return found


def _cut(text: str, markers: list[re.Match[str]]) -> list[str]:
    lead = text[: markers[0].start()].strip()
    items = [
        text[m.end() : markers[i + 1].start() if i + 1 < len(markers) else len(text)]
        for i, m in enumerate(markers)
    ]
    items = [_strip_joiners(item) for item in items]
    # A lead-in that is not a sentence of its own ("Tell me (1) ... and (2) ...") heads every
    # item; a sentence or a "...:" line before the list is a preamble and is dropped.
    if lead and not lead.endswith((".", "?", "!", ":")):
        lead_is_question = bool(_QSTART.match(lead))
        items = [
            f"{lead} {_decapitalize(item)}".rstrip("?. ") + ("?" if lead_is_question else "")
            for item in items
        ]
    return items


def _split_ordinals(text: str) -> list[str]:
    markers: list[re.Match[str]] = []
    for match in _ORDINAL.finditer(text):
        word = match.group(1).lower()
        if word in ("finally", "lastly", "last"):
            if len(markers) >= 2:
                markers.append(match)
            break
        if len(markers) < len(_ORDINALS) and word == _ORDINALS[len(markers)]:
            markers.append(match)
    return _cut(text, markers) if len(markers) >= 2 else []


# --- sentences and joined questions -----------------------------------------------------------


def _split_sentences(text: str, joined: bool) -> list[str]:
    segments: list[str] = []
    for sentence in _sentences(text):
        segments.extend(_split_options(sentence))
    # Each part as a list of pieces, joined at the end (no quadratic string building).
    parts: list[list[str]] = []
    attached_after_question = False
    for position, segment in enumerate(segments):
        if _is_question(segment):
            parts.extend(
                [piece] for piece in (_split_conjunctions(segment) if joined else [segment])
            )
            attached_after_question = True
        elif not attached_after_question:
            # A preamble: dropped when it is about the request, else it may carry content
            # ("Explain X. What is Y?"), so the query is not split.
            if position == 0 and _META.search(segment):
                continue
            return []
        elif _COURTESY.match(segment):
            continue
        else:
            parts[-1].append(segment)  # options or remarks belong to their question
    return [" ".join(pieces) for pieces in parts]


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() + len(match.group(0).rstrip())
        if match.group(0)[0] == "." and not _is_sentence_end(text, match.start()):
            continue
        if text[match.end() : match.end() + 1].islower() and match.group(0)[0] != "\n":
            continue
        out.append(text[start:end].strip())
        start = match.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


# A run of end marks is only tried from its first mark (from each mark: quadratic).
_SENTENCE_END = re.compile(r"(?<![.?!])[.?!]+\s+|\n+")


def _is_sentence_end(text: str, dot: int) -> bool:
    # The word before the dot, found by scanning back: candidate dots are followed by
    # whitespace, so the words scanned for different dots never overlap.
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    token = text[start:dot]
    if not token:
        return True
    # Initials, option labels ("A."), abbreviations, "U.S.", list numbers ("1.").
    return not (
        len(token.strip("(")) == 1
        or token.lower().strip("(") in _ABBREVIATIONS
        or "." in token
        or token.isdigit()
    )


def _split_options(sentence: str) -> list[str]:
    """Separate a run of options from a question glued after it ("A. 3 B. 4 What is...?")."""
    labels = list(_OPTION_LABEL.finditer(sentence))
    if not labels or labels[0].start() != 0 or labels[0].group(1) != "A":
        return [sentence]
    last = labels[0]
    for match in labels[1:]:
        if ord(match.group(1)) == ord(last.group(1)) + 1:
            last = match
    question = _QWORD_CAP.search(sentence, last.end())
    if not question or not sentence.rstrip().endswith("?"):
        return [sentence]
    return [sentence[: question.start()].strip(), sentence[question.start() :].strip()]


def _split_conjunctions(question: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    opening = _QSTART.match(question)
    for match in _CONJUNCTIONS.finditer(question):
        left_is_question = opening is not None and opening.end() <= match.start()
        if left_is_question and _QSTART.match(question, match.end()):
            pieces.append(question[start : match.start()])
            start = match.end()
            opening = _QSTART.match(question, start)
    pieces.append(question[start:])
    return pieces


def _is_question(segment: str) -> bool:
    joiner = _LEADING_JOINER.match(segment)
    start = joiner.end() if joiner else 0
    return segment.endswith("?") or bool(_QSTART.match(segment, start))


# --- finishing --------------------------------------------------------------------------------


def _finish(part: str) -> str:
    part = _strip_joiners(part.strip())
    if not part:
        return ""
    part = part[0].upper() + part[1:]
    if _QSTART.match(part) and not _has_options(part):
        part = part.rstrip(".!,;: ") + "?" if not part.endswith("?") else part
    return part


def _has_options(part: str) -> bool:
    return bool(re.search(r"\?\s+\(?A[.)]\s", part))


def _decapitalize(item: str) -> str:
    if item[:1].isupper() and not item[1:2].isupper():
        return item[0].lower() + item[1:]
    return item


__all__ = ["split_query"]
