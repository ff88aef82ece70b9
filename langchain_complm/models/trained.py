"""Loading a trained Sub-query Generator: a LoRA adapter (or a full fine-tune) merged into its
base model, behind a :class:`~langchain_complm.models.huggingface.ChatLocalHuggingFace`.

A trained folder holds the adapter (or the full model), optionally the tokenizer, and
``complm_generator.json`` (:data:`METADATA_FILE`: base model, data, steps, seed). A folder
whose metadata names ``shapes`` also holds a second adapter per shape (a subfolder each) and
a shape router (``shape_router``, see :mod:`~langchain_complm.decompose.shapes`): its
adapters are served unmerged by one :class:`~langchain_complm.models.lora.LoraEngine`, so
questions of different shapes still share one batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from langchain_complm.decompose.generator import SubQueryGenerator
from langchain_complm.decompose.shapes import ShapeRouter
from langchain_complm.decompose.trained import trained_generator
from langchain_complm.models import embedded
from langchain_complm.models.huggingface import (
    PLAIN_CHAT_TEMPLATE,
    ChatLocalHuggingFace,
    default_device,
)

METADATA_FILE = "complm_generator.json"

SHAPE_ROUTER_FILE = "shape_router.json"
"""The shape router's file in an exported generator with shapes."""

DEFAULT_MAX_NEW_TOKENS = 768
"""Generation cap of the loaded generator: plans copy long benchmark questions."""


def resolve_base(base: str) -> str:
    """A loadable path or hub id for ``base`` (the embedded chat model's name -> the SmolLM2
    folder)."""
    if base == embedded.EMBEDDED_CHAT_MODEL:
        return str(embedded.smollm2_path())
    path = Path(base).expanduser()
    return str(path.resolve()) if path.exists() else base


def ensure_chat_template(tokenizer: Any) -> None:
    """Give a tokenizer without a chat template the plain one, and a pad token."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def trained_model_folder(path_or_hub_id: str) -> Path:
    """The local folder of a trained model: ``embedded:subquery-generator`` (the shipped one),
    a folder, or a Hub repo (downloaded).

    Raises:
        FileNotFoundError: a path that is not a folder, or no shipped generator.
    """
    if path_or_hub_id == embedded.EMBEDDED_GENERATOR:
        shipped = embedded.trained_generator_path()
        if shipped is None:
            raise FileNotFoundError(
                "this build of langchain-complm ships no trained Sub-query Generator; "
                "train one with complm train-generator"
            )
        return shipped
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or path_or_hub_id.startswith((".", "/", "~")):
        raise FileNotFoundError(f"no trained generator folder at {path}")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=path_or_hub_id))


def read_metadata(path_or_hub_id: str | Path) -> dict[str, Any]:
    """The ``complm_generator.json`` of a trained generator ({} when it has none)."""
    meta_path = trained_model_folder(str(path_or_hub_id)) / METADATA_FILE
    return json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}


def load_trained_model(
    path_or_hub_id: str | Path, *, base: str | None = None, device: str | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained generator, the LoRA adapter merged into the base.

    Args:
        path_or_hub_id: an output folder of ``complm train-generator``, or a Hub repo holding
            one (a plain fine-tuned causal LM folder or repo works too).
        base: override the base model named in the metadata or the adapter config.
        device: default CUDA when available, else CPU.
    """
    folder = trained_model_folder(str(path_or_hub_id))
    model, tokenizer = _load_base(folder, base, device)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    return model, tokenizer


