"""The shipped Sub-query Generator on follow-up questions: with the conversation before them,
it turns a question that leans on the conversation ("when was he born?") into sub-queries that
carry the subject; without it, it cannot."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from langchain_complm import Plan
from langchain_complm.config import build_parts, default_config
from langchain_complm.decompose import DecompositionInput

FOLLOW_UPS = [
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet.", "When was he born?", "hamlet"),
    (
        "What is the capital of France?",
        "Paris is the capital of France.",
        "And what is its population?",
        "france",
    ),
    (
        "Tell me about aspirin.",
        "Aspirin is a drug that treats pain and fever.",
        "What are its side effects?",
        "aspirin",
    ),
]


def resolved(plan: Plan, subject: str) -> bool:
    """Whether the sub-query that answers the follow-up (the last), or one it depends on,
    names the subject."""
    ids, seen = [plan.sub_queries[-1].id], set()
    while ids:
        sq = plan.by_id[ids.pop()]
        if subject in sq.question.lower():
            return True
        seen.add(sq.id)
        ids += [d for d in sq.depends_on if d not in seen]
    return False


@pytest.mark.slow
def test_follow_ups_become_self_contained_with_the_conversation() -> None:
    generator = build_parts(default_config()).generator
    results = []
    for question, answer, follow_up, subject in FOLLOW_UPS:
        history: list[BaseMessage] = [HumanMessage(question), AIMessage(answer)]
        plan = generator.invoke(DecompositionInput(query=follow_up, history=history))
        results.append(resolved(plan, subject))
    # Measured: the first two are resolved (through a sub-query that asks the earlier
    # question and a dependent on its answer); the third keeps "its". Without the
    # conversation, a follow-up stays as it is.
    assert sum(results) >= 2, results
    alone = generator.invoke(FOLLOW_UPS[0][2])
    assert not resolved(alone, FOLLOW_UPS[0][3])
