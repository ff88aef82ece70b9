"""A Comp-LLM run for the durability tests to kill: ``python durable_worker.py DB LOG MODE
DURABILITY sync|async`` runs one question on thread ``t`` of a SQLite checkpointer at ``DB``.

Every stage call is written to ``LOG`` as it starts and ends (``decompose``, ``start q1``,
``end q1``, ...), so the test knows when to kill the process and what a resumed run did again.
Sub-query ``q4`` takes long in the first run (it is the one the kill interrupts).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fakes import KeywordEmbeddings, fake_llm, literal_aggregator, literal_generator
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from langchain_complm import Expert
from langchain_complm.pipeline import CHECKPOINT_TYPES, create_comp_llm

THREAD = {"configurable": {"thread_id": "t"}}
QUESTION = "What is 2+3 and which drug treats it, then their war and king?"

DELAYS = {"q1": 0.1, "q2": 0.3, "q3": 0.1, "q4": 60.0}


def plan(variant: str) -> str:
    """The decomposer's reply; a resumed run gets variant "B" (same ids, other questions),
    which it must never use."""
    questions = {
        "q1": f"{variant}: what is the sum of 2 and 3",
        "q2": f"{variant}: which drug treats the disease",
        "q3": f"{variant}: multiply {{q1}} by a number",
        "q4": f"{variant}: which king fought the war after {{q2}}",
    }
    deps = {"q3": ["q1"], "q4": ["q2"]}
    return json.dumps(
        {
            "sub_queries": [
                {"id": k, "question": q, "depends_on": deps.get(k, [])}
                for k, q in questions.items()
            ]
        }
    )


class LoggedChat(FakeListChatModel):
    log: str

    def _note(self) -> None:
        with open(self.log, "a", encoding="utf-8") as out:
            out.write("decompose\n")

    def _call(self, *args: Any, **kwargs: Any) -> str:
        self._note()
        return super()._call(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self._note()
        yield from super()._stream(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self._note()
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk


SERDE = JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)


def sqlite_saver(db: str) -> SqliteSaver:
    return SqliteSaver(sqlite3.connect(db, check_same_thread=False), serde=SERDE)


def build(saver: Any, log: str, mode: str, variant: str = "A", slow: float | None = None) -> Any:
    """The pipeline over ``saver``: experts that log their calls, a logged decomposer
    (``MODE+stream``: with plan streaming)."""

    def note(line: str) -> None:
        with open(log, "a", encoding="utf-8") as out:
            out.write(line + "\n")

    def delay_of(messages: Any) -> tuple[str, float]:
        sq_id = _id(messages[-1].text)
        return sq_id, (slow if slow is not None and sq_id == "q4" else DELAYS[sq_id])

    def answer(messages: Any) -> str:
        sq_id, delay = delay_of(messages)
        note(f"start {sq_id}")
        time.sleep(delay)
        note(f"end {sq_id}")
        return f"answer to <{messages[-1].text.splitlines()[-1]}>"

    async def aanswer(messages: Any) -> str:
        sq_id, delay = delay_of(messages)
        note(f"start {sq_id}")
        await asyncio.sleep(delay)
        note(f"end {sq_id}")
        return f"answer to <{messages[-1].text.splitlines()[-1]}>"

    experts = [
        Expert(
            name=name,
            description=description,
            llm=RunnableLambda(answer, afunc=aanswer, name=name),
        )
        for name, description in (
            ("math", "sum add multiply number math"),
            ("medicine", "drug disease treat medicine"),
            ("history", "war king history"),
        )
    ]
    return create_comp_llm(
        experts,
        generator=literal_generator(LoggedChat(responses=[plan(variant)], log=log)),
        router=KeywordEmbeddings(),
        aggregator=literal_aggregator(fake_llm("final answer")),
        mode=mode.removesuffix("+stream"),  # type: ignore[arg-type]
        stream_plan=mode.endswith("+stream"),
        checkpointer=saver,
    )


def _id(text: str) -> str:
    """The sub-query id from its prompt (each plan question says which one it is)."""
    last = text.splitlines()[-1]
    # Dependents quote their parents' answers: test the words of the later ones first.
    for sq_id, word in (("q4", "king"), ("q3", "multiply"), ("q2", "drug"), ("q1", "sum")):
        if word in last:
            return sq_id
    raise AssertionError(f"unknown sub-query {last!r}")


async def _arun(db: str, log: str, mode: str, durability: str) -> None:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(db) as conn:
        comp = build(AsyncSqliteSaver(conn, serde=SERDE), log, mode)
        await comp.ainvoke(QUESTION, THREAD, durability=durability)


def main() -> None:
    db, log, mode, durability, calls = sys.argv[1:6]
    if calls == "async":
        asyncio.run(_arun(db, log, mode, durability))
    else:
        build(sqlite_saver(db), log, mode).invoke(QUESTION, THREAD, durability=durability)
    with Path(log).open("a", encoding="utf-8") as out:
        out.write("finished\n")


if __name__ == "__main__":
    main()
