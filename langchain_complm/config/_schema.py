"""The configuration as data: every section of a config file, validated, and the
reading of config files (YAML, TOML or JSON) into a :class:`CompLLMConfig`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from langchain_complm.errors import ConfigError, ModelNotFoundError
from langchain_complm.execute.executor import FailurePolicy, ScheduleMode
from langchain_complm.experts import ExpertProfile, check_known, check_unique
from langchain_complm.models.embedded import EMBEDDED_CHAT_MODEL, EMBEDDED_EMBEDDINGS
from langchain_complm.models.huggingface import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
)
from langchain_complm.pipeline import DEFAULT_MAX_QUERY_CHARS
from langchain_complm.plan import DEFAULT_MAX_SUB_QUERIES
from langchain_complm.route.strategies import CentroidStrategy, Strategy
from langchain_complm.route.two_step import BudgetPolicy, Category, Policy

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel


try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

CONFIG_ENV = "COMPLM_CONFIG"
"""Environment variable naming the config file to use when none is given (``complm`` without
``--config``, and the LangGraph server's graphs)."""

DEFAULT_MODEL = "default"
"""Name of the model every role uses unless told otherwise; the embedded SmolLM2 unless
a config defines a model of this name."""

Progress = Callable[[str], None]
"""Receives human-readable progress lines (the CLI prints them to stderr)."""
ModelFactory = Callable[[str, "AnyModelSpec"], "BaseChatModel"]
"""Builds the chat model for one named model spec: ``factory(name, spec)``."""

_FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}


# --- schema -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_GENERATION_FIELDS = (
    *("max_new_tokens", "do_sample", "temperature", "top_p", "repetition_penalty", "stop"),
    *("max_batch_size", "batch_window_ms"),
)
"""ModelSpec fields that are ChatLocalHuggingFace fields of the same name."""


class _ModelLocation(_Strict):
    """Where a model is: ``model_id`` (a bare string stands for ``{model_id: ...}``)."""

    EMBEDDED: ClassVar[str]
    """The ``model_id`` of the embedded model of this kind (``"embedded"`` is an alias)."""

    model_id: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"model_id": value} if isinstance(value, str) else value

    @field_validator("model_id")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model_id must not be empty")
        if value.startswith(("http://", "https://")):
            raise ValueError(
                f"model_id {value!r} is a URL; model_id names weights this process loads. "
                "A model on a server is {base_url: URL, model: SERVED_NAME}"
            )
        return cls.EMBEDDED if value == "embedded" else value

    @property
    def is_embedded(self) -> bool:
        """Whether this is the embedded model."""
        return self.model_id == self.EMBEDDED


class ModelSpec(_ModelLocation):
    """One chat model: where its weights are and how it generates.

    ``model_id`` is a Hugging Face hub id (used from the local cache when offline), a local
    folder (relative paths in a config file are relative to the file), a ``.gguf`` file, or
    :data:`EMBEDDED_CHAT_MODEL` for the embedded SmolLM2-135M-Instruct. A bare string stands for
    ``{model_id: ...}``.

    With ``adapter`` the model is a LoRA adapter (a folder, relative to a config file, or a
    hub repo) over the model named ``base`` (default ``default``): it has no weights of its
    own (``model_id``, ``gguf_file``, ``device`` and ``torch_dtype`` are its base's), and all
    adapters of one base share its weights and batches (see
    :mod:`~langchain_complm.models.lora`). Its generation settings are its own.
    """

    EMBEDDED: ClassVar[str] = EMBEDDED_CHAT_MODEL

    model_id: str = EMBEDDED_CHAT_MODEL
    gguf_file: str | None = Field(default=None, description="GGUF file inside model_id.")
    device: str | None = Field(default=None, description="'cpu', 'cuda:0', ...; default auto.")
    torch_dtype: str | None = Field(default=None, description="e.g. 'bfloat16'; default fp32.")
    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, ge=1)
    do_sample: bool = False
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1)
    batch_window_ms: float = Field(default=DEFAULT_BATCH_WINDOW_MS, ge=0)
    adapter: str | None = Field(default=None, description="LoRA adapter folder or hub id.")
    base: str | None = Field(default=None, description="The model an adapter adapts.")

    @model_validator(mode="after")
    def _adapter_has_no_weights(self) -> ModelSpec:
        if self.adapter is None:
            if self.base is not None:
                raise ValueError("base is only for LoRA adapter models: set adapter too")
            return self
        if not self.adapter.strip():
            raise ValueError("adapter must not be empty")
        # Checked by value, not by the fields set: a dumped config validates again.
        own = [f for f in ("gguf_file", "device", "torch_dtype") if getattr(self, f) is not None]
        if self.model_id != self.EMBEDDED:
            own.insert(0, "model_id")
        if own:
            raise ValueError(
                f"a LoRA adapter model uses its base's weights: set {', '.join(own)} on its "
                "base model instead"
            )
        return self

    @property
    def base_model(self) -> str | None:
        """The model name an adapter model adapts (None for a model with its own weights)."""
        return None if self.adapter is None else self.base or DEFAULT_MODEL

    def generation_kwargs(self) -> dict[str, Any]:
        """Chat model fields: generation and batching settings that are set."""
        return {f: getattr(self, f) for f in _GENERATION_FIELDS if getattr(self, f) is not None}


