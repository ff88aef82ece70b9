"""A Comp-LLM setup as data: models, embeddings, experts, routing and execution settings.

A :class:`CompLLMConfig` is built in Python or loaded from a YAML, TOML or JSON file with
:func:`load_config`; :func:`build_comp_llm` turns it into the Comp-LLM runnable. Every named
model is loaded once and shared by all the experts (and the generator or aggregator) that name
it. Without a file, :func:`default_config` gives the embedded offline setup: SmolLM2-135M for
every role, MiniLM for routing and the default experts shipped in
``langchain_complm/data/default_experts.yaml``.

Example (YAML)::

    models:
      default: {max_new_tokens: 192}            # the embedded SmolLM2, shorter answers
      qwen: {model_id: Qwen/Qwen2.5-0.5B-Instruct, device: cpu}
      engine: {base_url: "http://127.0.0.1:8000/v1", model: smollm2, max_concurrency: 16}
      qwen-math: {base: qwen, adapter: ./adapters/qwen-math}   # a LoRA expert over qwen
    generator: qwen
    experts:
      - name: math
        description: Arithmetic and algebra.
        examples: ["What is 15% of 240?"]
        model: qwen-math
      - name: general
        description: Everything else.
    routing: {threshold: 0.2, fallback_expert: general}
    execution: {mode: superstep, max_concurrency: 4, failure: {max_retries: 1}}
"""

from __future__ import annotations

from langchain_complm.config._build import (
    NamedModels,
    PipelineParts,
    build_comp_llm,
    build_decomposer,
    build_experts,
    build_parts,
    build_planner,
    build_router,
    connect_chat_model,
    load_chat_model,
    load_embeddings,
)
from langchain_complm.config._schema import (
    CONFIG_ENV,
    DEFAULT_MODEL,
    AnyModelSpec,
    CategorySpec,
    CompLLMConfig,
    Decomposer,
    EmbeddingsSpec,
    ExecutionConfig,
    ExpertSpec,
    ModelFactory,
    ModelSpec,
    Progress,
    RemoteModelSpec,
    RoutingConfig,
    check_model_paths,
    default_config,
    default_experts_path,
    load_config,
    load_default_experts,
    resolve_config,
)
from langchain_complm.errors import ConfigError, ModelNotFoundError
from langchain_complm.models.embedded import EMBEDDED_CHAT_MODEL, EMBEDDED_EMBEDDINGS

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_MODEL",
    "EMBEDDED_CHAT_MODEL",
    "EMBEDDED_EMBEDDINGS",
    "AnyModelSpec",
    "CategorySpec",
    "CompLLMConfig",
    "ConfigError",
    "Decomposer",
    "EmbeddingsSpec",
    "ExecutionConfig",
    "ExpertSpec",
    "ModelFactory",
    "ModelNotFoundError",
    "ModelSpec",
    "NamedModels",
    "PipelineParts",
    "Progress",
    "RemoteModelSpec",
    "RoutingConfig",
    "build_comp_llm",
    "build_decomposer",
    "build_experts",
    "build_parts",
    "build_planner",
    "build_router",
    "check_model_paths",
    "connect_chat_model",
    "default_config",
    "default_experts_path",
    "load_chat_model",
    "load_config",
    "load_default_experts",
    "load_embeddings",
    "resolve_config",
]
