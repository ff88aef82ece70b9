"""``complm`` end to end on the embedded default (SmolLM2-135M + MiniLM), fully offline.

Generation is capped with ``--max-new-tokens`` so the module stays well under two minutes on
two CPU cores (SmolLM2 does about 26 tokens/s there). A 135M model often cannot write a valid
decomposition; the pipeline then answers the query whole, which is fine here: these tests
check the command works end to end, not answer quality.
"""

from __future__ import annotations

import json

import pytest

from langchain_complm.cli import main

pytestmark = pytest.mark.slow

QUESTION = "What is 12 times 3, and what is the capital of France?"
MAX_NEW_TOKENS = "64"
EXPERTS = {"math", "medicine", "science", "law", "computer_science", "history", "general"}


def test_ask(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ask", "--show-plan", "--max-new-tokens", MAX_NEW_TOKENS, QUESTION])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Plan ready:" in err and "answered by" in err
    assert "Sub-answers:" in out and "flowchart TD" in out
    answer = out.split("\nAnswer:\n", 1)[1]
    assert answer.strip()


def test_ask_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ask", "--json", "--quiet", "--max-new-tokens", MAX_NEW_TOKENS, QUESTION])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["answer"].strip()
    assert data["plan"]["sub_queries"]
    assert {r["expert"] for r in data["results"].values()} <= EXPERTS
    assert data["timings"]["total"] > 0


def test_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--max-new-tokens", "160", QUESTION])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("q1: ") and "[" in out

    code = main(["plan", "--json", "-q", "--max-new-tokens", "160", QUESTION])
    out, err = capsys.readouterr()
    assert code == 0, err
    plan = json.loads(out)
    assert plan["query"] == QUESTION
    assert all(sq["route"]["expert"] in EXPERTS for sq in plan["sub_queries"])