class RemoteModelSpec(_Strict):
    """A chat model someone else serves: an OpenAI-compatible endpoint (vLLM, TGI, SGLang,
    ...) at ``base_url``, or, without one, any LangChain provider named as
    ``init_chat_model`` names it (``"anthropic:claude-haiku-4-5"``). ``model`` marks an
    entry as served; ``model_id`` as loaded here. Needs the ``serve`` extra.
    """

    model: str = Field(min_length=1)
    """The name the server serves (vLLM's ``--served-model-name``), or ``provider:model``."""
    base_url: str | None = None
    """The server, e.g. ``http://127.0.0.1:8000/v1`` for an OpenAI-compatible endpoint."""
    provider: str | None = Field(default=None, min_length=1)
    """The LangChain provider (``init_chat_model``'s ``model_provider``): default
    ``openai`` (an OpenAI-compatible endpoint) with ``base_url``, else inferred from
    ``model``."""
    adapter: str | None = Field(default=None, min_length=1)
    """A LoRA adapter the endpoint serves over ``model`` (vLLM ``--lora-modules NAME=PATH``);
    requests ask for it by name."""
    api_key_env: str | None = Field(default=None, min_length=1)
    """The environment variable holding the API key (the key itself never goes in a
    config). Default: none for an endpoint, the provider's own variable otherwise."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """At most this many requests in flight to this model; more wait their turn."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds per request; default the client's."""
    max_retries: int = Field(default=2, ge=0)
    """The client's retries on connection errors, 429 and 5xx."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    """Further fields of the provider's chat model class (not those set above)."""

    is_embedded: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _no_key(cls, value: Any) -> Any:
        options = value.get("options") if isinstance(value, Mapping) else None
        if isinstance(value, Mapping) and (
            "api_key" in value or (isinstance(options, Mapping) and "api_key" in options)
        ):
            raise ValueError(
                "api_key: keys do not go in config files; put the key in an environment "
                "variable and name the variable in api_key_env"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RemoteModelSpec:
        from langchain_complm.models.remote import check_endpoint

        check_endpoint(self.base_url, self.adapter)
        if taken := sorted(set(self.options) & _CLIENT_SETTINGS):
            raise ValueError(
                f"options: {', '.join(taken)} set by the model's own keys "
                "(max_tokens is max_new_tokens)"
            )
        return self

    def generation_kwargs(self) -> dict[str, Any]:
        """The provider's chat model fields: ``options`` and the generation settings set."""
        settings = {
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
        }
        return self.options | {k: v for k, v in settings.items() if v is not None}


_CLIENT_SETTINGS = frozenset(
    {"model", "model_provider", "base_url", "api_key", "timeout", "max_retries"}
    | {"max_tokens", "temperature", "top_p", "stop"}
)
"""Client arguments a :class:`RemoteModelSpec` sets from its own keys."""


def _model_kind(value: Any) -> str:
    served = isinstance(value, RemoteModelSpec) or (
        isinstance(value, Mapping) and ("model" in value or "base_url" in value)
    )
    return "served" if served else "local"


_SPEC_TAGS = ("served", "local")
"""The tags of :data:`AnyModelSpec`, which pydantic puts in error locations after the name."""

AnyModelSpec = Annotated[
    Annotated[ModelSpec, Tag("local")] | Annotated[RemoteModelSpec, Tag("served")],
    Discriminator(_model_kind),
]
"""A named model: loaded here (:class:`ModelSpec`) or served (:class:`RemoteModelSpec`)."""


class EmbeddingsSpec(_ModelLocation):
    """The sentence-transformers model the router embeds with: a hub id, a local folder, or
    :data:`EMBEDDED_EMBEDDINGS` for the embedded all-MiniLM-L6-v2."""

    EMBEDDED: ClassVar[str] = EMBEDDED_EMBEDDINGS

    model_id: str = EMBEDDED_EMBEDDINGS
    device: str | None = None


class ExpertSpec(ExpertProfile):
    """One expert: its routing profile and the name of the model that answers for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    system_prompt: str | None = None


class CategorySpec(Category):
    """One category of two-step routing: its profile and the names of its experts."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RoutingConfig(_Strict):
    """How sub-queries are routed.

    One step (no ``categories``): to the expert that scores highest; two steps: to the
    category that scores highest, then to one of its experts by ``policy``. Scores come from
    ``strategy``, fitted on the profiles plus the labelled queries in ``examples``. A best
    score under its threshold (the expert's or category's own, else ``threshold``) sends the
    sub-query to ``fallback_expert`` (in two steps: the generalist).
    """

    strategy: Strategy = Field(default_factory=CentroidStrategy)
    """``centroid``, ``knn`` or ``head``, or a mapping with ``kind`` and its settings."""
    examples: str | None = None
    """A file of labelled queries (JSON Lines ``{"text", "label"}``, or YAML ``label: [...]``)
    to fit the strategy on, labels being expert (or category) names; relative paths are
    relative to the config file. Embedded when the router is built."""
    threshold: float | None = Field(default=None, ge=-1, le=1)
    fallback_expert: str | None = None
    categories: list[CategorySpec] | None = None
    """Two-step routing: the categories and their experts."""
    policy: Policy = Field(default_factory=BudgetPolicy)
    """Two-step routing: how a category's expert is chosen (``budget`` or
    ``least_loaded``)."""

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("categories")
    @classmethod
    def _some_categories(cls, value: list[CategorySpec] | None) -> list[CategorySpec] | None:
        if value is not None and not value:
            raise ValueError("two-step routing needs at least one category (or no categories)")
        return value


class ExecutionConfig(_Strict):
    """How the plan runs (see :func:`~langchain_complm.pipeline.create_comp_llm`)."""

    mode: ScheduleMode = "superstep"
    max_concurrency: int | None = Field(default=None, ge=1)
    failure: FailurePolicy = Field(default_factory=FailurePolicy)
    max_sub_queries: int = Field(default=DEFAULT_MAX_SUB_QUERIES, ge=1)
    max_query_chars: int | None = Field(default=DEFAULT_MAX_QUERY_CHARS, ge=1)
    stream_plan: bool = False
    """Start sub-queries while the plan is written (needs ``mode`` eager or sequential)."""

    @model_validator(mode="after")
    def _streams_without_supersteps(self) -> ExecutionConfig:
        if self.stream_plan and self.mode == "superstep":
            raise ValueError(
                "stream_plan starts each sub-query once its parents are written; supersteps "
                "wait for the whole plan: set mode to eager (or sequential)"
            )
        return self

    @field_validator("failure", mode="before")
    @classmethod
    def _known_failure_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(FailurePolicy.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown failure policy keys {', '.join(unknown)} "
                    f"(known: {', '.join(FailurePolicy.model_fields)})"
                )
        return value


def _default_experts() -> list[ExpertSpec]:
    return list(load_default_experts())


Decomposer = Literal["auto", "llm", "trained", "structural"]
"""How queries are decomposed (see ``CompLLMConfig.decomposer``)."""

_NO_TRAINED_GENERATOR = (
    "decomposer 'trained' needs trained_generator: the folder or Hub repo of a trained "
    "Sub-query Generator (complm train-generator --out DIR); this build ships none"
)


class CompLLMConfig(_Strict):
    """A complete Comp-LLM setup. Every field has a default: ``CompLLMConfig()`` is the
    embedded offline setup with the default experts."""

    models: dict[str, AnyModelSpec] = Field(default_factory=dict, validate_default=True)
    """Named chat models. ``default`` (the embedded SmolLM2) is added when not defined."""
    embeddings: EmbeddingsSpec = Field(default_factory=EmbeddingsSpec)
    generator: str = DEFAULT_MODEL
    """Model that decomposes queries (with ``decomposer: llm``)."""
    decomposer: Decomposer = "auto"
    """How queries are decomposed: ``llm`` prompts the generator model; ``trained`` runs the
    fine-tuned Sub-query Generator in ``trained_generator``; ``structural`` splits on the
    query's explicit structure (enumerations, several questions) without a model. ``auto``:
    ``llm`` when the generator is a model of the user's own; for the embedded SmolLM2-135M,
    which cannot decompose from a prompt (it writes no JSON), ``trained`` when a trained
    generator is set or shipped, else ``structural``."""
    trained_generator: str | None = None
    """Folder or Hub repo of a trained Sub-query Generator (``complm train-generator``
    output), for ``decomposer: trained``; default: the one shipped with the package
    (``embedded:subquery-generator``, trained on SmolLM2-135M) when the build has it."""
    aggregator: str | None = None
    """Model that writes the final answer; default: the generator's."""
    experts: list[ExpertSpec] = Field(default_factory=_default_experts)
    """The experts; default: the shipped default expert set."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @field_validator("models", mode="after")
    @classmethod
    def _add_default_model(cls, models: dict[str, AnyModelSpec]) -> dict[str, AnyModelSpec]:
        if DEFAULT_MODEL in models:
            return models
        return {DEFAULT_MODEL: ModelSpec(), **models}

    @model_validator(mode="after")
    def _check_references(self) -> CompLLMConfig:
        known = ", ".join(self.models)
        if not self.experts:
            raise ValueError("experts: at least one expert is required")
        names = [e.name for e in self.experts]
        check_unique("expert", names)
        for name, spec in self.models.items():
            base = spec.base_model if isinstance(spec, ModelSpec) else None
            if base is None:
                continue
            if base not in self.models:
                raise ValueError(f"models.{name}: unknown base model {base!r} (models: {known})")
            base_spec = self.models[base]
            if not isinstance(base_spec, ModelSpec):
                raise ValueError(
                    f"models.{name}: base {base!r} is a served model; a local LoRA adapter "
                    "needs local weights (a server's adapter is `adapter:` on its own entry)"
                )
            if base_spec.adapter is not None:
                raise ValueError(f"models.{name}: base {base!r} is itself an adapter model")
            if "." in name:
                raise ValueError(f"models.{name}: an adapter model's name must not contain '.'")
        for index, expert in enumerate(self.experts):
            if expert.model not in self.models:
                raise ValueError(
                    f"experts.{index} ({expert.name}): unknown model {expert.model!r} "
                    f"(models: {known})"
                )
        for role in ("generator", "aggregator"):
            name = getattr(self, role)
            if name is not None and name not in self.models:
                raise ValueError(f"{role}: unknown model {name!r} (models: {known})")
        for category in self.routing.categories or ():
            check_known(f"routing.categories ({category.name})", category.experts, names)
        check_known("routing.fallback_expert", [self.routing.fallback_expert], names)
        check_known(
            "execution.failure.fallback_expert", [self.execution.failure.fallback_expert], names
        )
        thresholded = [
            where
            for where, value in (
                ("routing.threshold", self.routing.threshold),
                *((f"experts ({e.name}).threshold", e.threshold) for e in self.experts),
                *(
                    (f"routing.categories ({c.name}).threshold", c.threshold)
                    for c in self.routing.categories or ()
                ),
            )
            if value is not None
        ]
        if thresholded and self.routing.fallback_expert is None:
            raise ValueError(
                f"{thresholded[0]} needs routing.fallback_expert to route low scores to"
            )
        if self.decomposer == "trained" and not self.trained_generator_id:
            raise ValueError(_NO_TRAINED_GENERATOR)
        return self

    @property
    def resolved_decomposer(self) -> Literal["llm", "trained", "structural"]:
        """The decomposer ``decomposer`` stands for (``auto`` resolved)."""
        if self.decomposer != "auto":
            return self.decomposer
        generator = self.models[self.generator]
        adapted = isinstance(generator, ModelSpec) and generator.adapter is not None
        if adapted or not generator.is_embedded:
            return "llm"
        return "trained" if self.trained_generator_id else "structural"

    @property
    def trained_generator_id(self) -> str | None:
        """``trained_generator``, else the shipped generator's name when the build has one."""
        from langchain_complm.models.embedded import EMBEDDED_GENERATOR, trained_generator_path

        if self.trained_generator:
            return self.trained_generator
        return EMBEDDED_GENERATOR if trained_generator_path() is not None else None

    @property
    def route_names(self) -> list[str]:
        """What the router ranks: the categories (two-step routing), else the experts."""
        if self.routing.categories:
            return [c.name for c in self.routing.categories]
        return [e.name for e in self.experts]

    @property
    def aggregator_model(self) -> str:
        """The model name that aggregates (the generator's unless set)."""
        return self.aggregator or self.generator

    def model_names_used(self, *, experts: bool = True) -> list[str]:
        """Model names in load order: generator (when it decomposes), aggregator, then the
        experts' models."""
        names = [self.generator] if self.resolved_decomposer == "llm" else []
        names.append(self.aggregator_model)
        if experts:
            names += [e.model for e in self.experts]
        return list(dict.fromkeys(names))

    def missing_model_paths(self) -> list[tuple[str, Path]]:
        """``(model name, path)`` for every local-looking ``model_id`` that does not exist
        (``"embeddings"`` stands for the embeddings model)."""
        specs = [
            (n, s.adapter or s.model_id) for n, s in self.models.items() if isinstance(s, ModelSpec)
        ]
        specs.append(("embeddings", self.embeddings.model_id))
        if self.resolved_decomposer == "trained" and self.trained_generator:
            specs.append(("trained_generator", self.trained_generator))
        return [
            (name, Path(model_id).expanduser())
            for name, model_id in specs
            if not model_id.startswith("embedded:")
            and _looks_local(model_id)
            and not Path(model_id).expanduser().exists()
        ]

    def with_overrides(self, **execution: Any) -> CompLLMConfig:
        """A copy with some ``execution`` fields replaced (``None`` values are ignored)."""
        updates = {k: v for k, v in execution.items() if v is not None}
        if not updates:
            return self
        data = self.model_dump()
        data["execution"].update(updates)
        return _validate(data, "overrides")


def _looks_local(model_id: str) -> bool:
    # The same rule the transformers loader uses: anything path-like must exist locally.
    return model_id.startswith(("/", ".", "~")) or "\\" in model_id or model_id.count("/") > 1


# --- loading ----------------------------------------------------------------------------------


def default_experts_path() -> Path:
    """The YAML file of the default expert set shipped with the package."""
    return Path(str(resources.files("langchain_complm") / "data" / "default_experts.yaml"))


def load_default_experts() -> tuple[ExpertSpec, ...]:
    """The default experts: math, medicine, science, law, computer_science, history, general."""
    global _DEFAULT_EXPERTS
    if _DEFAULT_EXPERTS is None:
        path = default_experts_path()
        data = _read(path)
        try:
            _DEFAULT_EXPERTS = tuple(ExpertSpec.model_validate(e) for e in data["experts"])
        except (KeyError, TypeError, ValidationError) as exc:
            raise ConfigError(f"{path}: invalid default experts: {exc}") from exc
    return _DEFAULT_EXPERTS


_DEFAULT_EXPERTS: tuple[ExpertSpec, ...] | None = None


def default_config() -> CompLLMConfig:
    """The embedded offline setup: SmolLM2 for every role, MiniLM, the default experts."""
    return CompLLMConfig()


def load_config(path: str | Path, *, check_paths: bool = True) -> CompLLMConfig:
    """Load a config from a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file.

    Relative local model paths (``./model``, ``../models/x``) are relative to the file.

    Raises:
        ConfigError: the file is missing or unreadable, not valid YAML/TOML/JSON, or does
            not match the schema (unknown keys, unknown model or expert names, duplicate
            experts, ...). The message starts with the file name.
        ModelNotFoundError: with ``check_paths``, a local model path does not exist.
    """
    path = Path(path)
    data = _read(path)
    base = path.resolve().parent
    for section in _model_sections(data):
        for key in ("model_id", "adapter"):
            location = section.get(key)
            if isinstance(location, str) and location.startswith("."):
                section[key] = str((base / location).resolve())
    trained = data.get("trained_generator")
    if isinstance(trained, str) and trained.startswith("."):
        data["trained_generator"] = str((base / trained).resolve())
    routing = data.get("routing")
    if isinstance(routing, dict) and isinstance(routing.get("examples"), str):
        routing["examples"] = str((base / Path(routing["examples"]).expanduser()).resolve())
    config = _validate(data, str(path))
    if check_paths and (missing := config.missing_model_paths()):
        raise ModelNotFoundError(
            f"{path}: "
            + "; ".join(f"model {name!r}: no such file or folder: {p}" for name, p in missing)
        )
    return config


def _read(path: Path) -> dict[str, Any]:
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"{path}: unsupported config format {path.suffix or '(no extension)'!r}; "
            "use .yaml, .yml, .toml or .json"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        if kind == "yaml":
            import yaml

            data = yaml.safe_load(text)
        elif kind == "toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError, TOMLDecodeError, JSONDecodeError
        detail = " ".join(str(exc).split()).replace('in "<unicode string>", ', "")
        raise ConfigError(f"{path}: invalid {kind.upper()}: {detail}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of settings, got {type(data).__name__}"
        )
    return data


def _model_sections(data: dict[str, Any]) -> list[dict[str, Any]]:
    sections: list[dict[str, Any]] = []
    models = data.get("models")
    if isinstance(models, dict):
        for name, spec in list(models.items()):
            if isinstance(spec, str):
                models[name] = spec = {"model_id": spec}
            if isinstance(spec, dict):
                sections.append(spec)
    embeddings = data.get("embeddings")
    if isinstance(embeddings, str):
        data["embeddings"] = embeddings = {"model_id": embeddings}
    if isinstance(embeddings, dict):
        sections.append(embeddings)
    return sections


def _validate(data: Any, source: str) -> CompLLMConfig:
    try:
        return CompLLMConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    parts = [str(part) for part in error.get("loc", ())]
    if parts[:1] == ["models"] and len(parts) > 2 and parts[2] in _SPEC_TAGS:
        del parts[2]  # models.NAME.served.timeout -> models.NAME.timeout
    loc = ".".join(parts)
    # Strip pydantic's "function-after[...]" style markers from union/validator locations.
    loc = ".".join(p for p in loc.split(".") if not p.startswith(("function-", "json-")))
    return f"{loc}: {message}" if loc else message


def resolve_config(config: CompLLMConfig | str | Path | None) -> CompLLMConfig:
    """``config`` itself, the file it names loaded, or :func:`default_config` for ``None``."""
    if config is None:
        return default_config()
    if isinstance(config, (str, Path)):
        return load_config(config)
    if not isinstance(config, CompLLMConfig):
        raise TypeError(f"config must be a CompLLMConfig or a path, got {type(config).__name__}")
    return config


def check_model_paths(
    config: CompLLMConfig, model_factory: ModelFactory | None, embeddings: Embeddings | None
) -> None:
    """Fail before loading anything if a local model the config names is missing (injected
    models, through ``model_factory`` or ``embeddings``, need no files).

    Raises:
        ModelNotFoundError: naming each missing model and path.
    """
    missing = [
        (name, path)
        for name, path in config.missing_model_paths()
        if (name == "embeddings" and embeddings is None)
        or (name != "embeddings" and model_factory is None)
    ]
    if missing:
        raise ModelNotFoundError(
            "; ".join(f"model {name!r}: no such file or folder: {p}" for name, p in missing)
        )
