"""The accuracy benchmark end to end on the embedded default (SmolLM2-135M + MiniLM), offline.

Two items per system with generation capped at 32 new tokens keep the module around a
minute on two CPU cores. It checks the harness runs real models and writes its report, not
the answers' quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_complm.benchmarks.runner import load_predictions, predictions_path
from langchain_complm.cli import main
from langchain_complm.evaluation import build_dataset
from langchain_complm.models.embedded import trained_generator_path
from langchain_complm.models.trained import METADATA_FILE

pytestmark = pytest.mark.slow


def test_complm_and_monolithic_on_smollm2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "accuracy", "--dataset", "multiexpertqa-p", "--n", "2"]
    argv += ["--system", "complm,monolithic", "--max-new-tokens", "32", "--out", str(tmp_path)]
    code = main([*argv, "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summaries = {row["system"]: row for row in json.loads(out)}
    assert set(summaries) == {"complm", "monolithic:SmolLM2-135M-Instruct"}
    items = build_dataset("multiexpertqa-p", "test", 2, seed=0)
    for name, row in summaries.items():
        assert row["n"] == 2 and row["errors"] == 0
        assert 0 <= row["accuracy"] <= 1
        predictions = load_predictions(predictions_path(tmp_path, name))
        assert list(predictions) == [item.id for item in items]
        assert all(p.answer.strip() for p in predictions.values())
    monolithic = summaries["monolithic:SmolLM2-135M-Instruct"]
    complm = summaries["complm"]
    # SmolLM2 (about 135M) alone; Comp-LLM adds the shipped Sub-query Generator (its own
    # copy of SmolLM2 with its two unmerged LoRA adapters) and MiniLM (about 23M).
    size = monolithic["total_parameters"]
    assert 100e6 < size < 200e6
    shipped = trained_generator_path()
    assert shipped is not None
    adapters = sum(
        json.loads((folder / METADATA_FILE).read_text())["trainable_parameters"]
        for folder in (shipped, shipped / "multihop")
    )
    assert complm["total_parameters"] - size == pytest.approx(size + adapters + 22.7e6, rel=0.02)
    first = load_predictions(predictions_path(tmp_path, "complm"))[items[0].id]
    assert first.plan is not None and first.plan.sub_queries
    assert first.part_answers is not None  # gold part -> answer of its matched sub-query
    assert complm["plan_f1"] is not None and complm["routing"] is not None
    assert (tmp_path / "results.md").is_file()
    assert (tmp_path / "accuracy_vs_parameters.png").is_file()

    # A rerun finds every item done and only rewrites the report.
    code = main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "| complm |" in out
    assert len(predictions_path(tmp_path, "complm").read_text().splitlines()) == 2
