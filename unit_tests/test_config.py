"""Config files (YAML/TOML/JSON), their errors, the default experts and build_comp_llm."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fakes import KeywordEmbeddings, fake_llm, plan_json
from langchain_core.language_models import BaseChatModel

from langchain_complm import CompLLMOutput
from langchain_complm.config import (
    DEFAULT_MODEL,
    EMBEDDED_CHAT_MODEL,
    EMBEDDED_EMBEDDINGS,
    CompLLMConfig,
    ExpertSpec,
    ModelSpec,
    build_comp_llm,
    build_planner,
    build_router,
    default_config,
    default_experts_path,
    load_chat_model,
    load_config,
    load_default_experts,
)
from langchain_complm.errors import ConfigError, ModelNotFoundError
from langchain_complm.route import BudgetPolicy, EmbeddingRouter, TwoStepRouter

DEFAULT_EXPERTS = ["math", "medicine", "science", "law", "computer_science", "history", "general"]

YAML_CONFIG = """\
models:
  default: {max_new_tokens: 64}
  planner:
    model_id: HuggingFaceTB/SmolLM2-360M-Instruct
    device: cpu
    max_new_tokens: 300
  shared: org/expert-model
generator: planner
aggregator: default
embeddings: embedded
experts:
  - name: math
    description: Arithmetic, sums and equations.
    examples: ["What is the sum of 2 and 3?", "Multiply 4 by 5"]
    model: shared
    system_prompt: Show your work.
  - name: medicine
    description: Drugs, diseases and patients.
    model: shared
  - name: history
    description: Wars, kings and empires.
routing: {threshold: 0.1, fallback_expert: history}
execution:
  mode: sequential
  max_concurrency: 2
  failure: {max_retries: 1, fallback_expert: history, on_failure: continue}
"""

TOML_CONFIG = """\
generator = "planner"

[models.planner]
model_id = "HuggingFaceTB/SmolLM2-360M-Instruct"
max_new_tokens = 300

[models.shared]
model_id = "org/expert-model"

[[experts]]
name = "math"
description = "Arithmetic, sums and equations."
examples = ["What is the sum of 2 and 3?"]
model = "shared"

[[experts]]
name = "history"
description = "Wars, kings and empires."

[execution]
max_concurrency = 3
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- loading ----------------------------------------------------------------------------------


def test_load_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "complm.yaml", YAML_CONFIG))

    assert list(config.models) == ["default", "planner", "shared"]
    assert config.models["default"].is_embedded and config.models["default"].max_new_tokens == 64
    assert config.models["shared"] == ModelSpec(model_id="org/expert-model")
    assert config.models["planner"].device == "cpu"
    assert config.generator == "planner" and config.aggregator_model == "default"
    assert config.embeddings.model_id == EMBEDDED_EMBEDDINGS
    assert [e.name for e in config.experts] == ["math", "medicine", "history"]
    assert config.experts[0].system_prompt == "Show your work."
    assert config.experts[2].model == DEFAULT_MODEL
    assert config.routing.threshold == 0.1 and config.routing.fallback_expert == "history"
    assert config.execution.mode == "sequential" and config.execution.max_concurrency == 2
    assert config.execution.failure.max_retries == 1
    assert config.model_names_used() == ["planner", "default", "shared"]


def test_load_toml_and_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "complm.toml", TOML_CONFIG))
    assert config.generator == "planner" and config.aggregator_model == "planner"
    assert [e.model for e in config.experts] == ["shared", "default"]
    assert config.models["default"].model_id == EMBEDDED_CHAT_MODEL
    assert config.execution.max_concurrency == 3

    as_json = write(tmp_path, "complm.json", json.dumps(config.model_dump()))
    assert load_config(as_json) == config


def test_empty_file_is_the_default_setup(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "empty.yml", "")) == default_config()


