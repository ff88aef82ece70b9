"""Durability: a run killed mid-plan resumes on its thread without decomposing again and
without recomputing a finished sub-query, and never pairs an answer with another question.

As upstream's ``test_pending_writes_resume`` does, but with a process that is really killed:
each case starts ``durable_worker.py`` on a SQLite file, kills it (SIGKILL) once three of the
four sub-queries have finished, and resumes the thread here with ``invoke(None, thread)``,
over a decomposer that would now write a different plan.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from durable_worker import QUESTION, THREAD, build, sqlite_saver
from fakes import (
    KeywordEmbeddings,
    fake_llm,
    literal_aggregator,
    literal_generator,
    make_expert,
    plan_json,
)
from langgraph.checkpoint.memory import InMemorySaver

from langchain_complm import CompLLMOutput
from langchain_complm.pipeline import create_comp_llm

WORKER = Path(__file__).with_name("durable_worker.py")


def lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def run_and_kill(tmp_path: Path, mode: str, durability: str, calls: str) -> tuple[Path, Path]:
    db, log = tmp_path / "checkpoints.sqlite", tmp_path / "run.log"
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(db), str(log), mode, durability, calls],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), *sys.path])},
    )
    try:
        deadline = time.monotonic() + 120
        while sum(line.startswith("end ") for line in lines(log)) < 3:
            assert worker.poll() is None, f"the worker exited early: {lines(log)}"
            assert time.monotonic() < deadline, f"the worker got stuck: {lines(log)}"
            time.sleep(0.05)
        time.sleep(0.5)  # the background checkpoint writes of "async" land meanwhile
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert "start q4" in lines(log) and "end q4" not in lines(log)
    return db, log


@pytest.mark.parametrize(
    ("mode", "durability", "calls"),
    [
        ("superstep", "sync", "sync"),
        ("superstep", "async", "sync"),
        ("eager", "sync", "sync"),
        ("eager", "async", "async"),
        ("eager+stream", "sync", "sync"),
        ("eager+stream", "async", "async"),
    ],
)
def test_a_killed_run_resumes_without_redoing_finished_work(
    tmp_path: Path, mode: str, durability: str, calls: str
) -> None:
    db, log = run_and_kill(tmp_path, mode, durability, calls)
    first = lines(log)
    assert first.count("decompose") == 1

    # A new process would do exactly this: the same thread, a decomposer that would now
    # write another plan (same ids, different questions), a fast q4.
    comp = build(sqlite_saver(str(db)), str(log), mode, variant="B", slow=0.01)
    out = CompLLMOutput.model_validate(comp.invoke(None, THREAD, durability=durability))
    again = lines(log)[len(first) :]
    assert again == ["start q4", "end q4"]  # no decomposition, no finished sub-query again
    assert out.query == QUESTION and out.answer == "final answer"
    for sq_id, result in out.results.items():
        assert result.question.startswith("A: "), sq_id  # the plan the answers belong to
        assert result.answer and result.question.split(": ")[1].split()[0] in result.answer
    assert out.plan.sub_queries[3].question == out.results["q4"].question


def test_under_exit_durability_a_killed_run_is_lost(tmp_path: Path) -> None:
    db, log = run_and_kill(tmp_path, "superstep", "exit", "sync")
    comp = build(sqlite_saver(str(db)), str(log), "superstep", slow=0.01)
    with pytest.raises(TypeError, match="no interrupted run to resume"):
        comp.invoke(None, THREAD)
    # The thread starts over: decomposed again, every sub-query run.
    before = len(lines(log))
    comp.invoke(QUESTION, THREAD, durability="exit")
    assert lines(log)[before:].count("decompose") == 1


class Crash(BaseException):
    """Stands for the process dying: not an error the attempt loop handles."""


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize("mode", ["superstep", "eager", "eager+stream"])
@pytest.mark.parametrize("use_async", [False, True])
async def test_in_memory_a_crashed_run_resumes(durability: str, mode: str, use_async: bool) -> None:
    math, math_fake = make_expert("math")
    medicine, _ = make_expert("medicine")
    crash = {"q2": True}
    original = medicine.llm

    def crashing(messages: Any) -> Any:
        if crash["q2"]:
            raise Crash
        return original.invoke(messages)

    async def acrashing(messages: Any) -> Any:
        if crash["q2"]:
            raise Crash
        return await original.ainvoke(messages)

    from langchain_core.runnables import RunnableLambda

    medicine = medicine.model_copy(update={"llm": RunnableLambda(crashing, afunc=acrashing)})
    generator = fake_llm(
        plan_json(("q1", "the sum of 2 and 3", []), ("q2", "a drug for {q1}", ["q1"])),
        plan_json(("q1", "another sum", []), ("q2", "another drug for {q1}", ["q1"])),
    )
    comp = create_comp_llm(
        [math, medicine],
        generator=literal_generator(generator),
        router=KeywordEmbeddings(),
        aggregator=literal_aggregator(fake_llm("final")),
        mode=mode.removesuffix("+stream"),  # type: ignore[arg-type]
        stream_plan=mode.endswith("+stream"),
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"{mode}-{durability}"}}

    async def call(value: Any) -> Any:
        if use_async:
            return await comp.ainvoke(value, config, durability=durability)
        return comp.invoke(value, config, durability=durability)

    with pytest.raises(Crash):
        await call("q")
    assert len(math_fake.calls) == 1
    crash["q2"] = False
    out = CompLLMOutput.model_validate(await call(None))
    assert len(math_fake.calls) == 1  # q1 was not asked again
    assert out.results["q2"].question == "a drug for {q1}"  # the first plan, not another
    assert generator.i == 1  # decomposed once
    assert out.answer == "final"
