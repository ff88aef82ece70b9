"""Served models in config files, against a scripted OpenAI-compatible server on 127.0.0.1:
requests, adapters, API keys, concurrency caps, and the named errors and exit codes."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from fakes import KeywordEmbeddings, plan_json
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import ModelConnectionError, ModelTimeoutError
from scripted_openai import Behaviour, ScriptedOpenAIServer

from langchain_complm import cli
from langchain_complm.config import (
    ConfigError,
    RemoteModelSpec,
    build_comp_llm,
    connect_chat_model,
    load_config,
)
from langchain_complm.decompose.generator import PlanOutput, SubQueryGenerator
from langchain_complm.errors import (
    ModelNotServedError,
    ServerHTTPError,
    ServerTimeoutError,
    ServerUnreachableError,
)
from langchain_complm.models import ChatRemote

pytest.importorskip("langchain_openai")

PLAN = plan_json(("q1", "What is the sum of 2 and 3?", []), ("q2", "Which drug treats flu?", []))
QUESTION = "What is the sum of 2 and 3, and which drug treats flu?"
SECRET = "sk-test-5ecret-value"


@pytest.fixture
def server() -> Any:
    script = {name: Behaviour() for name in ("echo", "math")}
    script |= {"slow": Behaviour(delay=2.0), "broken": Behaviour(status=500)}
    with ScriptedOpenAIServer(script=script, structured_reply=PLAN) as running:
        yield running


@pytest.fixture(autouse=True)
def keyword_router(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI routes with keyword embeddings (no MiniLM to load)."""
    build = functools.partial(build_comp_llm, embeddings=KeywordEmbeddings())
    monkeypatch.setattr(cli.ask, "build_comp_llm", build)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def write_config(tmp_path: Path, url: str, medicine: str = "", aggregator: str = "engine") -> Path:
    """Experts math (the `math` adapter) and medicine (``medicine``, default the base
    model) on the server at ``url``; the generator and aggregator are served too."""
    medicine = medicine or f"{{base_url: {url}, model: echo}}"
    text = f"""\
models:
  engine: {{base_url: {url}, model: echo}}
  math-lora: {{base_url: {url}, model: echo, adapter: math}}
  medicine: {medicine}
generator: engine
aggregator: {aggregator}
experts:
  - {{name: math, description: "sum add multiply number math", model: math-lora}}
  - {{name: medicine, description: "drug disease patient treat medicine", model: medicine}}
"""
    path = tmp_path / "served.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def ask(capsys: pytest.CaptureFixture[str], config: Path, *flags: str) -> tuple[int, Any, str]:
    code = cli.main(["ask", "--config", str(config), "--json", *flags, QUESTION])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


# --- a config file alone switches every role to the server -----------------------------------