def test_default_experts_file_loads_and_validates() -> None:
    path = default_experts_path()
    assert path.is_file() and path.parent.name == "data"
    experts = load_default_experts()
    assert [e.name for e in experts] == DEFAULT_EXPERTS
    for expert in experts:
        assert expert.description.strip()
        assert 6 <= len(expert.examples) <= 10
        assert expert.model == DEFAULT_MODEL
    # The file is itself a valid config (everything else defaulted).
    assert load_config(path).experts == list(experts)
    config = default_config()
    assert [e.name for e in config.experts] == DEFAULT_EXPERTS
    assert list(config.models) == [DEFAULT_MODEL] and config.models[DEFAULT_MODEL].is_embedded


def test_relative_local_model_path_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub, "c.yaml", "models:\n  tiny: ../models/tiny\n")
    config = load_config(path)
    assert config.models["tiny"].model_id == str((tmp_path / "models" / "tiny").resolve())


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("bad.yaml", "models: [\n  - a\nexperts: {", "invalid YAML"),
        ("bad.toml", "models = [\n", "invalid TOML"),
        ("bad.json", "{", "invalid JSON"),
        ("list.yaml", "- a\n- b\n", "top level must be a mapping"),
        ("c.ini", "[x]", "unsupported config format '.ini'"),
        (
            "unknown_model.yaml",
            "experts:\n  - {name: math, model: big}\n",
            "experts.0 (math): unknown model 'big' (models: default)",
        ),
        (
            "dup.yaml",
            "experts:\n  - {name: math}\n  - {name: law}\n  - {name: math}\n",
            "duplicate expert names: math",
        ),
        (
            "fallback.yaml",
            "experts: [{name: math}]\nrouting: {threshold: 0.3, fallback_expert: general}\n",
            "routing.fallback_expert: unknown expert 'general'",
        ),
        (
            "failure_fallback.yaml",
            "experts: [{name: math}]\nexecution: {failure: {fallback_expert: law}}\n",
            "execution.failure.fallback_expert: unknown expert 'law'",
        ),
        (
            "threshold.yaml",
            "routing: {threshold: 0.3}\n",
            "routing.threshold needs routing.fallback_expert",
        ),
        ("generator.yaml", "generator: nope\n", "generator: unknown model 'nope'"),
        ("typo.yaml", "models: {default: {max_new_token: 3}}\n", "max_new_token: Extra inputs"),
        ("top_typo.yaml", "expert: []\n", "expert: Extra inputs are not permitted"),
        ("mode.yaml", "execution: {mode: fast}\n", "execution.mode: Input should be"),
        ("policy.yaml", "execution: {failure: {retries: 2}}\n", "unknown failure policy keys"),
        ("stream.yaml", "execution: {stream_plan: true}\n", "set mode to eager"),
        ("no_experts.yaml", "experts: []\n", "at least one expert"),
        ("blank.yaml", "experts: [{name: ' '}]\n", "expert name must not be empty"),
        (
            "expert_threshold.yaml",
            "experts: [{name: math, threshold: 0.4}]\n",
            "experts (math).threshold needs routing.fallback_expert",
        ),
        (
            "category_expert.yaml",
            "experts: [{name: math}]\nrouting: {categories: [{name: m, experts: [maths]}]}\n",
            "routing.categories (m): unknown expert 'maths' (experts: math)",
        ),
        (
            "category_threshold.yaml",
            "experts: [{name: math}]\n"
            "routing: {categories: [{name: m, experts: [math], threshold: 0.2}]}\n",
            "routing.categories (m).threshold needs routing.fallback_expert",
        ),
        ("no_categories.yaml", "routing: {categories: []}\n", "at least one category"),
        ("strategy.yaml", "routing: {strategy: svm}\n", "routing.strategy: Input tag 'svm'"),
        ("knn.yaml", "routing: {strategy: {kind: knn, k: 0}}\n", "routing.strategy.knn.k"),
        ("policy_kind.yaml", "routing: {policy: random}\n", "routing.policy: Input tag"),
        (
            "negative_size.yaml",
            "experts: [{name: math, parameters: -3}]\n",
            "experts.0.parameters: Input should be greater than or equal to 0",
        ),
    ],
)
def test_config_errors_name_file_and_problem(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert isinstance(info.value, ValueError)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.yaml: config file not found"):
        load_config(tmp_path / "nothere.yaml")


def test_missing_local_model_path_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "models:\n  local: ./weights/tiny\n")
    with pytest.raises(ModelNotFoundError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "'local'" in message
    assert str(tmp_path / "weights" / "tiny") in message
    # Checking can be turned off, and build reports it before loading anything.
    config = load_config(path, check_paths=False)
    with pytest.raises(ModelNotFoundError, match="weights/tiny"):
        build_comp_llm(config, embeddings=KeywordEmbeddings())


def test_missing_embeddings_path(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "embeddings: /no/such/minilm\n")
    with pytest.raises(ModelNotFoundError, match=r"'embeddings'.*/no/such/minilm"):
        load_config(path)


def test_python_built_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'x'"):
        CompLLMConfig(experts=[ExpertSpec(name="a", model="x")])
    config = CompLLMConfig(experts=[ExpertSpec(name="a")])
    assert config.with_overrides(mode="sequential").execution.mode == "sequential"
    with pytest.raises(ConfigError, match=r"execution\.max_concurrency"):
        config.with_overrides(max_concurrency=0)


def test_loader_turns_missing_files_into_model_not_found(tmp_path: Path) -> None:
    spec = ModelSpec(model_id=str(tmp_path / "absent"))
    with pytest.raises(ModelNotFoundError, match=r"model 'x'.*absent"):
        load_chat_model("x", spec)


# --- building ---------------------------------------------------------------------------------

PLAN = plan_json(
    ("q1", "What is the sum of 2 and 3?", []),
    ("q2", "Which drug treats this disease?", []),
)


class Factory:
    """A model factory handing out fakes and recording what it was asked for."""

    def __init__(self, responses: dict[str, list[str]]) -> None:
        self.responses = responses
        self.calls: list[str] = []

    def __call__(self, name: str, spec: ModelSpec) -> BaseChatModel:
        self.calls.append(name)
        return fake_llm(*self.responses.get(name, [f"{name} ({spec.model_id}) says hi"]))


def test_build_from_config_with_injected_models(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "complm.yaml", YAML_CONFIG))
    # The aggregator's answer holds the experts' ("says hi"): the coverage check keeps it.
    factory = Factory({"planner": [PLAN], "default": ["Final: 5, and the shared expert says hi."]})
    progress: list[str] = []
    comp = build_comp_llm(
        config, model_factory=factory, embeddings=KeywordEmbeddings(), progress=progress.append
    )
    out = CompLLMOutput.model_validate(comp.invoke("What is 2+3, and which drug treats it?"))

    assert out.answer == "Final: 5, and the shared expert says hi."
    assert [sq.expert for sq in out.plan.sub_queries] == ["math", "medicine"]
    assert {r.answer for r in out.results.values()} == {"shared (org/expert-model) says hi"}
    # Each named model is built once, in generator, aggregator, expert order.
    assert factory.calls == ["planner", "default", "shared"]


