"""Adversarial inputs: texts of a given length built to make parsers and splitters work hard.

They are the kinds of input that once took the structural splitter and the plan parser
super-linear time (runs of joiners, whitespace and end marks; bracket runs, deep nesting,
unterminated strings, quotes and escapes). The robustness tests and
``benchmarks/bench_robustness.py`` share them.
"""

from __future__ import annotations

import json

__all__ = ["adversarial_queries", "adversarial_replies"]


def _repeat(unit: str, length: int, head: str = "", tail: str = "") -> str:
    """``head``, then ``unit`` repeated, then ``tail``: about ``length`` characters."""
    count = max(1, (length - len(head) - len(tail)) // max(1, len(unit)))
    return head + unit * count + tail


def adversarial_queries(length: int) -> dict[str, str]:
    """User queries of about ``length`` characters, by kind, built to trigger backtracking
    in patterns over joiners, whitespace, end marks, enumerations and abbreviations."""
    return {
        "and also": _repeat(" and also", length, "What is x", "?"),
        "newlines": _repeat("\n", length, "What is x?", "who is y"),
        "mixed whitespace": _repeat(" \n\t\r", length, "What is x?", "who is y"),
        "end marks": _repeat("?!.", length, "What"),
        "joiners": _repeat(", and", length, "What is x"),
        "joined questions": _repeat(", and what is b", length, "What is a", "?"),
        "enumeration": _repeat("(1) what ", length),
        "abbreviations": _repeat("Dr. ", length, "What did ", "say?"),
        "punctuation": _repeat("!", length, "What "),
        "options": _repeat("A. x ", length, "", "What is it?"),
        "questions": _repeat("? ", length, "What"),
        "braces": _repeat("{name} ", length, "What does f'", "' print?"),
    }


_PLAN_ITEM = '{"id": "q%d", "question": "What is part %d of the question?", "depends_on": []}'


def adversarial_replies(length: int) -> dict[str, str]:
    """Decomposition replies of about ``length`` characters, by kind: bracket runs, deep
    nesting, unterminated strings, quotes and escapes, prose with braces, Python literals,
    long valid plans, and valid plans buried in noise."""
    items = ", ".join(_PLAN_ITEM % (i, i) for i in range(1, 9))
    plan = '{"sub_queries": [' + items + "]}"
    return {
        "open braces": _repeat("{", length),
        "open brackets": _repeat("[", length),
        "nested brackets": "[" * (length // 2) + "]" * (length // 2),
        "nested objects": _repeat('{"a": ', length),
        "mixed brackets": _repeat("{[", length),
        "double braces": _repeat("{{", length),
        "quotes": _repeat('"', length, "{"),
        "backslashes": _repeat("\\", length, '{"sub_queries": [{"question": "'),
        "unterminated string": _repeat("x", length, '{"sub_queries": [{"question": "'),
        "commas": _repeat(",", length, '{"sub_queries": [{"question": "a?"'),
        "prose braces": _repeat("Use {q1} here. ", length),
        "json prose": _repeat('{"note": "x"} ', length),
        "fences": _repeat("```json\n{", length),
        "python literal": _repeat("'x', ", length, "{'sub_queries': [", "]}"),
        "long question": json.dumps({"sub_queries": [{"id": "q1", "question": "x" * length}]}),
        "many items": _repeat(_PLAN_ITEM % (1, 1) + ", ", length, '{"sub_queries": [', "]}"),
        "plan after noise": _repeat("[{ ", length - len(plan), "", plan),
        "plan before noise": _repeat("} ] ", length - len(plan), plan),
        "big number": _repeat("9", length, '{"sub_queries": [{"id": ', ', "question": "a?"}]}'),
        "surrogate escapes": _repeat("\\ud800", length, '{"sub_queries": [{"question": "', '"}]}'),
    }
