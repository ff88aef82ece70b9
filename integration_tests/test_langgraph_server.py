"""The embedded default behind LangGraph's own server: ``langgraph dev`` (started here, on
127.0.0.1) serves ``langgraph.json``'s graphs, and a langgraph-sdk client talks to it the way
Studio and Agent Chat UI do: plain-dict messages in, ``updates`` streamed, ``messages`` read
back, and the plan-review interrupt answered through the server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph_api", reason="needs langgraph-cli[inmem]")
from langgraph_sdk import get_client

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is 15% of 80? What are the symptoms of iron-deficiency anemia?"
SHORT_QUESTION = "What is 15% of 80?"
STAGES = {"decompose", "route", "execute", "aggregate"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("langgraph-dev") / "server.log"
    port = _free_port()
    command = [
        str(Path(sys.executable).with_name("langgraph")),
        *("dev", "--host", "127.0.0.1", "--port", str(port)),
        *("--no-browser", "--no-reload", "--config", str(ROOT / "langgraph.json")),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            start_new_session=True,
        )
    try:
        url = _wait_until_ready(process, log, port)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], log: Path, port: int) -> str:
    deadline = time.monotonic() + 600  # the graphs load their models at import
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        assert process.poll() is None, f"langgraph dev exited:\n{text[-3000:]}"
        # If the port was taken, the server says which one it chose.
        if chosen := re.search(r"API: http://127\.0\.0\.1:(\d+)", text):
            port = int(chosen.group(1))
        if "Starting 1 background workers" in text or "Application startup complete" in text:
            return f"http://127.0.0.1:{port}"
        time.sleep(1)
    raise AssertionError(f"langgraph dev did not start:\n{log.read_text()[-3000:]}")


async def _updates(client: Any, thread_id: str, assistant: str, **run: Any) -> list[dict]:
    updates = []
    async for part in client.runs.stream(thread_id, assistant, stream_mode="updates", **run):
        assert part.event != "error", part.data
        if part.event == "updates":
            updates.append(part.data)
    return updates


@pytest.mark.slow
async def test_studio_style_messages_and_streamed_updates(server: str) -> None:
    client = get_client(url=server)
    thread = await client.threads.create()
    message = {"role": "user", "content": QUESTION}
    updates = await _updates(client, thread["thread_id"], "complm", input={"messages": [message]})
    assert {node for update in updates for node in update} >= STAGES
    state = await client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert values["messages"][-1]["type"] == "ai"
    assert values["messages"][-1]["content"] == values["answer"] and values["answer"].strip()
    assert len(values["plan"]["sub_queries"]) >= 1


@pytest.mark.slow
async def test_plan_review_interrupt_and_resume_through_the_server(server: str) -> None:
    client = get_client(url=server)
    thread_id = (await client.threads.create())["thread_id"]
    updates = await _updates(
        client,
        thread_id,
        "complm_review",
        input={"messages": [{"role": "user", "content": QUESTION}]},
    )
    interrupts = [u["__interrupt__"] for u in updates if "__interrupt__" in u]
    assert interrupts, updates
    request = interrupts[-1][0]["value"]
    assert request["type"] == "plan_review" and request["plan"]["sub_queries"]
    assert not {"execute", "aggregate"} & {node for update in updates for node in update}

    # An invalid answer fails that run with the reason; the thread still waits.
    bad = {"action": "edit", "sub_queries": {"nope": {"expert": "math"}}}
    failed = []
    async for part in client.runs.stream(
        thread_id, "complm_review", command={"resume": bad}, stream_mode="updates"
    ):
        if part.event == "error":
            failed.append(part.data)
    assert failed and "no sub-query 'nope'" in str(failed)
    assert (await client.threads.get_state(thread_id))["tasks"][0]["interrupts"]

    expert = request["plan"]["sub_queries"][0]["route"]["expert"]
    first = request["plan"]["sub_queries"][0]["id"]
    edit = {"action": "edit", "sub_queries": {first: {"expert": expert}}}
    updates = await _updates(client, thread_id, "complm_review", command={"resume": edit})
    assert {"execute", "aggregate"} <= {node for update in updates for node in update}
    values = (await client.threads.get_state(thread_id))["values"]
    assert values["messages"][-1]["type"] == "ai" and values["answer"].strip()