def test_experts_sharing_a_model_share_one_instance(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "complm.yaml", YAML_CONFIG))
    built: dict[str, list[BaseChatModel]] = {}

    def factory(name: str, spec: ModelSpec) -> BaseChatModel:
        llm = fake_llm(PLAN)
        built.setdefault(name, []).append(llm)
        return llm

    captured: dict[str, Any] = {}

    def fake_create(experts: Any, **kwargs: Any) -> str:
        captured["experts"] = {e.name: e for e in experts}
        captured.update(kwargs)
        return "runnable"

    import langchain_complm.pipeline as comp_llm_module

    monkey = pytest.MonkeyPatch()
    monkey.setattr(comp_llm_module, "create_comp_llm", fake_create)
    try:
        assert build_comp_llm(config, model_factory=factory, embeddings=KeywordEmbeddings())
    finally:
        monkey.undo()

    assert {name: len(models) for name, models in built.items()} == {
        "planner": 1,
        "default": 1,
        "shared": 1,
    }
    experts = captured["experts"]
    assert experts["math"].llm is experts["medicine"].llm is built["shared"][0]
    assert experts["history"].llm is captured["aggregator"].llm is built["default"][0]
    assert captured["generator"].llm is built["planner"][0]
    assert experts["math"].system_prompt == "Show your work."
    assert experts["math"].examples == ("What is the sum of 2 and 3?", "Multiply 4 by 5")
    assert captured["mode"] == "sequential" and captured["max_concurrency"] == 2
    router = captured["router"]
    assert isinstance(router, EmbeddingRouter) and router.expert_names == list(experts)
    assert router.threshold == 0.1 and router.fallback_expert == "history"
    assert captured["failure_policy"].max_retries == 1


