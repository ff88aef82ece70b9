"""LoRA experts on one base: a LoraEngine batches sub-queries for different adapters.

A tiny random Llama with random LoRA adapters (both matrices random, so every adapter changes
the answers). Greedy float32 decoding on the CPU is deterministic, and a row of a mixed batch
gets its own adapter's update only, so a mixed batch must give exactly the answers of each
adapter alone (a fresh base with only that adapter loaded, one prompt at a time).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")

from fakes import PROMPTS, routed

from langchain_complm import Expert
from langchain_complm.batching import BatchCohort, batch_cohort
from langchain_complm.config import CompLLMConfig, NamedModels, build_experts, load_config
from langchain_complm.errors import ConfigError, ModelNotFoundError
from langchain_complm.execute import QueryExecutor
from langchain_complm.models import ChatLocalHuggingFace, LoraEngine
from langchain_complm.models.pool import model_bytes
from langchain_complm.models.testing import random_lora_adapters, smollm2_tokenizer, tiny_llama

ADAPTERS = ("math", "medicine", "law")
MAX_NEW = 10


@pytest.fixture(scope="module")
def adapter_dirs(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return random_lora_adapters(tiny_llama(tokenizer), tmp_path_factory.mktemp("lora"), ADAPTERS)


@pytest.fixture
def base(tokenizer: Any) -> ChatLocalHuggingFace:
    return ChatLocalHuggingFace.from_model(
        tiny_llama(tokenizer), tokenizer, model_id="tiny-llama", max_new_tokens=MAX_NEW
    )


@pytest.fixture
def engine(base: ChatLocalHuggingFace, adapter_dirs: dict[str, Path]) -> LoraEngine:
    engine = LoraEngine.from_chat_model(base)
    for name, folder in adapter_dirs.items():
        engine.load_adapter(name, folder)
    return engine


def alone(tokenizer: Any, adapter: Path | None, prompts: list[str]) -> list[str]:
    """Each prompt on its own, on a fresh base with only ``adapter`` loaded (None: none)."""
    from peft import PeftModel

    model: Any = tiny_llama(tokenizer)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    llm = ChatLocalHuggingFace.from_model(
        model, tokenizer, max_new_tokens=MAX_NEW, max_batch_size=1
    )
    return [llm.invoke(p).content for p in prompts]


def concurrently(calls: list[tuple[ChatLocalHuggingFace, str]]) -> list[Any]:
    """All calls at once, declared as one cohort: the engine waits for all of them."""
    cohort = BatchCohort(size=len(calls))
    results: list[Any] = [None] * len(calls)

    def call(i: int) -> None:
        llm, prompt = calls[i]
        with batch_cohort(cohort):
            results[i] = llm.invoke(prompt)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_mixed_batch_answers_equal_each_adapter_alone(
    engine: LoraEngine, tokenizer: Any, adapter_dirs: dict[str, Path]
) -> None:
    names: list[str | None] = [*ADAPTERS, None]
    models = {n: engine.chat_model(n, max_new_tokens=MAX_NEW) for n in names}
    rows = [(names[i % len(names)], p) for i, p in enumerate(PROMPTS)]
    expected = {
        n: dict(
            zip(
                (p for m, p in rows if m == n),
                alone(tokenizer, adapter_dirs[n] if n else None, [p for m, p in rows if m == n]),
                strict=True,
            )
        )
        for n in names
    }
    engine.reset_stats()

    replies = concurrently([(models[n], p) for n, p in rows])

    assert engine.stats.batch_sizes == [len(PROMPTS)]  # one generate for every adapter
    assert [r.content for r in replies] == [expected[n][p] for n, p in rows]
    # Every adapter really changes the answers (else equality would prove nothing).
    assert all(
        alone(tokenizer, adapter_dirs[n], [PROMPTS[3]]) != alone(tokenizer, None, [PROMPTS[3]])
        for n in ADAPTERS
    )
    for (name, _), reply in zip(rows, replies, strict=True):
        meta = reply.response_metadata
        assert meta["adapter"] == name
        assert meta["batch_size"] == len(PROMPTS)
        # In arrival order: one entry per row of the generate.
        assert sorted(meta["batch_adapters"], key=str) == sorted((n for n, _ in rows), key=str)


def test_adapters_of_other_ranks_and_layers_mix_exactly(
    base: ChatLocalHuggingFace, tokenizer: Any, tmp_path: Path
) -> None:
    dirs = random_lora_adapters(tiny_llama(tokenizer), tmp_path, ["narrow"], r=2)
    dirs |= random_lora_adapters(
        tiny_llama(tokenizer),
        tmp_path,
        ["wide"],
        seed=1,
        r=6,
        target_modules=("q_proj", "k_proj", "down_proj"),
    )
    engine = LoraEngine.from_chat_model(base)
    models = {n: engine.chat_model(n, folder, max_new_tokens=MAX_NEW) for n, folder in dirs.items()}
    rows = [
        ("narrow", PROMPTS[0]),
        ("wide", PROMPTS[1]),
        ("narrow", PROMPTS[2]),
        ("wide", PROMPTS[3]),
    ]

    replies = concurrently([(models[n], p) for n, p in rows])

    assert engine.stats.batch_sizes == [4]
    assert [r.content for r in replies] == [alone(tokenizer, dirs[n], [p])[0] for n, p in rows]
    # Padding: the base's zero row, and "narrow"'s rank 2 padded to 6 where both adapt.
    assert engine.memory().padding_bytes > engine.memory().adapter_bytes["narrow"]


def test_the_base_model_object_is_left_untouched_and_its_weights_shared(
    base: ChatLocalHuggingFace, engine: LoraEngine, tokenizer: Any
) -> None:
    import torch

    model = base.engine.model
    assert all(
        type(m).__module__.startswith("torch.")
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    )
    assert base.invoke(PROMPTS[1]).content == alone(tokenizer, None, [PROMPTS[1]])[0]
    shared = {p.data_ptr() for p in model.parameters()}
    served = {p.data_ptr() for n, p in engine.model.named_parameters() if "lora_" not in n}
    assert served == shared


def test_memory_report_counts_the_base_once_plus_the_adapters(
    base: ChatLocalHuggingFace, engine: LoraEngine, adapter_dirs: dict[str, Path]
) -> None:
    from safetensors import safe_open

    memory = engine.memory()
    assert memory.base_bytes == model_bytes(base.engine.model)
    for name, folder in adapter_dirs.items():
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            saved = sum(f.get_tensor(k).numel() * 4 for k in f.keys())  # noqa: SIM118 (safe_open is no mapping)
        assert memory.adapter_bytes[name] == saved > 0
    # PEFT's adapter parameters are views of the stacks, whose only extra is the base's row
    # of zeros (equal ranks: no rank padding) and the scaling factors.
    assert memory.total_bytes == model_bytes(engine.model) + memory.padding_bytes
    assert 0 <= memory.padding_bytes - memory.adapter_bytes["math"] < 1024
    assert memory.total_bytes < 1.1 * memory.base_bytes
    assert "base" in memory.describe() and "math" in memory.describe()


def test_one_engine_per_base_and_adapter_errors(
    base: ChatLocalHuggingFace, engine: LoraEngine, adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    assert LoraEngine.from_chat_model(base) is engine
    assert LoraEngine.from_chat_model(engine.chat_model("math")) is engine
    engine.load_adapter("math", adapter_dirs["math"])  # same source again: nothing to do
    with pytest.raises(ValueError, match="already loaded from"):
        engine.load_adapter("math", adapter_dirs["law"])
    for bad in ("", " ", "a.b"):
        with pytest.raises(ValueError, match="invalid adapter name"):
            engine.load_adapter(bad, adapter_dirs["math"])
    with pytest.raises(ValueError, match="unknown LoRA adapter 'physics'"):
        engine.chat_model("physics")
    with pytest.raises(ModelNotFoundError, match=r"no adapter_config\.json"):
        engine.load_adapter("physics", tmp_path / "missing")
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((adapter_dirs["math"] / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    with pytest.raises(ValueError, match="is DoRA"):
        engine.load_adapter("physics", dora)
    assert sorted(engine.adapters) == sorted(ADAPTERS)
    with pytest.raises(ValueError, match="serves no LoRA adapters"):
        base.model_copy(update={"adapter": "math"}).invoke("hi")
    with pytest.raises(TypeError, match="local transformers base model"):
        LoraEngine.from_chat_model(object())


def test_an_adapter_for_another_model_is_refused(engine: LoraEngine, tmp_path: Path) -> None:
    other = tiny_llama(smollm2_tokenizer(), hidden_size=32, intermediate_size=64)
    folders = random_lora_adapters(other, tmp_path, ["narrow"])
    with pytest.raises(ValueError, match="does not fit the base model"):
        engine.load_adapter("narrow", folders["narrow"])
    assert "narrow" not in engine.adapters


@pytest.mark.parametrize("mode", ["superstep", "eager"])
def test_a_level_over_different_adapters_is_one_batch(engine: LoraEngine, mode: str) -> None:
    experts = [Expert(name=n, llm=engine.chat_model(n, max_new_tokens=MAX_NEW)) for n in ADAPTERS]
    plan = routed(*((f"q{i}", PROMPTS[i], n, ()) for i, n in enumerate(ADAPTERS)))
    engine.reset_stats()

    result = QueryExecutor(experts=experts, mode=mode).invoke(plan)

    assert engine.stats.batch_sizes == [len(ADAPTERS)]
    metadata = [result.results[f"q{i}"].response_metadata for i in range(len(ADAPTERS))]
    assert [m["adapter"] for m in metadata] == list(ADAPTERS)


def test_cohorts_group_only_calls_that_can_share_a_generate(engine: LoraEngine) -> None:
    math, law = engine.chat_model("math"), engine.chat_model("law")
    assert math.batch_group == law.batch_group == engine.chat_model(None).batch_group
    assert math.batch_group != engine.chat_model("law", max_new_tokens=3).batch_group
    assert math.batch_group != math.model_copy(update={"max_batch_size": 2}).batch_group


# --- config files -------------------------------------------------------------------------------


def write_config(folder: Path, adapter_dirs: dict[str, Path], extra: str = "") -> Path:
    for name, source in adapter_dirs.items():
        target = folder / "adapters" / name
        target.mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            (target / file.name).write_bytes(file.read_bytes())
    path = folder / "lora.yaml"
    path.write_text(
        "models:\n"
        "  tiny: {model_id: tiny-llama, max_new_tokens: 10}\n"
        "  math: {base: tiny, adapter: ./adapters/math, max_new_tokens: 10}\n"
        "  medicine: {base: tiny, adapter: ./adapters/medicine, max_new_tokens: 10}\n"
        "generator: tiny\n"
        "experts:\n"
        "  - {name: math, model: math}\n"
        "  - {name: medicine, model: medicine}\n"
        "  - {name: general, model: tiny}\n" + extra,
        encoding="utf-8",
    )
    return path


def test_config_adapter_models_share_their_base_engine(
    tmp_path: Path, adapter_dirs: dict[str, Path], tokenizer: Any
) -> None:
    config = load_config(write_config(tmp_path, adapter_dirs))
    assert config.models["math"].adapter == str(tmp_path / "adapters" / "math")
    assert config.models["math"].base_model == "tiny"
    loaded: list[str] = []

    def factory(name: str, spec: Any) -> ChatLocalHuggingFace:
        loaded.append(name)
        return ChatLocalHuggingFace.from_model(tiny_llama(tokenizer), tokenizer)

    pool = NamedModels(config, factory)
    experts = {e.name: e.llm for e in build_experts(config, pool)}

    assert loaded == ["tiny"]  # the base once, for all three
    engines = {id(llm.engine) for llm in experts.values()}
    assert len(engines) == 1 and isinstance(experts["math"].engine, LoraEngine)
    assert experts["math"].adapter == "math" and experts["general"].adapter is None
    assert set(pool.lora_engines["tiny"].adapters) == {"math", "medicine"}
    assert experts["math"].max_new_tokens == 10
    replies = concurrently([(experts[n], PROMPTS[i]) for i, n in enumerate(experts)])
    assert [r.response_metadata["batch_size"] for r in replies] == [3, 3, 3]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"x": {"base": "default"}}, "base is only for LoRA adapter models"),
        ({"x": {"adapter": "./a", "model_id": "./m"}}, "set model_id on its base"),
        ({"x": {"adapter": "./a", "device": "cpu"}}, "set device on its base"),
        ({"x": {"adapter": "./a", "base": "nope"}}, "unknown base model 'nope'"),
        (
            {"x": {"adapter": "./a"}, "y": {"adapter": "./b", "base": "x"}},
            "base 'x' is itself an adapter model",
        ),
        ({"x.y": {"adapter": "./a"}}, "must not contain '.'"),
        (
            {
                "s": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
                "x": {"adapter": "./a", "base": "s"},
            },
            "base 's' is a served model",
        ),
    ],
)
def test_config_rejects_bad_adapter_models(models: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompLLMConfig.model_validate({"models": models})


def test_config_names_a_missing_adapter_and_a_base_that_cannot_take_one(
    tmp_path: Path, adapter_dirs: dict[str, Path]
) -> None:
    path = write_config(tmp_path, adapter_dirs)
    path.write_text(path.read_text().replace("./adapters/medicine", "./adapters/gone"))
    with pytest.raises(ModelNotFoundError, match="gone"):
        load_config(path)
    config = load_config(write_config(tmp_path, adapter_dirs))
    assert config.with_overrides(mode="eager").models["math"].adapter is not None

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    pool = NamedModels(config, lambda name, spec: FakeListChatModel(responses=["x"]))
    with pytest.raises(ConfigError, match="'tiny', the base of LoRA adapters"):
        pool.get("math")


def test_the_example_config_names_three_adapters_over_the_embedded_base() -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "lora-experts.yaml"
    config = load_config(path, check_paths=False)
    adapters = {n: s for n, s in config.models.items() if s.adapter is not None}
    assert sorted(adapters) == ["math", "medicine", "science"]
    assert all(
        s.base_model == "default" and Path(s.adapter).is_absolute() for s in adapters.values()
    )
    assert config.models["default"].is_embedded
    assert {e.model for e in config.experts} == {"math", "medicine", "science", "default"}
