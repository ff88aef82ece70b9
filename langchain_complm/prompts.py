"""Every prompt the pipeline sends, in one place so users can read and override them.

Each stage takes its prompt as a constructor argument defaulting to the templates here.
"""

from __future__ import annotations

from langchain_core.prompts import ChatPromptTemplate

DECOMPOSE_SYSTEM = """\
You split a user's question into the smallest set of self-contained sub-questions that \
experts can answer separately. Rules:
- If the question asks one thing, return exactly one sub-question: the question itself.
- Each sub-question must be answerable on its own; copy all needed facts into it.
- When a sub-question needs the answer of an earlier one, list that id in "depends_on" \
and write the placeholder {{id}} (for example {{q1}}) where the answer goes.
- Use ids q1, q2, q3, ... At most {max_sub_queries} sub-questions.
- Reply with JSON only, no prose, in this shape:
{{"sub_queries": [{{"id": "q1", "question": "...", "depends_on": []}}]}}

Examples:
Question: What is the capital of France, and what is 15% of 80?
{{"sub_queries": [{{"id": "q1", "question": "What is the capital of France?", \
"depends_on": []}}, {{"id": "q2", "question": "What is 15% of 80?", "depends_on": []}}]}}

Question: Who directed Jaws, and in which year was that director born?
{{"sub_queries": [{{"id": "q1", "question": "Who directed the film Jaws?", \
"depends_on": []}}, {{"id": "q2", "question": "In which year was {{q1}} born?", \
"depends_on": ["q1"]}}]}}

Question: What are the common symptoms of iron-deficiency anemia?
{{"sub_queries": [{{"id": "q1", "question": "What are the common symptoms of \
iron-deficiency anemia?", "depends_on": []}}]}}"""

DECOMPOSE_PROMPT = ChatPromptTemplate.from_messages(
    [("system", DECOMPOSE_SYSTEM), ("human", "Question: {query}")]
)
"""Sub-query Generator prompt. Variables: ``query``, ``max_sub_queries``."""

DECOMPOSE_CONVERSATION = """\
The question continues this conversation. Write every sub-question so that it is understood \
without the conversation: replace each word that refers to it (it, its, he, she, they, \
that, there, the same) with what it refers to.
Conversation so far:
{conversation}"""
"""Sent as a system message just before the question when the question has a conversation
before it. Variable: ``conversation`` (one ``Role: text`` line per message)."""

DECOMPOSE_RETRY = (
    "Your reply could not be used: {error}\n"
    "Reply again with corrected JSON only, in the shape described above."
)
"""Sent after an invalid decomposition, once. Variable: ``error``."""

TRAINED_DECOMPOSE_SYSTEM = (
    "Split the user's question into self-contained sub-questions and reply with the plan "
    "as JSON only."
)
"""System prompt of the trained Sub-query Generator: short, the format is learned, not
instructed. Training pairs and inference use the same text."""

TRAINED_DECOMPOSE_PROMPT = ChatPromptTemplate.from_messages(
    [("system", TRAINED_DECOMPOSE_SYSTEM), ("human", "{query}")]
)
"""The trained Sub-query Generator's prompt: the training format. Variable: ``query``."""

SUBQUERY_WITH_CONTEXT = """\
Answers to earlier questions that may help:
{context}

Question: {question}"""
"""How a dependent sub-query is phrased to its expert. Variables: ``context``, ``question``."""

AGGREGATE_SYSTEM = """\
You write the final answer to a user's question from answers that experts gave to its \
parts. Combine them into one clear, direct answer that addresses every part of the \
question. Do not mention the experts or the sub-questions. If a part has no answer, \
answer that part yourself as well as you can."""

AGGREGATE_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", AGGREGATE_SYSTEM),
        ("human", "Question: {query}\n\nExpert answers:\n{answers}\n\nFinal answer:"),
    ]
)
"""Response Aggregator prompt. Variables: ``query``, ``answers``."""