def test_build_planner_loads_only_the_generator(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "complm.yaml", YAML_CONFIG))
    factory = Factory({"planner": [PLAN]})
    planner = build_planner(config, model_factory=factory, embeddings=KeywordEmbeddings())
    plan = planner.invoke("What is 2+3, and which drug treats it?")
    assert factory.calls == ["planner"]
    assert [sq.expert for sq in plan.sub_queries] == ["math", "medicine"]
    assert all(sq.route is not None and sq.route.scores for sq in plan.sub_queries)


@pytest.fixture
def no_shipped_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build of the package without the trained Sub-query Generator."""
    from langchain_complm.models import embedded

    monkeypatch.setattr(embedded, "trained_generator_path", lambda: None)


def test_the_embedded_default_decomposes_with_the_shipped_generator() -> None:
    from langchain_complm.models.embedded import EMBEDDED_GENERATOR, trained_generator_path

    shipped = trained_generator_path()
    assert shipped is not None and (shipped / "adapter_model.safetensors").is_file()
    config = default_config()
    assert config.resolved_decomposer == "trained"
    assert config.trained_generator_id == EMBEDDED_GENERATOR
    # Its own merged copy of SmolLM2 decomposes; the generator role's model is not loaded.
    assert config.model_names_used(experts=False) == ["default"]


@pytest.mark.usefixtures("no_shipped_generator")
def test_decomposer_auto_uses_the_splitter_for_the_embedded_model(tmp_path: Path) -> None:
    from langchain_complm.decompose.generator import SubQueryGenerator
    from langchain_complm.decompose.structural import StructuralSubQueryGenerator

    embedded = default_config()
    assert embedded.decomposer == "auto" and embedded.resolved_decomposer == "structural"
    # The embedded generator model is then not needed: only the aggregator's is loaded.
    assert embedded.model_names_used(experts=False) == ["default"]
    assert embedded.model_copy(update={"decomposer": "llm"}).resolved_decomposer == "llm"
    trained = embedded.model_copy(update={"trained_generator": "runs/g"})
    assert trained.resolved_decomposer == "trained"
    assert trained.model_names_used(experts=False) == ["default"]
    config = load_config(write(tmp_path, "complm.yaml", YAML_CONFIG))
    assert config.resolved_decomposer == "llm"  # a generator model of the user's own
    assert config.model_copy(update={"decomposer": "structural"}).resolved_decomposer == (
        "structural"
    )

    planner = build_planner(
        embedded, model_factory=lambda name, spec: fake_llm(PLAN), embeddings=KeywordEmbeddings()
    )
    plan = planner.invoke("What is 15% of 80? Which drug treats anemia?")
    assert [sq.question for sq in plan.sub_queries] == [
        "What is 15% of 80?",
        "Which drug treats anemia?",
    ]
    assert all(sq.expert for sq in plan.sub_queries)
    assert isinstance(planner.first, StructuralSubQueryGenerator)
    llm_planner = build_planner(
        config, model_factory=lambda name, spec: fake_llm(PLAN), embeddings=KeywordEmbeddings()
    )
    assert isinstance(llm_planner.first, SubQueryGenerator)


@pytest.mark.usefixtures("no_shipped_generator")
def test_trained_decomposer_needs_a_generator_that_exists(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trained_generator"):
        load_config(write(tmp_path, "a.yaml", "decomposer: trained\n"))
    missing = tmp_path / "no-such-run"
    config = load_config(
        write(tmp_path, "b.yaml", f"decomposer: trained\ntrained_generator: {missing}\n"),
        check_paths=False,
    )
    with pytest.raises(ModelNotFoundError, match="trained_generator"):
        build_planner(config, embeddings=KeywordEmbeddings())
    relative = load_config(
        write(tmp_path, "c.yaml", "trained_generator: ./runs/g\n"), check_paths=False
    )
    assert relative.trained_generator == str(tmp_path / "runs" / "g")
    # A copy that skipped validation still gets the clear error, not a crash in the loader.
    unchecked = default_config().model_copy(update={"decomposer": "trained"})
    with pytest.raises(ConfigError, match="trained_generator"):
        build_planner(unchecked, embeddings=KeywordEmbeddings())


# --- routing ---------------------------------------------------------------------------------

TWO_STEP_CONFIG = """\
models:
  planner: org/planner
  small: org/small
  large: org/large
