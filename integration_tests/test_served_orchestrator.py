"""The orchestrator served by LangGraph's own server (``langgraph dev``, started here on
127.0.0.1): concurrent users each get their own answer, and the load test's cross-talk check
catches a state that holds another request's marker."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph_api", reason="needs langgraph-cli[inmem] (the bench extra)")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_serving


def test_concurrent_users_each_get_their_own_answer(tmp_path: Path) -> None:
    env = {"COMPLM_BENCH_LATENCY": "0.2,0.3,0.2"}
    with bench_serving.langgraph_server(env, jobs=50, log=tmp_path / "langgraph.log") as (url, _):
        load = asyncio.run(
            bench_serving.run_load(
                [url], 40, duration=None, requests=2, think=0, ramp=0.5, timeout=120, strict=True
            )
        )
    assert len(load.outcomes) == 80
    assert [o.error for o in load.outcomes if not o.ok] == []


def test_the_check_catches_cross_talk() -> None:
    sent = bench_serving.query("u0001r000", 1)
    own = {"query": sent, "answer": "The answer to '[u0001r000] ...' is 42."}
    assert bench_serving.check("u0001r000", sent, own, True).ok
    mixed = own | {"results": {"q2": {"answer": "about [u0002r000]"}}}
    outcome = bench_serving.check("u0001r000", sent, mixed, True)
    assert outcome.cross_talk and not outcome.ok
    other_query = own | {"query": bench_serving.query("u0002r000", 2)}
    assert bench_serving.check("u0001r000", sent, other_query, True).cross_talk
    assert not bench_serving.check("u0001r000", sent, own | {"answer": "42"}, True).ok
