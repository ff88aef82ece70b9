"""Training LoRA domain experts: data from the domains' training splits, the generator's trainer,
evaluation against the base on held-out questions, and ``complm train-expert``.

Fine-tuning runs on a tiny random Llama with SmolLM2's tokenizer (seconds on a CPU); the data
is the public benchmark data in ``../shared/data``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")

from fakes import needs_data, tiny_train_config

from langchain_complm.cli import main
from langchain_complm.models import LoraEngine
from langchain_complm.models.trained import METADATA_FILE, read_metadata
from langchain_complm.training.experts import (
    EXPERT_DOMAINS,
    evaluate_expert,
    expert_chat,
    expert_system_prompt,
    expert_target,
    heldout_records,
    load_expert_and_base,
    train_expert,
    training_records,
)
from langchain_complm.training.train import TrainConfig

pytestmark = needs_data


def _config(base: Path, out: Path, **kw: Any) -> TrainConfig:
    options = {"n_train": 4, "batch_size": 2, "micro_batch_size": 2, "lora_r": 4}
    return tiny_train_config(base, out, **(options | {"max_steps": 2, "max_seq_len": 384} | kw))


@pytest.mark.parametrize("expert", list(EXPERT_DOMAINS))
def test_training_questions_never_come_from_held_out_or_test_splits(expert: str) -> None:
    from langchain_complm.evaluation.multiexpertqa import split_sources

    train = training_records(expert, 10_000)
    held_out = heldout_records(expert, 10_000)
    test = split_sources(EXPERT_DOMAINS[expert], "test")
    assert train and held_out
    questions = {r.question for r in train}
    assert not questions & {r.question for r in (*held_out, *test)}
    if expert == "math":
        assert all(r.id.startswith("gsm8k/train:") for r in train)


def test_targets_and_chats_are_the_inference_format() -> None:
    problem = training_records("math", 1)[0]
    target = expert_target(problem)
    assert "<<" not in target and "####" not in target
    assert target.endswith(f"The answer is {problem.answer}.")
    choice = training_records("medicine", 1)[0]
    assert expert_target(choice) == f"The answer is {choice.answer_letter}) {choice.answer}."
    chat = expert_chat(expert_system_prompt("medicine"), choice, "x")
    assert [m["role"] for m in chat] == ["system", "user", "assistant"]
    assert chat[0]["content"] == expert_system_prompt("medicine")
    assert f"{choice.answer_letter}) {choice.answer}" in chat[1]["content"]  # options listed
    with pytest.raises(ValueError, match="unknown expert 'poetry'"):
        training_records("poetry", 1)


def test_train_expert_then_compare_with_the_base(tiny_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "expert-science"
    result = train_expert("science", _config(tiny_base, out))

    metadata = read_metadata(out)
    assert result.steps == 2 and (out / "adapter_model.safetensors").is_file()
    assert metadata["format"] == "complm-expert" and metadata["expert"] == "science"
    assert metadata["data"]["questions"] == 4 and metadata["data"]["sources"] == ["mmlu"]
    assert metadata["system_prompt"] == expert_system_prompt("science")

    models = load_expert_and_base(out, max_new_tokens=4)
    assert set(models) == {"base", "science"}
    assert LoraEngine.from_chat_model(models["base"]) is models["science"].engine
    records = heldout_records("science", 3)
    evaluation = evaluate_expert(models, "science", records)
    assert evaluation.n == 3 and set(evaluation.accuracy) == {"base", "science"}
    assert len(evaluation.rows) == 6
    assert all(0.0 <= a <= 1.0 for a in evaluation.accuracy.values())


def test_train_expert_resumes_and_refuses_another_run(tiny_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "expert-law"
    first = train_expert("law", _config(tiny_base, out, max_steps=4, save_every=2))
    # The checkpoint is at the last step: resuming restores the run with nothing left to do.
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    rerun = train_expert("law", _config(tiny_base, out, max_steps=4, save_every=2), resume=True)
    assert rerun.losses == first.losses  # nothing left to do: the same run, restored
    with pytest.raises(ValueError, match="cannot resume"):
        train_expert("law", _config(tiny_base, out, max_steps=6), resume=True)


def test_cli_train_expert_trains_evaluates_and_skips_a_finished_run(
    tiny_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "expert-medicine"
    train = [
        *("train-expert", "medicine", "--base", str(tiny_base), "--out", str(out)),
        *("--n-train", "4", "--batch-size", "2", "--max-steps", "1", "--lora-r", "4"),
        *("--device", "cpu", "--quiet"),
    ]
    assert main([*train, "--eval-n", "2", "--max-new-tokens", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["expert"] == "medicine" and printed["n"] == 2
    assert set(printed["accuracy"]) == {"base", "medicine"}
    report = json.loads((out / "expert_eval.json").read_text())
    assert len(report["rows"]) == 4
    assert (out / METADATA_FILE).is_file()

    assert main([*train, "--eval-n", "0"]) == 0  # finished with these settings: not retrained
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    assert main(["train-expert", "poetry", "--quiet"]) == 2
