"""LoRA experts: many adapters over one base model, answered together by one engine.

Comp-LLM's experts are often fine-tunes of one model family. Loaded as separate models, each
expert costs a copy of the weights and has its own :class:`GenerationEngine`; engines on one
device take turns, so a fan-out over different experts barely overlaps. A
:class:`LoraEngine` holds one base model with any number of LoRA adapters (PEFT) and answers a
batch whose rows use different adapters in one ``generate``: PEFT's mixed-adapter batches
(``adapter_names``, with :data:`BASE_ADAPTER` for rows that use the base alone) compute the
base layers once for the whole batch and each adapter's low-rank update on its own rows.

Chat models over the engine (:meth:`LoraEngine.chat_model`) are ordinary
:class:`~langchain_complm.models.huggingface.ChatLocalHuggingFace` instances with
``adapter`` set; they share the engine's batches, and the executor declares one batch cohort
for a level's sub-queries to any of them (:func:`langchain_complm.batching.batch_group`).

PEFT injects its layers into the model it wraps, in place, and the base model object may still
be in use elsewhere (the embedded SmolLM2 serves every role, through its own engine). So the
engine wraps its own module tree whose parameters and buffers *are* the base model's tensors:
the weights exist once, and the base model object is left untouched.

Example:
    .. code-block:: python

        base = ChatLocalHuggingFace.from_model_id("HuggingFaceTB/SmolLM2-135M-Instruct")
        engine = LoraEngine.from_chat_model(base)
        math = engine.chat_model("math", "runs/expert-math", max_new_tokens=128)
        medicine = engine.chat_model("medicine", "org/smollm2-medicine-lora")
        # concurrent calls to math and medicine run in one generate
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_complm.errors import ModelNotFoundError
from langchain_complm.models.huggingface import ChatLocalHuggingFace, GenerationEngine
from langchain_complm.models.pool import model_bytes

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BASE_ADAPTER = "__base__"
"""PEFT's name for a row of a mixed batch that uses the base model without an adapter."""


@dataclass(frozen=True)
class LoraMemory:
    """Bytes held by a :class:`LoraEngine`: the base model's weights once, plus each adapter."""

    base_bytes: int
    adapter_bytes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        """Base plus every adapter."""
        return self.base_bytes + sum(self.adapter_bytes.values())

    def describe(self) -> str:
        """One line, in MiB: base, adapters and total."""
        adapters = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in self.adapter_bytes.items())
        return (
            f"base {self.base_bytes / 2**20:.1f} MiB + adapters [{adapters or 'none'}] MiB "
            f"= {self.total_bytes / 2**20:.1f} MiB"
        )


