"""Text rules every layer shares: content words, crude stems, numbers, stop strings.

Plan repair asks whether a plan's sub-queries ask what the question asks, and the
aggregator whether its answer holds each part's answer; both compare content words, and
this module is the one place that says what a content word is. It is also the one place
that says where a reply ends at a stop string, for a whole text (a local model's reply,
a Comp-LLM answer) and for a stream of tokens (:class:`StopCutter`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_FUNCTION_WORDS_TEXT = """
    a an the and or but nor of to in on at by for with from into onto upon over under about as
    than then so if is are was were be been being am do does did done doing has have had
    having it its it's this that these those there here such which who whom whose what when
    where why how whether can could should would will shall may might must i me my we our you
    your he him his she her they them their one ones not no yes also too very just only more
    most much many some any each every both either neither all other another same own
    please answer answers question questions tell give name find list explain describe state
    show compute calculate determine know like want help following part parts quick things
    thing two three four first second third fourth next finally lastly last now previous step
    found result number get value out up down off again still besides additionally moreover
    furthermore however meanwhile afterwards separately solve unrelated need needs fact facts
    thanks thank thx cheers hi hello hey q after"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
"""Function words, question words and request words: not what a question asks about."""

_WORD = re.compile(r"\{[^{}\s]+\}|[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100,
    "thousand": 1000, "million": 1000000, "twice": 2, "double": 2, "doubled": 2, "half": 2,
    "halve": 2, "halved": 2, "triple": 3, "tripled": 3, "thrice": 3, "quadruple": 4,
    "square": 2, "squared": 2, "cube": 3, "cubed": 3, "percent": 100, "dozen": 12,
}  # fmt: skip
"""Number words of a question: a sub-query may write them as digits."""


_SYNONYMS = {
    "times": "multiply", "multiplied": "multiply", "product": "multiply",
    "minus": "subtract", "less": "subtract", "difference": "subtract",
    "plus": "add", "added": "add", "sum": "add", "divided": "divide", "quotient": "divide",
    "people": "population", "cubed": "cube", "total": "add", "away": "subtract",
    "apart": "subtract", "double": "multiply", "doubled": "multiply", "twice": "multiply",
    "triple": "multiply", "tripled": "multiply", "thrice": "multiply", "half": "divide",
    "halve": "divide", "halved": "divide",
    # irregular verbs: the question's tense is not the sub-query's
    "began": "begin", "begun": "begin", "sank": "sink", "sunk": "sink", "wrote": "write",
    "written": "write", "fell": "fall", "fallen": "fall", "won": "win", "took": "take",
    "taken": "take", "gave": "give", "given": "give", "grew": "grow", "grown": "grow",
    "rose": "rise", "risen": "rise", "spoke": "speak", "spoken": "speak", "sang": "sing",
    "sung": "sing", "ran": "run", "flew": "fly", "flown": "fly", "drew": "draw",
    "drawn": "draw", "threw": "throw", "thrown": "throw", "knew": "know", "known": "know",
    "saw": "see", "seen": "see", "came": "come", "became": "become", "went": "go",
    "gone": "go", "died": "die", "dead": "die", "death": "die", "formed": "found",
    "founded": "found",
    # comparatives: "Which is bigger?" asks what "Which number is larger?" asks
    "bigger": "large", "larger": "large", "greater": "large", "more": "large",
    "largest": "large", "biggest": "large", "older": "early", "earlier": "early",
    "before": "early", "oldest": "early", "younger": "late", "later": "late",
    "newer": "late", "youngest": "late", "higher": "tall", "taller": "tall",
}  # fmt: skip
"""Words a sub-query may ask with another word (operators, irregular verb forms)."""


def stem(word: str) -> str:
    """A crude stem: lower case, no possessive, synonyms merged, at most five letters
    ("directed" and "director" meet at "direc")."""
    word = re.sub(r"['’]s?$", "", word.lower())
    return _SYNONYMS.get(word, word)[:5]


_ENUMERATOR = re.compile(
    r"\(\d{1,2}\)|\[\d{1,2}\]|^\s*\d{1,2}[.)]|(?<=\s)\d{1,2}\)(?=\s)|\b(?:question|part)\s+\d{1,2}\b"
    r"|\b\d{1,2}\s+(?:questions?|things|parts|queries)\b|(?:^|(?<=\s))\(?[a-hA-H]\)(?=\s)",
    re.IGNORECASE | re.MULTILINE,
)
"""Labels of an enumeration ("(1)", "2.", "Part 3"): not numbers the question asks about."""


def word_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of every word of ``text``, placeholders (``{q1}``) included."""
    return [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(_ENUMERATOR.sub(" ", text)) if not w.startswith("{")]


_CONTRACTION = re.compile(r"['’](?:s|re|ll|ve|d|m)$|n['’]t$", re.IGNORECASE)


def is_function_word(word: str) -> bool:
    return _CONTRACTION.sub("", word.lower()) in FUNCTION_WORDS


def content_stems(text: str) -> set[str]:
    """The stems of the words a question asks about."""
    return {stem(w) for w in words(text) if not is_function_word(w)}


def numbers(text: str) -> set[str]:
    """Numbers written in digits or words, normalised ("1,000" and "1000" are one)."""
    found = {n.replace(",", "") for n in _NUMBER.findall(text)}
    found.update(str(_NUMBER_WORDS[w.lower()]) for w in words(text) if w.lower() in _NUMBER_WORDS)
    if "%" in text:
        found.add("100")
    return found


__all__ = [
    "FUNCTION_WORDS",
    "content_stems",
    "is_function_word",
    "numbers",
    "stem",
    "word_spans",
    "words",
]


# --- stop strings ----------------------------------------------------------------------------


def truncate_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; also say whether one was found
    (empty stop strings are ignored)."""
    cut = min((i for s in stop or () if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopCutter:
    """:func:`truncate_at_stop` over a token stream: holds back text that may begin a stop
    string, and gives nothing once one was found."""

    def __init__(self, stop: Sequence[str] | None) -> None:
        self.stop = [s for s in stop or () if s]
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> str:
        """The part of ``text`` (after what was held back) that is surely before a stop."""
        if self.done:
            return ""
        if not self.stop:
            return text
        self.pending += text
        cut, self.done = truncate_at_stop(self.pending, self.stop)
        if self.done:
            return cut
        safe = len(self.pending) - max(len(s) - 1 for s in self.stop)
        if safe <= 0:
            return ""
        out, self.pending = self.pending[:safe], self.pending[safe:]
        return out

    def flush(self) -> str:
        """Whatever was held back, at the end of the stream."""
        out, self.pending = ("" if self.done else self.pending), ""
        return out