generator: planner
experts:
  - {name: math-small, model: small, parameters: 135000000}
  - {name: math-large, model: large, parameters: 1700000000}
  - {name: medicine-small, model: small, parameters: 135000000}
  - {name: medicine-large, model: large, parameters: 1700000000}
  - {name: general, description: Everything else.}
routing:
  strategy: {kind: knn, k: 3}
  examples: ./routing.yaml
  fallback_expert: general
  policy: {kind: budget, max_parameters: 500000000}
  categories:
    - name: math
      description: Arithmetic, sums and equations.
      examples: ["What is the sum of 2 and 3?", "Add 4 plus 5"]
      experts: [math-small, math-large]
    - name: medicine
      description: Drugs, diseases and patients.
      experts: [medicine-small, medicine-large]
      threshold: 0.3
"""
ROUTING_EXAMPLES = """\
math:
  - Multiply the number 7 by 8
medicine:
  - Which symptom does this disease cause in a patient?
"""


def test_two_step_routing_from_a_config_file(tmp_path: Path) -> None:
    write(tmp_path, "routing.yaml", ROUTING_EXAMPLES)
    config = load_config(write(tmp_path, "complm.yaml", TWO_STEP_CONFIG))
    assert config.routing.examples == str((tmp_path / "routing.yaml").resolve())
    assert config.route_names == ["math", "medicine"]
    progress: list[str] = []
    embeddings = KeywordEmbeddings()
    planner = build_planner(
        config,
        model_factory=Factory({"planner": [PLAN]}),
        embeddings=embeddings,
        progress=progress.append,
    )
    plan = planner.invoke("What is 2+3, and which drug treats it?")
    math, medicine = (sq.route for sq in plan.sub_queries)
    assert math is not None and medicine is not None
    # The budget admits only the 135M experts; the strategy is the configured kNN.
    assert (math.expert, math.category.name, math.strategy) == ("math-small", "math", "knn")
    assert math.selection is not None and math.selection.reason.startswith("the largest")
    assert medicine.category is not None and medicine.category.threshold == 0.3
    assert medicine.category.score > 0.3 and medicine.expert == "medicine-small"
    assert "Fitting the router on 2 labelled queries..." in progress
    # The examples were embedded as documents with the category profiles.
    assert "Multiply the number 7 by 8" in embeddings.calls[0]
    # An uncertain medicine score goes to the generalist.
    router = build_router(config, config.experts, KeywordEmbeddings())
    (unsure,) = router.route(["A drug"])
    assert unsure.category is not None and unsure.category.name == "medicine"
    assert unsure.category.score < 0.3 and (unsure.expert, unsure.fallback) == ("general", True)


def test_a_strategy_and_policy_may_be_named_by_kind(tmp_path: Path) -> None:
    text = TWO_STEP_CONFIG.replace("{kind: knn, k: 3}", "head").replace(
        "{kind: budget, max_parameters: 500000000}", "least_loaded"
    )
    config = load_config(
        write(tmp_path, "c.yaml", text.replace("  examples: ./routing.yaml\n", ""))
    )
    assert config.routing.strategy.kind == "head" and config.routing.policy.kind == "least_loaded"


def test_routing_problems_found_when_building_are_config_errors(tmp_path: Path) -> None:
    text = TWO_STEP_CONFIG.replace(", parameters: 1700000000", "")
    config = load_config(write(tmp_path, "c.yaml", text))
    with pytest.raises(ConfigError, match=r"routing: .*a parameters budget needs the parameters"):
        build_planner(config, model_factory=Factory({}), embeddings=KeywordEmbeddings())
    config = load_config(write(tmp_path, "complm.yaml", TWO_STEP_CONFIG))  # no examples file
    with pytest.raises(ConfigError, match=r"routing\.examples: .*routing\.yaml"):
        build_planner(config, model_factory=Factory({}), embeddings=KeywordEmbeddings())
    write(tmp_path, "routing.yaml", "law:\n  - Sue them\n")
    with pytest.raises(ConfigError, match=r"routing\.examples: labels that are not routes: law"):
        build_planner(config, model_factory=Factory({}), embeddings=KeywordEmbeddings())


def test_expert_sizes_and_thresholds_reach_the_experts(tmp_path: Path) -> None:
    text = """\
