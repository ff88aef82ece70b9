"""Training pairs for the Sub-query Generator: determinism, validity, mix, no leakage."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from fakes import has_benchmark_data, needs_data

from langchain_complm.decompose import parse_plan
from langchain_complm.evaluation.multiexpertqa import build_dataset
from langchain_complm.plan import Plan
from langchain_complm.training.data import (
    DEFAULT_MIX,
    SPLIT_SEED,
    build_training_pairs,
    chat_messages,
    iter_training_pairs,
    load_pairs,
    pair_statistics,
    plan_to_target,
    save_pairs,
    split_seed_of,
    target_to_plan,
)

TEMPLATES_ONLY = {"template_parallel": 1.0, "template_chain": 1.0, "single_template": 1.0}

N = 600


@pytest.fixture(scope="module")
def pairs() -> list:
    if not has_benchmark_data():
        pytest.skip("public benchmark data (../shared/data) is not available")
    return build_training_pairs(N, seed=0)


@needs_data
def test_deterministic_and_prefix_stable(pairs: list) -> None:
    again = build_training_pairs(N, seed=0)
    assert [p.model_dump() for p in again] == [p.model_dump() for p in pairs]
    assert build_training_pairs(50, seed=0) == pairs[:50]
    other = build_training_pairs(50, seed=1)
    assert [p.query for p in other] != [p.query for p in pairs[:50]]


def test_templates_need_no_data_and_are_deterministic() -> None:
    first = build_training_pairs(40, seed=5, mix=TEMPLATES_ONLY)
    assert first == build_training_pairs(40, seed=5, mix=TEMPLATES_ONLY)
    assert {p.kind for p in first} <= set(TEMPLATES_ONLY)
    assert not any(p.source_ids for p in first)


@needs_data
def test_every_target_is_a_valid_compact_plan(pairs: list) -> None:
    for pair in pairs:
        data = json.loads(pair.target)
        assert list(data) == ["sub_queries"]
        for i, sq in enumerate(data["sub_queries"], 1):
            assert list(sq) == ["id", "question", "depends_on"]
            assert sq["id"] == f"q{i}"
        plan = target_to_plan(pair.target, pair.query)  # validate_dag inside
        assert 1 <= len(plan.sub_queries) <= 5
        assert plan_to_target(plan) == pair.target
        assert ": " not in re.sub(r'"question":".*?(?<!\\)"', "", pair.target)
        # The generator's own parser reads the target back to the same plan.
        parsed = parse_plan(pair.target, pair.query).validate_dag()
        assert [(s.question, s.depends_on) for s in parsed.sub_queries] == [
            (s.question, s.depends_on) for s in plan.sub_queries
        ]


@needs_data
def test_mix_of_sizes_edges_and_singles(pairs: list) -> None:
    stats = pair_statistics(pairs)
    assert stats["pairs"] == N
    assert set(stats["by_kind"]) == set(DEFAULT_MIX)
    assert set(stats["by_sub_queries"]) == {"1", "2", "3", "4", "5"}
    assert stats["by_sub_queries"]["4"] >= 10
    assert 0.3 * N <= stats["with_dependencies"] <= 0.75 * N
    assert 0.15 * N <= stats["singles"] <= 0.5 * N
    assert stats["singles_containing_and"] >= 0.05 * N
    # Chains use placeholders; fan-ins have a sub-query with two parents.
    plans = [p.plan for p in pairs]
    assert any("{q1}" in sq.question for plan in plans for sq in plan.sub_queries)
    assert any(len(sq.depends_on) == 2 for plan in plans for sq in plan.sub_queries)
    assert any(len(plan.levels()) == 3 for plan in plans)


@needs_data
def test_non_split_singles(pairs: list) -> None:
    singles = [p for p in pairs if p.kind in {"single_source", "single_template"}]
    assert singles
    for pair in singles:
        plan = pair.plan
        assert len(plan.sub_queries) == 1
        # The user's casing, lead-in or sign-off stays in the query, not in the sub-query.
        assert _letters(plan.sub_queries[0].question) in _letters(pair.query)
        if pair.kind == "single_source":
            assert plan.sub_queries[0].question == pair.query
    sources = {s.split("/")[0] for p in singles for s in p.source_ids}
    assert len(sources) >= 3  # GSM8K, MMLU and medical questions, not one source only
    assert any("difference between" in p.query and " and " in p.query for p in singles)


@needs_data
def test_no_dev_or_test_leakage(pairs: list) -> None:
    train_ids = {s for p in pairs for s in p.source_ids}
    assert train_ids
    # Exact texts: MMLU passages are shared by several questions, so substrings may recur.
    train_questions = {sq.question for p in pairs for sq in p.plan.sub_queries}
    train_questions |= {q.split("\n")[0] for q in train_questions}
    for split, n in (("dev", 60), ("test", 200)):
        for name in ("multiexpertqa-all", "multiexpertqa-p"):
            items = build_dataset(name, split, n, seed=0)  # type: ignore[arg-type]
            for item in items:
                assert item.question not in {p.query for p in pairs}
                for part in item.parts:
                    assert part.source_id not in train_ids, (split, part.source_id)
                    if part.source != "synthetic":
                        assert part.prompt not in train_questions, (split, part.source_id)
                        assert part.question not in train_questions, (split, part.source_id)


@needs_data
def test_source_pairs_come_from_the_train_split(pairs: list) -> None:
    n = 1200  # as many train items as the split allows, like the pair builder
    while True:
        try:
            train = build_dataset("multiexpertqa-all", "train", n, seed=0)
            break
        except ValueError:
            n = int(n * 0.9)
    train_ids = {part.source_id for item in train for part in item.parts}
    used = {s for p in pairs for s in p.source_ids}
    assert used <= train_ids


def test_jsonl_round_trip(tmp_path: Path) -> None:
    pairs = build_training_pairs(12, seed=2, mix=TEMPLATES_ONLY)
    path = tmp_path / "sub" / "pairs.jsonl"
    save_pairs(pairs, path)
    assert load_pairs(path) == pairs
    assert len(path.read_text().splitlines()) == 12


def test_chat_format() -> None:
    pair = build_training_pairs(1, seed=0, mix=TEMPLATES_ONLY)[0]
    messages = chat_messages(pair.query, pair.target)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == pair.query
    assert messages[2]["content"] == pair.target
    assert len(messages[0]["content"]) < 200
    assert chat_messages(pair.query) == messages[:2]


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown pair kinds"):
        next(iter_training_pairs(0, mix={"nope": 1.0}))


@needs_data
def test_cli_dump_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_complm.cli import main

    path = tmp_path / "pairs.jsonl"
    assert main(["train-generator", "--dump-data", str(path), "--n-train", "20", "-q"]) == 0
    assert load_pairs(path) == build_training_pairs(20, seed=0)
    assert json.loads(capsys.readouterr().out)["pairs"] == 20


def test_cli_mix_reweighs_the_default_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_complm.cli import main

    path = tmp_path / "pairs.jsonl"
    only_parallel = [f"--mix={kind}=0" for kind in DEFAULT_MIX if kind != "template_parallel"]
    args = ["train-generator", "--dump-data", str(path), "--n-train", "5", *only_parallel]
    assert main(args) == 0
    assert {p.kind for p in load_pairs(path)} == {"template_parallel"}
    capsys.readouterr()


def test_a_runs_mix_shapes_its_pairs_and_its_identity() -> None:
    from langchain_complm.training.train import TrainConfig, _load_pairs, _run_key

    mix = {kind: 0.0 for kind in DEFAULT_MIX} | {"reference_lookalike": 1.0}
    config = TrainConfig(n_train=4, mix=mix)
    assert {p.kind for p in _load_pairs(config)} == {"reference_lookalike"}
    assert _run_key(config, 4, 1) != _run_key(TrainConfig(n_train=4), 4, 1)


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        ("nope=1", "unknown kind 'nope'"),
        ("bridge=lots", "must be a number"),
        ("bridge=-1", "0 or more"),
        ("bridge=nan", "0 or more"),
    ],
)
def test_cli_mix_names_a_bad_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mix: str, message: str
) -> None:
    from langchain_complm.cli import main

    assert main(["train-generator", "--out", str(tmp_path), "--mix", mix]) == 2
    assert message in capsys.readouterr().err


def test_cli_mix_with_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_complm.cli import main

    args = ["train-generator", "--out", str(tmp_path), "--data", "x.jsonl", "--mix", "bridge=1"]
    assert main(args) == 2
    assert "cannot be used with --data" in capsys.readouterr().err


def test_cli_eval_needs_a_model_or_a_curve(capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_complm.cli import main

    assert main(["eval-generator"]) == 2
    assert "--curve" in capsys.readouterr().err


def test_cli_train_refuses_a_stop_step_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_complm.cli import main

    assert main(["train-generator", "--out", str(tmp_path), "--stop-at-step", "0"]) == 2
    assert "--stop-at-step must be at least 1" in capsys.readouterr().err


def test_cli_train_refuses_to_continue_an_adapter_as_a_full_fine_tune(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_complm.cli import main

    args = ["train-generator", "--out", str(tmp_path), "--lora-r", "0", "--init-from", "x"]
    assert main(args) == 2
    assert "--init-from continues a LoRA adapter" in capsys.readouterr().err


def test_score_reply_and_curve_files(tmp_path: Path) -> None:
    from langchain_complm.evaluation.plans import PlanExample
    from langchain_complm.plan import Plan
    from langchain_complm.training.evaluate import score_reply, write_curve

    pair = build_training_pairs(1, seed=0, mix={"template_chain": 1.0})[0]
    example = PlanExample(query=pair.query, gold=pair.plan, kind="chain")
    perfect = score_reply(pair.target, example)
    assert perfect["json_valid"] == perfect["exact_match"] == 1.0
    assert perfect["sub_query_f1"] == perfect["edge_f1"] == 1.0
    garbage = score_reply("I cannot do that.", example)
    assert garbage["json_valid"] == garbage["exact_match"] == 0.0
    assert garbage["n_predicted"] == 1  # scored as the fallback plan
    single = PlanExample(query="What is 2+2?", gold=Plan.single("What is 2+2?"), kind="single")
    assert score_reply("no json", single)["sub_query_f1"] == 1.0
    spaced = pair.target.replace('","', '", "')
    assert score_reply(f"```json\n{spaced}\n```", example)["exact_match"] == 1.0

    pytest.importorskip("matplotlib")
    metrics = dict.fromkeys(("json_valid", "exact_match", "sub_query_f1", "edge_f1"), 0.5)
    points = [{"n_train": n, "steps": n // 8, "metrics": metrics} for n in (0, 8, 16)]
    write_curve(points, tmp_path / "c.md", tmp_path / "c.png", title="smoke")
    assert "| 16 | 2 | 0.50 |" in (tmp_path / "c.md").read_text()
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_rescore_replies_scores_kept_replies_and_names_a_missing_one() -> None:
    from langchain_complm.evaluation.plans import PlanExample
    from langchain_complm.training.evaluate import rescore_replies

    pair = build_training_pairs(1, seed=0, mix={"template_chain": 1.0})[0]
    good = PlanExample(query=pair.query, gold=pair.plan, kind="chain")
    bad = PlanExample(query="What is 2+2?", gold=pair.plan, kind="chain")
    report = rescore_replies({pair.query: pair.target, bad.query: "no json"}, [good, bad])
    assert report.n == 2 and report.metrics["json_valid"] == 0.5
    assert [row["reply"] for row in report.rows] == [pair.target, "no json"]
    with pytest.raises(ValueError, match=r"no kept reply for example 2 of 2 \('What is 2\+2\?'"):
        rescore_replies({pair.query: pair.target}, [good, bad])


@needs_data
def test_cli_eval_replies_rescores_a_report_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_complm.cli import main
    from langchain_complm.training.evaluate import eval_examples

    examples = eval_examples("dev", 4, 0)
    kept = {
        "rows": [
            {"query": e.query, "reply": plan_to_target(e.gold) if k else "{broken"}
            for k, e in enumerate(examples)
        ]
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(kept))
    out = tmp_path / "rescored.json"
    args = ["eval-generator", "--replies", str(path), "--n", "4", "-q"]
    assert main([*args, "--report", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["json_valid"] == 0.75
    assert json.loads(out.read_text())["metrics"]["exact_match"] == 0.75
    # Replies made for other examples, and files that are no report, are usage errors.
    assert main([*args[:-2], "5", "-q"]) == 2
    assert re.search(r"no kept reply for example \d of 5 ", capsys.readouterr().err)
    path.write_text("[]")
    assert main(args) == 2
    assert "not a report with kept replies" in capsys.readouterr().err


def _letters(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def test_reference_lookalikes_are_independent_parts() -> None:
    from langchain_complm.decompose.repair import repair_plan

    pairs = build_training_pairs(200, seed=4, mix={"reference_lookalike": 1.0})
    words = ("difference", "differ", "sum of", " it", "bigger", "larger")
    for pair in pairs:
        plan = pair.plan
        assert len(plan.sub_queries) >= 2
        assert not any(sq.depends_on for sq in plan.sub_queries), pair.query
        assert any(w in sq.question for sq in plan.sub_queries for w in words), pair.query
        # What looks like a reference is not one: plan repair must not add a dependency.
        assert repair_plan(plan) == plan, pair.query


NEW_KINDS = {"reference": 1.0, "multihop_chain": 1.0, "comparison": 1.0, "bridge": 1.0}


def test_what_real_questions_do_has_the_shape_of_its_kind() -> None:
    from langchain_complm.evaluation.plans import plan_shape_ok

    pairs = build_training_pairs(400, seed=2, mix=NEW_KINDS)
    assert {p.kind for p in pairs} == set(NEW_KINDS)
    extra_at: Counter[str] = Counter()
    hops: Counter[int] = Counter()
    for pair in pairs:
        plan = pair.plan
        if pair.kind == "reference":
            # A follow-up in words became a dependency with a placeholder.
            assert any(sq.depends_on and sq.placeholders for sq in plan.sub_queries)
            continue
        # Some pairs carry an independent question beside the multi-hop one (first or
        # last part); the rest of the plan keeps the shape of its kind.
        used = {d for sq in plan.sub_queries for d in sq.depends_on}
        extras = [sq for sq in plan.sub_queries if not sq.depends_on and sq.id not in used]
        assert len(extras) <= 1, pair.query
        if extras:
            extra_at["first" if extras[0].id == "q1" else "last"] += 1
            assert extras[0].id in ("q1", plan.sub_queries[-1].id), pair.query
            assert extras[0].question.lower().rstrip("?.") in pair.query.lower(), pair.query
        rest = Plan(
            query=plan.query, sub_queries=tuple(sq for sq in plan.sub_queries if sq not in extras)
        ).validate_dag()
        shape = "chain" if pair.kind == "multihop_chain" else pair.kind
        assert plan_shape_ok(rest, shape), pair.query
        if shape == "chain":
            hops[len(rest.sub_queries)] += 1
    assert extra_at["first"] > 0 and extra_at["last"] > 0
    assert set(hops) == {2, 3, 4}
    # Users' casing and punctuation vary; the sub-queries do not.
    assert any(p.query.islower() or p.query.isupper() for p in pairs)
    assert all(sq.question[:1].isupper() for p in pairs for sq in p.plan.sub_queries)


@needs_data
def test_multihop_comparisons_come_from_the_train_split_only() -> None:
    from langchain_complm.evaluation.multiexpertqa import split_sources
    from langchain_complm.evaluation.plans import plan_shape_ok

    pairs = build_training_pairs(60, seed=0, mix={"multihop_comparison": 1.0})
    train = {r.question for r in split_sources("general", "train")}
    test = {r.question for r in split_sources("general", "test")}
    for pair in pairs:
        assert pair.query in train and pair.query not in test
        assert plan_shape_ok(pair.plan, "comparison"), pair.query


@needs_data
def test_another_draw_seed_draws_from_the_same_train_split() -> None:
    from langchain_complm.evaluation.multiexpertqa import split_sources
    from langchain_complm.training.evaluate import eval_examples

    mix = {"multihop_comparison": 1.0, "single_source": 1.0}
    pairs = build_training_pairs(80, seed=1, mix=mix)
    assert pairs != build_training_pairs(80, seed=0, mix=mix)  # other draws...
    # ...from the split every evaluation set is disjoint from (seed 1's own train split
    # holds questions of seed 0's dev and test splits).
    train = {r.question for r in split_sources("general", "train")}
    assert {p.query for p in pairs if p.kind == "multihop_comparison"} <= train
    evaluated = {
        e.query for split in ("multihop", "multihop-dev") for e in eval_examples(split, 30)
    }
    evaluated |= {
        part.question
        for split in ("dev", "test")
        for item in build_dataset("multiexpertqa-all", split, 50, seed=0)
        for part in item.parts
    }
    assert not {p.query for p in pairs} & evaluated
    other_split = build_training_pairs(80, seed=1, split_seed=1, mix=mix)
    assert {p.query for p in other_split} != {p.query for p in pairs}


def test_a_trained_generators_split_seed_is_read_from_its_metadata() -> None:
    assert split_seed_of({"data": {"seed": 1, "split_seed": 0}, "seed": 1}) == 0
    # Runs made before the split had its own seed drew from their seed's split.
    assert split_seed_of({"data": {"seed": 1}, "seed": 1}) == 1
    assert split_seed_of({}) == SPLIT_SEED


def test_continuing_an_adapter_of_another_split_is_refused(tmp_path: Path) -> None:
    from langchain_complm.training.train import TrainConfig, train_generator

    start = tmp_path / "start"
    start.mkdir()
    (start / "complm_generator.json").write_text(json.dumps({"data": {"seed": 1}, "seed": 1}))
    config = TrainConfig(n_train=4, mix=TEMPLATES_ONLY, init_from=str(start), out=str(tmp_path))
    with pytest.raises(
        ValueError, match="trained on split seed 1, this run draws from split seed 0"
    ):
        train_generator(config)