def _shared_module_tree(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of ``model``'s modules whose parameters and buffers are ``model``'s own
    tensors (deepcopy with every tensor pre-entered in the memo): no weight is copied."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


class LoraEngine(GenerationEngine):
    """A generation engine over one base model and its LoRA adapters, batching across them.

    Requests name their adapter (:meth:`GenerationEngine.submit`'s ``adapter``; None: the base
    model); requests with the same settings are batched whatever their adapters, and each
    answer's ``batch_adapters`` lists the adapter of every row. Greedy answers equal those of
    the base with only that adapter loaded, up to float rounding (tested exactly in float32).

    Get the engine of a base with :meth:`for_model` or :meth:`from_chat_model`: one engine per
    base model object, so every adapter of a base shares its weights and its batches. Adapters
    must be plain LoRA (no DoRA or other PEFT methods: PEFT mixes only those in a batch).
    """

    _lora_engines: ClassVar[weakref.WeakValueDictionary[int, LoraEngine]] = (
        weakref.WeakValueDictionary()
    )

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Serve ``model``'s weights (shared, not copied) with a private copy of
        ``tokenizer``; prefer :meth:`for_model`, which gives one engine per base."""
        # Its own tokenizer too: a fast tokenizer must not be used by two workers at once.
        super().__init__(_shared_module_tree(model), copy.deepcopy(tokenizer))
        self._base = weakref.ref(model)
        self._base_name = str(model.name_or_path or "")
        self._sources: dict[str, str] = {}
        # Loading an adapter adds modules the worker's forward pass reads: never both at once.
        self._model_lock = threading.Lock()

    @classmethod
    def for_model(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> LoraEngine:
        """The LoRA engine over ``model``'s weights, created on first use."""
        with cls._registry_lock:
            engine = cls._lora_engines.get(id(model))
            if engine is None or engine.closed or engine._base() is not model:
                engine = cls(model, tokenizer)
                cls._lora_engines[id(model)] = engine
            return engine

    @classmethod
    def from_chat_model(cls, llm: object) -> LoraEngine:
        """The LoRA engine over the model ``llm`` serves (``llm``'s own engine if it is one).

        Raises:
            TypeError: ``llm`` is not a local transformers chat model with a resident model
                (e.g. a pooled one).
        """
        engine = getattr(llm, "engine", None)
        if isinstance(engine, LoraEngine):
            return engine
        if not isinstance(engine, GenerationEngine) or engine.model is None:
            raise TypeError(
                "LoRA adapters need a local transformers base model (ChatLocalHuggingFace), "
                f"got {type(llm).__name__}"
            )
        return cls.for_model(engine.model, engine.tokenizer)

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> the path or hub id each was loaded from."""
        return dict(self._sources)

    def load_adapter(self, name: str, source: str | Path) -> None:
        """Load the LoRA adapter at ``source`` (a folder, or a hub repo) as ``name``.

        Loading a name again from the same source does nothing.

        Raises:
            ValueError: ``name`` is empty, reserved, contains ``.`` or is loaded from another
                source; the adapter is not plain LoRA; or it does not fit the base model.
            ModelNotFoundError: no adapter is found at ``source``.
        """
        source = str(source)
        if not name.strip() or name == BASE_ADAPTER or "." in name:
            raise ValueError(
                f"invalid adapter name {name!r}: it must be non-empty, contain no '.' and not "
                f"be {BASE_ADAPTER!r}"
            )
        with self._model_lock:
            if name in self._sources:
                if self._sources[name] != source:
                    raise ValueError(
                        f"adapter {name!r} is already loaded from {self._sources[name]}"
                    )
                return
            config = _read_lora_config(name, source)
            from peft import PeftModel

            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(source, adapter_name=name, is_trainable=False)
                else:
                    # The PEFT wrapper stands in for the model from now on.
                    self.model = PeftModel.from_pretrained(  # type: ignore[assignment]
                        self.model, source, adapter_name=name, is_trainable=False, config=config
                    )
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ValueError(
                    f"LoRA adapter {name!r} ({source}) does not fit the base model "
                    f"{self._base_name or '(unnamed)'}: {exc}"
                ) from exc
            # PEFT refuses adapter_names in training mode.
            self.model.eval()
            self._sources[name] = source

    def chat_model(
        self, adapter: str | None = None, source: str | Path | None = None, **kwargs: Any
    ) -> ChatLocalHuggingFace:
        """A chat model answering with ``adapter`` (None: the base model), loading it from
        ``source`` first when given. ``kwargs`` set the chat model's fields
        (``max_new_tokens``, ``model_id``, ...); ``model_id`` defaults to the adapter's
        source (the base's name for the base).

        Raises:
            ValueError: ``adapter`` is not loaded and no ``source`` is given (and the errors
                of :meth:`load_adapter`).
        """
        if adapter is not None:
            if source is not None:
                self.load_adapter(adapter, source)
            self._check_adapter(adapter)
        kwargs.setdefault("model_id", self._sources.get(adapter or "", self._base_name) or None)
        return ChatLocalHuggingFace(engine=self, adapter=adapter, **kwargs)

    def memory(self) -> LoraMemory:
        """The base weights (counted once) and each adapter's, in bytes."""
        per_adapter = dict.fromkeys(self._sources, 0)
        for adapter, tensor in self._adapter_tensors():
            per_adapter[adapter] += tensor.numel() * tensor.element_size()
        total = model_bytes(self.model)
        return LoraMemory(base_bytes=total - sum(per_adapter.values()), adapter_bytes=per_adapter)

    def _adapter_tensors(self) -> Iterator[tuple[str, Any]]:
        # PEFT keys every adapter weight by its name under a "lora_*" module, e.g.
        # "...q_proj.lora_A.math.weight" or "...embed_tokens.lora_embedding_A.math".
        for name, parameter in self.model.named_parameters():
            parts = name.split(".")
            for kind, adapter in itertools.pairwise(parts):
                if kind.startswith("lora_") and adapter in self._sources:
                    yield adapter, parameter
                    break

    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None and adapter not in self._sources:
            known = ", ".join(self._sources) or "none"
            raise ValueError(f"unknown LoRA adapter {adapter!r} (loaded: {known})")

    def _batch_generate_kwargs(self, batch: list[Any]) -> dict[str, Any]:
        return {"adapter_names": [r.adapter or BASE_ADAPTER for r in batch]}

    def _generate(
        self, conversations: Any, settings: Any, **model_kwargs: Any
    ) -> list[tuple[str, int, int, str]]:
        with self._model_lock:
            if not self._sources:  # no adapter yet: the plain model, which takes no names
                model_kwargs.pop("adapter_names", None)
            return super()._generate(conversations, settings, **model_kwargs)


def _read_lora_config(name: str, source: str) -> Any:
    """The adapter's PEFT config, checked to be one PEFT can mix in a batch."""
    from peft import PeftConfig

    path = Path(source).expanduser()
    local = path.exists() or source.startswith(("/", ".", "~")) or source.count("/") > 1
    if local and not (path / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"LoRA adapter {name!r}: no adapter_config.json in {path}")
    try:
        config = PeftConfig.from_pretrained(str(path) if local else source)
    except (OSError, ValueError) as exc:  # PEFT reports a missing hub repo as ValueError
        raise ModelNotFoundError(f"LoRA adapter {name!r}: cannot load {source}: {exc}") from exc
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    if peft_type != "LORA" or getattr(config, "use_dora", False):
        kind = "DoRA" if peft_type == "LORA" else peft_type
        raise ValueError(
            f"adapter {name!r} ({source}) is {kind}; only plain LoRA adapters can share batches"
        )
    return config


__all__ = ["BASE_ADAPTER", "LoraEngine", "LoraMemory"]
