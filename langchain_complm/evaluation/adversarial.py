"""Adversarial inputs: texts of a given length built to make parsers and splitters work hard.

They are the kinds of input that once took the structural splitter, the plan parser and
plan repair super-linear time (runs of joiners, whitespace and end marks; bracket runs, deep
nesting, unterminated strings, quotes and escapes; a small model looping on one hop). The
robustness tests and
``benchmarks/bench_robustness.py`` share them.
"""

from __future__ import annotations

import json

__all__ = ["REPAIR_QUERY", "adversarial_plans", "adversarial_queries", "adversarial_replies"]


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


REPAIR_QUERY = "What is 15% of 80, and who wrote Hamlet?"
"""The question :func:`adversarial_plans` are replies to."""


def _plan_reply(questions: list[str], parents: list[list[int]]) -> str:
    items = [
        {"id": f"q{i}", "question": q, "depends_on": [f"q{p}" for p in ps]}
        for i, (q, ps) in enumerate(zip(questions, parents, strict=True), start=1)
    ]
    return json.dumps({"sub_queries": items})


def adversarial_plans(length: int) -> dict[str, str]:
    """Valid plan replies to :data:`REPAIR_QUERY` of at most about ``length`` characters,
    by kind, that give plan repair the most to do: a model looping on one hop (each hop a
    final step once the next is removed), the same loop with its placeholders undeclared,
    many restatements of one part, and a fan-in over every answer."""
    count = max(3, length // 95)
    first, last = "What is 15% of 80?", "Who wrote Hamlet?"
    hops = [f"What is {{q{i}}} times 2?" for i in range(1, count - 1)]
    chain = [[i] for i in range(1, count - 1)]
    independent: list[list[int]] = [[]] * count
    restated = [f"Who wrote Hamlet, act {i}?" for i in range(1, count - 1)]
    fan_in = " and ".join(f"{{q{i}}}" for i in range(1, count))
    return {
        "looping hop": _plan_reply([first, *hops, last], [[], *chain, []]),
        "undeclared placeholders": _plan_reply([first, *hops, last], independent),
        "restated part": _plan_reply([first, *restated, last], independent),
        "fan-in": _plan_reply(
            [first, *restated, f"Compare {fan_in}."], [[]] * (count - 1) + [list(range(1, count))]
        ),
    }
