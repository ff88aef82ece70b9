"""Source loaders and MultiExpertQA-style dataset builders, on the shared public data."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from langchain_complm.evaluation.multiexpertqa import (
    EXPERT_DOMAINS,
    Item,
    build_dataset,
    load_items,
    save_items,
)
from langchain_complm.evaluation.routing_data import build_routing_data, domain_expert_map
from langchain_complm.evaluation.sources import (
    MMLU_DOMAIN_SUBJECTS,
    load_gsm8k,
    load_medical,
    load_mmlu,
    load_multihop,
    resolve_data_dir,
)
from langchain_complm.route import LabelledQuery


def _data_dir() -> Path | None:
    try:
        path = resolve_data_dir()
    except FileNotFoundError:
        return None
    return path if path.is_dir() else None


pytestmark = pytest.mark.skipif(
    _data_dir() is None, reason="public benchmark data (../shared/data) is not available"
)

N_TEST = 120


@pytest.fixture(scope="module")
def all_test() -> list[Item]:
    return build_dataset("multiexpertqa-all", "test", N_TEST, seed=0)


@pytest.fixture(scope="module")
def p_test() -> list[Item]:
    return build_dataset("multiexpertqa-p", "test", N_TEST, seed=0)


# --- sources --------------------------------------------------------------------------------


def test_gsm8k_answer_is_the_number_after_hashes_without_commas() -> None:
    records = load_gsm8k("test")
    assert len(records) == 1319
    assert records[0].answer == "18"
    assert records[0].domain == "math"
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", r.answer) for r in records)
    assert any("," in r.question for r in records)  # and yet no answer keeps a comma


@pytest.mark.parametrize(
    ("name", "rows", "n_options"),
    [("medqa", 1273, 4), ("medmcqa", 2816, 4), ("pubmedqa", 500, 3), ("mmlu", 1089, 4)],
)
def test_medical_sources_are_consistent_multiple_choice(name, rows, n_options) -> None:
    records = load_medical(name)  # type: ignore[arg-type]
    assert len(records) == rows
    assert len({r.id for r in records}) == rows
    for r in records:
        assert r.domain == "medicine"
        assert r.options is not None and len(r.options) == n_options
        assert r.options[r.answer_letter or ""] == r.answer


def test_mmlu_subjects_map_to_domains_and_letters() -> None:
    for domain, subjects in MMLU_DOMAIN_SUBJECTS.items():
        for subject in subjects:
            records = load_mmlu(subject)
            assert records and all(r.domain == domain for r in records)
    first = load_mmlu("jurisprudence")[0]
    assert first.answer_letter == "D"
    assert first.answer == "It illuminates the concept of a rule."
    assert load_mmlu("anatomy", "dev")[0].domain is None  # not a benchmark domain


def test_multihop_sources_keep_answers_and_known_hops() -> None:
    bamboogle = load_multihop("bamboogle")
    assert len(bamboogle) == 125
    assert bamboogle[0].answer == "james madison"
    assert {r.hops for r in bamboogle} == {2}
    assert {r.hops for r in load_multihop("hotpotqa")} == {2}
    # The local MuSiQue copy has no ids, so the hop count (2 to 4) is unknown.
    assert {r.hops for r in load_multihop("musique")} == {None}


def test_loaders_honour_the_env_var(monkeypatch, tmp_path) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(
        '{"question": "What is 1,000 + 234?", "answer": "1000 + 234 = 1234\\n#### 1,234"}\n'
    )
    monkeypatch.setenv("COMPLM_DATA_DIR", str(tmp_path))
    (record,) = load_gsm8k("test")
    assert record.answer == "1234"


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is not None, reason="would download from the Hub"
)
def test_hub_names_need_the_datasets_package() -> None:
    with pytest.raises(ImportError, match="datasets"):
        load_gsm8k("test", data_dir="openai/gsm8k")


# --- datasets -------------------------------------------------------------------------------


def test_same_seed_same_items_and_smaller_n_is_a_prefix(all_test) -> None:
    again = build_dataset("multiexpertqa-all", "test", N_TEST, seed=0)
    assert again == all_test
    assert build_dataset("multiexpertqa-all", "test", 10, seed=0) == all_test[:10]
    other = build_dataset("multiexpertqa-all", "test", N_TEST, seed=1)
    assert [i.question for i in other] != [i.question for i in all_test]


def test_source_questions_never_cross_splits(all_test, p_test) -> None:
    splits = {
        "train": build_dataset("multiexpertqa-all", "train", 300)
        + build_dataset("multiexpertqa-p", "train", 300),
        "dev": build_dataset("multiexpertqa-all", "dev", 40)
        + build_dataset("multiexpertqa-p", "dev", 40),
        "test": all_test + p_test,
    }
    used = {
        split: {part.source_id for item in items for part in item.parts}
        for split, items in splits.items()
    }
    texts = {
        split: {part.question for item in items for part in item.parts if "{" not in part.question}
        for split, items in splits.items()
    }
    for a, b in [("train", "dev"), ("train", "test"), ("dev", "test")]:
        assert not used[a] & used[b]
        assert not texts[a] & texts[b]
    # Within a split, no source question is used twice either.
    for items in (all_test, p_test):
        ids = [p.source_id for item in items for p in item.parts]
        assert len(ids) == len(set(ids))


def test_parallel_items_have_two_or_three_parts_from_distinct_domains(p_test) -> None:
    assert {item.kind for item in p_test} == {"parallel"}
    assert {len(item.parts) for item in p_test} == {2, 3}
    for item in p_test:
        assert len(set(item.domains)) == len(item.parts)
        assert set(item.domains) <= set(EXPERT_DOMAINS)
        assert item.hops == 1
        for part in item.parts:
            assert part.prompt in item.question  # options are inline
            if part.options:
                assert part.options[part.answer_letter or ""] == part.answer
        plan = item.gold_plan
        assert plan is not None
        assert [sq.id for sq in plan.sub_queries] == [p.id for p in item.parts]
        assert all(not sq.depends_on for sq in plan.sub_queries)
        assert plan.validate_dag() is plan


def test_questions_use_varied_connectives(p_test) -> None:
    openings = {item.question.split("\n", 1)[0] for item in p_test}
    assert len(openings) >= 6  # five templates, two part counts


def test_all_mixes_parallel_chain_and_multihop_items(all_test) -> None:
    kinds = {item.kind for item in all_test}
    assert kinds == {"parallel", "chain", "multihop"}
    for item in all_test:
        if item.gold_plan is not None:
            item.gold_plan.validate_dag()


_FOLLOW_UP = {
    r"multiply that result by (\d+) and subtract (\d+)": lambda x, a, b: x * a - b,
    r"add (\d+) to that result and multiply the sum by (\d+)": lambda x, b, a: (x + b) * a,
    r"subtract (\d+) from that result and multiply the difference by (\d+)": (
        lambda x, b, a: (x - b) * a
    ),
    r"multiply that result by (\d+) and add (\d+)": lambda x, a, b: x * a + b,
}


def test_chain_items_have_edges_and_exact_follow_up_answers(all_test) -> None:
    chains = [item for item in all_test if item.kind == "chain"]
    assert chains
    for item in chains:
        plan = item.gold_plan
        assert plan is not None and item.hops == 2
        (follow_up,) = [p for p in item.parts if p.depends_on]
        (problem_id,) = follow_up.depends_on
        problem = next(p for p in item.parts if p.id == problem_id)
        assert problem.source == "gsm8k" and follow_up.domain == "math"
        assert plan.by_id[follow_up.id].depends_on == (problem_id,)
        assert f"{{{problem_id}}}" in follow_up.question
        assert plan.levels()[1] == [follow_up.id]
        rendered = plan.by_id[follow_up.id].render({problem_id: problem.answer})
        assert problem.answer in rendered
        (computed,) = [
            fn(int(problem.answer), *map(int, m.groups()))
            for pattern, fn in _FOLLOW_UP.items()
            if (m := re.search(pattern, follow_up.question))
        ]
        assert follow_up.answer == str(computed)
        # The final answer is the follow-up's, not the intermediate GSM8K result.
        assert follow_up in item.final_parts and problem not in item.final_parts
        if len(item.parts) == 3:
            other = next(p for p in item.parts if p not in (problem, follow_up))
            assert other.domain != "math" and not other.depends_on


def test_multihop_items_keep_gold_answer_without_inventing_a_plan(all_test) -> None:
    multihop = [item for item in all_test if item.kind == "multihop"]
    assert multihop
    for item in multihop:
        assert item.gold_plan is None
        (part,) = item.parts
        assert part.question == item.question and part.answer == item.answer
        assert part.source in {"bamboogle", "hotpotqa", "musique"}
        assert item.hops == (None if part.source == "musique" else 2)


def test_too_many_items_for_a_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="run out of"):
        build_dataset("multiexpertqa-p", "dev", 1000)


def test_jsonl_round_trip(tmp_path, all_test) -> None:
    path = tmp_path / "items.jsonl"
    save_items(all_test, path)
    assert load_items(path) == all_test
    assert len(path.read_text().splitlines()) == len(all_test)


# --- labelled routing data ------------------------------------------------------------------

DEFAULT_ROUTES = domain_expert_map(
    ["math", "medicine", "science", "law", "computer_science", "history", "general"]
)


def test_routing_data_labels_every_domain_by_its_source() -> None:
    items = build_routing_data("train", DEFAULT_ROUTES, per_domain=12)
    by_label: dict[str, list[LabelledQuery]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    assert {k: len(v) for k, v in by_label.items()} == dict.fromkeys(DEFAULT_ROUTES.values(), 12)
    assert {i.source for i in by_label["math"]} == {"gsm8k"}
    assert {i.source for i in by_label["medicine"]} == {"medqa", "medmcqa", "pubmedqa"}
    assert {i.source for i in by_label["general"]} == {"bamboogle", "hotpotqa", "musique"}
    # Physics questions label the science expert; MMLU questions keep their options.
    science = by_label["science"][0]
    assert science.source == "mmlu" and "\nA) " in science.text
    assert build_routing_data("train", DEFAULT_ROUTES, per_domain=12) == items


def test_routing_data_splits_are_those_of_the_benchmark() -> None:
    train = {i.source_id for i in build_routing_data("train", DEFAULT_ROUTES)}
    test = build_routing_data("test", DEFAULT_ROUTES)
    assert not train & {i.source_id for i in test}
    # Every part of a test benchmark item is a labelled test query, with its gold route.
    labelled = {(i.source_id, i.text): i.label for i in test}
    for item in build_dataset("multiexpertqa-p", "test", 30, seed=0):
        for part in item.parts:
            assert labelled[(part.source_id, part.prompt)] == DEFAULT_ROUTES[part.domain]


def test_routing_data_keeps_only_the_mapped_domains() -> None:
    items = build_routing_data("dev", {"law": "legal"}, per_domain=5)
    assert {i.label for i in items} == {"legal"} and len(items) == 5
    with pytest.raises(ValueError, match="routes map no benchmark domain"):
        build_routing_data("dev", {"cooking": "chef"})