def test_ask_runs_every_role_on_the_server(
    server: ScriptedOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output, err = ask(capsys, write_config(tmp_path, server.base_url))
    assert code == 0, err
    results = output["results"]
    assert results["q1"]["answer"] == "math says: What is the sum of 2 and 3?"
    assert results["q2"]["answer"] == "echo says: Which drug treats flu?"
    assert output["answer"].startswith("echo says:")  # the aggregator's reply
    by_model = [r.model for r in server.requests]
    assert sorted(by_model) == ["echo", "echo", "echo", "math"]  # plan, q2, aggregate; q1
    # The generator asked for the plan's JSON schema (the engine's guided decoding).
    schema = server.requests[0].body["response_format"]
    assert schema["type"] == "json_schema" and "sub_queries" in json.dumps(schema)
    assert "Loading served model 'math-lora' (math at http" in err


def test_max_new_tokens_and_generation_settings_reach_the_request(
    server: ScriptedOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    medicine = f"{{base_url: {server.base_url}, model: echo, temperature: 0, stop: [END]}}"
    config = write_config(tmp_path, server.base_url, medicine=medicine)
    code, _, err = ask(capsys, config, "--max-new-tokens", "7")
    assert code == 0, err
    assert all(r.body["max_completion_tokens"] == 7 for r in server.requests)
    (medicine_call,) = [
        r.body
        for r in server.requests
        if r.body["messages"][-1]["content"] == "Which drug treats flu?"
    ]
    assert medicine_call["temperature"] == 0 and medicine_call["stop"] == ["END"]
    assert all("temperature" not in r.body for r in server.requests if r.body != medicine_call)


def test_a_provider_model_goes_through_init_chat_model(
    server: ScriptedOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMPLM_TEST_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)  # the provider's own setting
    medicine = "{model: 'openai:echo', api_key_env: COMPLM_TEST_KEY}"
    code, output, err = ask(capsys, write_config(tmp_path, server.base_url, medicine=medicine))
    assert code == 0, err
    assert output["results"]["q2"]["answer"] == "echo says: Which drug treats flu?"
    model = connect_chat_model("medicine", load_config(tmp_path / "served.yaml").models["medicine"])
    assert isinstance(model, ChatRemote) and model.endpoint == "openai:echo"


# --- API keys -------------------------------------------------------------------------------


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.seen.append(repr(serialized) + repr(kwargs))

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.seen.append(repr(response) + repr(kwargs))


def test_the_api_key_is_sent_but_never_shown(
    server: ScriptedOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMPLM_TEST_KEY", SECRET)
    medicine = f"{{base_url: {server.base_url}, model: echo, api_key_env: COMPLM_TEST_KEY}}"
    config = write_config(tmp_path, server.base_url, medicine=medicine)
    code, output, err = ask(capsys, config, "--show-plan")
    assert code == 0
    assert f"Bearer {SECRET}" in [r.authorization for r in server.requests]
    spec = load_config(config).models["medicine"]
    model = connect_chat_model("medicine", spec)
    recorder = _Recorder()
    model.invoke("Which drug treats flu?", {"callbacks": [recorder]})
    model.with_structured_output(PlanOutput).invoke("plan", {"callbacks": [recorder]})
    shown = [json.dumps(output), err, repr(model), str(model), repr(spec), *recorder.seen]
    assert recorder.seen and not [text for text in shown if SECRET in text]


def test_an_endpoint_without_a_key_never_gets_the_openai_key(
    server: ScriptedOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code, _, _ = ask(capsys, write_config(tmp_path, server.base_url))
    assert code == 0
    assert {r.authorization for r in server.requests} == {"Bearer EMPTY"}


def test_an_unset_key_variable_is_a_config_error(
    server: ScriptedOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COMPLM_UNSET_KEY", raising=False)
    medicine = f"{{base_url: {server.base_url}, model: echo, api_key_env: COMPLM_UNSET_KEY}}"
    code, _, err = ask(capsys, write_config(tmp_path, server.base_url, medicine=medicine))
    assert code == cli.EXIT_CONFIG
    assert "api_key_env COMPLM_UNSET_KEY is not set" in err and not server.requests


# --- failures: named, with their exit code, and the other sub-answers kept -------------------


@pytest.mark.parametrize(
    ("medicine", "error", "code"),
    [
        ("{base_url: CLOSED, model: echo, max_retries: 0}", ServerUnreachableError, 5),
        ("{base_url: URL, model: nope}", ModelNotServedError, 6),
        ("{base_url: URL, model: broken, max_retries: 0}", ServerHTTPError, 7),
        ("{base_url: URL, model: slow, timeout: 0.2, max_retries: 0}", ServerTimeoutError, 8),
    ],
    ids=["unreachable", "not-served", "http-500", "timeout"],
)
def test_a_failing_expert_keeps_the_other_answers_and_exits_with_its_code(
    server: ScriptedOpenAIServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    medicine: str,
    error: type[Exception],
    code: int,
) -> None:
    medicine = medicine.replace("CLOSED", closed_port_url()).replace("URL", server.base_url)
    status, output, err = ask(capsys, write_config(tmp_path, server.base_url, medicine=medicine))
    assert status == code == cli.SERVED_MODEL_EXIT_CODES[error]
    q1, q2 = output["results"]["q1"], output["results"]["q2"]
    assert q1["status"] == "ok" and q1["answer"] == "math says: What is the sum of 2 and 3?"
    assert q2["status"] == "failed" and q2["attempts"][0]["error_type"] == error.__name__
    assert "model 'medicine'" in q2["error"]
    assert f"sub-query q2 failed: medicine: {error.__name__}: model 'medicine'" in err
    assert output["answer"]  # the aggregator still answered, told q2 has no answer


def test_a_failing_aggregator_stops_the_run_but_prints_the_sub_answers(
    server: ScriptedOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"{{base_url: {closed_port_url()}, model: echo, max_retries: 0}}"
    config = write_config(tmp_path, server.base_url, medicine=down, aggregator="medicine")
    code, output, err = ask(capsys, config)
    assert code == cli.EXIT_UNREACHABLE
    assert output["error"]["type"] == "ServerUnreachableError"
    assert output["error"]["model"] == "medicine"
    assert output["results"]["q1"]["answer"] == "math says: What is the sum of 2 and 3?"
    assert "complm: error: ServerUnreachableError: model 'medicine'" in err

    code = cli.main(["ask", "--config", str(config), QUESTION])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_UNREACHABLE
    assert out.startswith("Sub-answers computed before the failure:\n  q1 [math")
    assert "is it running, and is base_url right?" in err and "Traceback" not in err


@pytest.mark.parametrize("call", ["invoke", "ainvoke", "stream", "astream", "structured"])
async def test_every_call_path_names_the_error(call: str) -> None:
    model = ChatRemote.from_model("echo", name="x", base_url=closed_port_url(), max_retries=0)
    runnable: Any = model.with_structured_output(PlanOutput) if call == "structured" else model
    with pytest.raises(ServerUnreachableError, match=r"model 'x' \(echo at http") as caught:
        if call in ("invoke", "structured"):
            runnable.invoke("hi")
        elif call == "ainvoke":
            await runnable.ainvoke("hi")
        elif call == "stream":
            list(runnable.stream("hi"))
        else:
            [chunk async for chunk in runnable.astream("hi")]
    # langchain-core's provider-independent classes still catch it.
    assert isinstance(caught.value, ModelConnectionError)


def test_a_timeout_is_also_langchains_timeout_error(server: ScriptedOpenAIServer) -> None:
    model = ChatRemote.from_model(
        "slow", name="x", base_url=server.base_url, timeout=0.2, max_retries=0
    )
    with pytest.raises(ServerTimeoutError, match=r"no answer within 0\.2 s") as caught:
        model.invoke("hi")
    assert isinstance(caught.value, ModelTimeoutError) and caught.value.is_retryable


def test_a_wrong_base_url_path_is_an_http_error_not_a_missing_model(
    server: ScriptedOpenAIServer,
) -> None:
    model = ChatRemote.from_model("echo", base_url=server.base_url.removesuffix("/v1"))
    with pytest.raises(ServerHTTPError, match=r"HTTP 404.*check base_url") as caught:
        model.invoke("hi")
    assert caught.value.status_code == 404


# --- concurrency caps -----------------------------------------------------------------------


@pytest.mark.parametrize("cap", [2, None])
async def test_max_concurrency_caps_requests_in_flight(
    server: ScriptedOpenAIServer, cap: int | None
) -> None:
    server.script["echo"].delay = 0.2
    model = ChatRemote.from_model("echo", base_url=server.base_url, max_concurrency=cap)
    replies = await asyncio.gather(*(model.ainvoke(f"question {i}") for i in range(6)))
    assert [r.text for r in replies] == [f"echo says: question {i}" for i in range(6)]
    assert server.peak_in_flight == (cap or 6)


def test_max_concurrency_caps_threads_and_structured_output(
    server: ScriptedOpenAIServer,
) -> None:
    server.script["echo"].delay = 0.2
    model = ChatRemote.from_model("echo", base_url=server.base_url, max_concurrency=2)
    structured = model.with_structured_output(PlanOutput)
    plans = structured.batch(["plan"] * 3, {"max_concurrency": 6})
    model.batch(["hi"] * 3, {"max_concurrency": 6})
    assert all(isinstance(p, PlanOutput) and len(p.sub_queries) == 2 for p in plans)
    assert server.peak_in_flight == 2


def test_the_generator_decomposes_through_structured_output(
    server: ScriptedOpenAIServer,
) -> None:
    generator = SubQueryGenerator(llm=ChatRemote.from_model("echo", base_url=server.base_url))
    plan = generator.invoke(QUESTION)
    assert [sq.question for sq in plan.sub_queries] == [
        "What is the sum of 2 and 3?",
        "Which drug treats flu?",
    ]
    assert plan.fallback_reason is None


# --- config validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{model_id: 'http://host:8000/v1'}", "is a URL; .*{base_url: URL, model: SERVED_NAME}"),
        ("{model: echo, adapter: math}", "adapter needs base_url"),
        ("{base_url: 'host:8000/v1', model: echo}", "base_url must start with http://"),
        ("{base_url: 'http://h/v1', model: echo, api_key: sk-1}", "keys do not go in config"),
        ("{model: x, options: {api_key: sk-1}}", "keys do not go in config"),
        ("{model: x, options: {base_url: 'http://h'}}", "options: base_url set by the model's"),
        ("{base_url: 'http://h/v1', model: echo, timeout: -1}", r"^[^:]*: models\.m\.timeout:"),
        ("{base_url: 'http://h/v1', model: echo, max_batch_size: 4}", r"models\.m\.max_batch"),
    ],
)
def test_bad_served_entries_are_named(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"models:\n  m: {entry}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        ("mystery-model-7", cli.EXIT_CONFIG, "Unable to infer model provider"),
        ("anthropic:claude-x", cli.EXIT_MODEL, "langchain-anthropic|langchain_anthropic"),
    ],
)
def test_unusable_providers_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, code: int, message: str
) -> None:
    if model.startswith("anthropic:") and importlib.util.find_spec("langchain_anthropic"):
        pytest.skip("langchain-anthropic is installed here: its absence cannot be tested")
    config = write_config(tmp_path, "http://127.0.0.1:1/v1", medicine=f"{{model: '{model}'}}")
    status, _, err = ask(capsys, config)
    assert status == code
    assert "model 'medicine'" in err
    assert re.search(message, err)


def test_a_served_spec_is_never_a_local_path(tmp_path: Path) -> None:
    spec = RemoteModelSpec(model="echo", base_url="http://127.0.0.1:1/v1")
    assert not spec.is_embedded
    path = write_config(tmp_path, "http://127.0.0.1:1/v1")
    assert load_config(path).missing_model_paths() == []