def _load_base(folder: Path, base: str | None, device: str | None) -> tuple[Any, Any]:
    """(model, tokenizer) of the model a trained folder's adapter is for (the folder's own
    model when it holds a full fine-tune)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_config = folder / "adapter_config.json"
    base_source = str(folder)
    if adapter_config.is_file():
        base_name = (
            base
            or read_metadata(folder).get("base_model")
            or json.loads(adapter_config.read_text())["base_model_name_or_path"]
        )
        base_source = resolve_base(base_name)
    model: Any = AutoModelForCausalLM.from_pretrained(base_source, dtype=torch.float32)
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(folder) if has_tokenizer else base_source)
    ensure_chat_template(tokenizer)
    return model.to(device or default_device()).eval(), tokenizer


def load_trained_generator(
    path_or_hub_id: str | Path,
    *,
    base: str | None = None,
    device: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    max_sub_queries: int | None = None,
    constrained: bool = True,
    embeddings: Embeddings | None = None,
    **chat_kwargs: Any,
) -> SubQueryGenerator:
    """A :class:`~langchain_complm.decompose.generator.SubQueryGenerator` over a trained model.

    The chat model is a :class:`~langchain_complm.models.huggingface.ChatLocalHuggingFace` over
    the base with the adapter merged; the prompt is the training format's. Decoding is held
    to the plan's JSON grammar unless ``constrained=False`` (see
    :func:`~langchain_complm.decompose.trained.trained_generator`). ``chat_kwargs`` set
    fields of the chat model (``max_batch_size``, ...).

    A folder with shapes (the shipped generator is one) gives a generator whose shape router
    hands each question to its shape's adapter; the router embeds with ``embeddings``
    (default: the embedding model it names, e.g. the embedded all-MiniLM-L6-v2).

    Raises:
        ValueError: the metadata's shapes or shape router are not usable (named).

    Example:
        .. code-block:: python

            generator = load_trained_generator("runs/subquery-generator")
            plan = generator.invoke("Who wrote Hamlet, and what is 15% of 80?")
    """
    folder = trained_model_folder(str(path_or_hub_id))
    shapes = read_metadata(folder).get("shapes")
    options = {"model_id": str(path_or_hub_id), "max_new_tokens": max_new_tokens, **chat_kwargs}
    if not shapes:
        model, tokenizer = load_trained_model(folder, base=base, device=device)
        llm = ChatLocalHuggingFace.from_model(model, tokenizer, **options)
        return trained_generator(llm, max_sub_queries=max_sub_queries, constrained=constrained)
    from langchain_complm.models.lora import LoraEngine

    router = _shape_router(folder, shapes, embeddings)
    engine = LoraEngine.for_model(*_load_base(folder, base, device))
    llm = engine.chat_model(router.default, folder, **options)
    shape_llms = {
        shape: engine.chat_model(shape, folder / sub, **options)
        for shape, sub in shapes["adapters"].items()
    }
    return trained_generator(
        llm,
        max_sub_queries=max_sub_queries,
        constrained=constrained,
        shape_router=router,
        shape_llms=shape_llms,
    )


def _shape_router(
    folder: Path, shapes: dict[str, Any], embeddings: Embeddings | None
) -> ShapeRouter:
    """The shape router the metadata's ``shapes`` name ({"router": file, "adapters":
    {shape: subfolder}}), checked against the adapters it names."""
    try:
        path = folder / shapes["router"]
        adapters = shapes["adapters"]
        if not isinstance(adapters, dict):
            raise TypeError("adapters is not a mapping")
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{folder / METADATA_FILE}: 'shapes' must be {{'router': file, 'adapters': "
            f"{{shape: subfolder}}}}, got {shapes!r}"
        ) from exc
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        name = data.get("embeddings") or embedded.EMBEDDED_EMBEDDINGS
        router = ShapeRouter.from_dict(data, embeddings or embedded.embeddings_for(name))
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a usable shape router ({exc})") from exc
    missing = [s for s in adapters if not embedded.has_adapter(folder / adapters[s])]
    if router.route not in adapters or missing:
        raise ValueError(
            f"{folder / METADATA_FILE}: the shape router routes to {router.route!r}, but the "
            f"adapters are {sorted(adapters)} (without an adapter: {missing})"
        )
    return router


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "METADATA_FILE",
    "SHAPE_ROUTER_FILE",
    "ensure_chat_template",
    "load_trained_generator",
    "load_trained_model",
    "read_metadata",
    "resolve_base",
    "trained_model_folder",
]