decomposer: structural
experts:
  - {name: math, description: sums, threshold: 0.2, parameters: 1000, cost: 2.5}
  - {name: history, description: kings}
routing: {fallback_expert: history}
"""
    factory = Factory({"default": [PLAN]})
    captured: dict[str, Any] = {}

    def fake_create(experts: Any, **kwargs: Any) -> str:
        captured.update(kwargs, experts=list(experts))
        return "runnable"

    import langchain_complm.pipeline as pipeline

    monkey = pytest.MonkeyPatch()
    monkey.setattr(pipeline, "create_comp_llm", fake_create)
    try:
        build_comp_llm(
            write(tmp_path, "c.yaml", text),
            model_factory=factory,
            embeddings=KeywordEmbeddings(),
        )
    finally:
        monkey.undo()
    math = captured["experts"][0]
    assert (math.threshold, math.parameters, math.cost) == (0.2, 1000, 2.5)
    assert captured["router"].threshold_of("math") == 0.2
    assert captured["router"].threshold_of("history") is None


def test_the_shipped_two_step_example_config() -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "coe-two-sizes.yaml"
    config = load_config(path)
    assert config.route_names == DEFAULT_EXPERTS
    assert config.routing.fallback_expert == "general-small"
    router = build_router(config, config.experts, KeywordEmbeddings())
    assert isinstance(router, TwoStepRouter)
    assert all(len(c.experts) == 2 for c in router.categories)
    (decision,) = router.route(["Add the sum of the numbers 3 plus 4"])
    assert decision.category is not None and decision.category.name == "math"
    assert decision.expert == "math-large"  # 362M: within the 2B budget
    router.policy = BudgetPolicy(max_parameters=200_000_000)
    (small,) = router.route(["Add the sum of the numbers 3 plus 4"])
    assert small.expert == "math-small" and small.selection.within_budget


def test_a_model_entry_generates_as_the_chat_model_does_by_default() -> None:
    # The config's generation defaults are the chat model's, not literals of their own.
    from langchain_complm.config._schema import _GENERATION_FIELDS
    from langchain_complm.models.huggingface import ChatLocalHuggingFace

    spec, fields = ModelSpec(), ChatLocalHuggingFace.model_fields
    shared = [f for f in _GENERATION_FIELDS if f != "stop"]  # ModelSpec's stop is a list
    assert {"max_new_tokens", "do_sample", "max_batch_size", "batch_window_ms"} <= set(shared)
    assert {f: getattr(spec, f) for f in shared} == {f: fields[f].default for f in shared}
