"""LoRA experts: many adapters over one base model, answered together by one engine.

Comp-LLM's experts are often fine-tunes of one model family. Loaded as separate models, each
expert costs a copy of the weights and has its own :class:`GenerationEngine`; engines on one
device take turns, so a fan-out over different experts barely overlaps. A
:class:`LoraEngine` holds one base model with any number of LoRA adapters and answers a batch
whose rows use different adapters in one ``generate``: the base layers run once for the whole
batch, and each LoRA layer adds every row's own low-rank update with two batched matrix
products over that row's adapter weights (the gathered matmul of Punica and S-LoRA).

PEFT loads and checks the adapters (PeftModel, so any adapter PEFT saves loads here), but its
own LoRA computation is switched off: PEFT's mixed-adapter batches (``adapter_names``) gather
and scatter every adapter's rows in every layer, which made a 4-adapter batch of SmolLM2 about
1.4x slower than this path (same tokens). Each LoRA layer's adapter weights live in one
stacked tensor (row 0 is zeros: the base model), and PEFT's parameters are views into it, so
nothing is stored twice.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_complm.errors import ModelNotFoundError
from langchain_complm.models.huggingface import ChatLocalHuggingFace, GenerationEngine
from langchain_complm.models.pool import model_bytes

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class LoraMemory:
    """Bytes held by a :class:`LoraEngine`: the base model's weights once, each adapter's
    weights, and the zeros that pad the stacked adapter weights (the base's row, and ranks
    below the largest)."""

    base_bytes: int
    adapter_bytes: dict[str, int]
    padding_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Everything the engine holds."""
        return self.base_bytes + sum(self.adapter_bytes.values()) + self.padding_bytes

    def describe(self) -> str:
        """One line, in MiB: base, adapters, padding and total."""
        adapters = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in self.adapter_bytes.items())
        return (
            f"base {self.base_bytes / 2**20:.1f} MiB + adapters [{adapters or 'none'}] MiB "
            f"+ padding {self.padding_bytes / 2**20:.2f} MiB = {self.total_bytes / 2**20:.1f} MiB"
        )


def _shared_module_tree(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of ``model``'s modules whose parameters and buffers are ``model``'s own
    tensors (deepcopy with every tensor pre-entered in the memo): no weight is copied."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


@dataclass
class _Stack:
    """One LoRA layer's adapters, stacked: row ``k`` holds adapter ``k`` (row 0, the base
    model, and the layers an adapter does not adapt, are zeros)."""

    a: torch.Tensor
    """``[adapters + 1, in, rank]``: each adapter's A, transposed, padded to the rank."""
    b: torch.Tensor
    """``[adapters + 1, rank, out]``: each adapter's B, transposed."""
    scaling: torch.Tensor
    """``[adapters + 1]``: each adapter's ``alpha / r`` (PEFT's, rsLoRA included)."""


class _RowAdapters:
    """The forward of a PEFT LoRA layer while the engine serves it: the base layer's output
    plus each row's own adapter update, ``(x @ A_row) @ (B_row * scaling_row)``.

    It replaces the layer's forward: PEFT's checks and a forward hook over SmolLM2's 210 LoRA
    layers made a single-row generate on CPU 38 % slower than the merged model (14 % with this
    forward on that machine, 36 % on a faster one where the two small products weigh more;
    docs/benchmarks-lora.md); the update is one
    ``bmm`` and one fused ``baddbmm``, with each row's scaling folded into its B once per
    batch.
    """

    def __init__(self, base_layer: Any) -> None:
        self.base_layer = base_layer
        self.stack: _Stack | None = None
        self.rows: tuple[torch.Tensor, torch.Tensor] | None = None

    def select(self, index: torch.Tensor | None) -> None:
        """Use the adapters ``index`` (one stack row per batch row; None: none) from now on."""
        if index is None or self.stack is None:
            self.rows = None
            return
        stack = self.stack
        scaling = stack.scaling.index_select(0, index)[:, None, None]
        self.rows = (stack.a.index_select(0, index), stack.b.index_select(0, index) * scaling)

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        output = self.base_layer(x, *args, **kwargs)
        if self.rows is None:
            return output  # type: ignore[no-any-return]
        import torch

        a, b = self.rows
        if x.dim() != 3 or x.shape[0] != a.shape[0]:
            raise RuntimeError(
                f"per-row LoRA needs [batch, tokens, features] inputs of {a.shape[0]} rows, "
                f"got {tuple(x.shape)}"
            )
        if x.dtype != a.dtype:
            x = x.to(a.dtype)
        low = torch.bmm(x, a)
        if output.dtype != a.dtype:
            return output + torch.bmm(low, b).to(output.dtype)
        return torch.baddbmm(output, low, b)


class LoraEngine(GenerationEngine):
    """A generation engine over one base model and its LoRA adapters, batching across them.

    Requests name their adapter (:meth:`GenerationEngine.submit`'s ``adapter``; None: the base
    model); requests with the same settings are batched whatever their adapters, and each
    answer's ``batch_adapters`` lists the adapter of every row. Greedy answers equal those of
    the base with only that adapter loaded (tested exactly in float32).

    Get the engine of a base with :meth:`for_model` or :meth:`from_chat_model`: one engine per
    base model object, so every adapter of a base shares its weights and its batches. Adapters
    must be plain LoRA on linear layers (no DoRA, LoRA bias, embedding or convolution LoRA,
    or other PEFT methods), on a model whose linear layers see ``[batch, tokens, features]``
    inputs (Llama, Mistral, Qwen, ... all do).
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
        """Adapter name -> source; the order gives the stack rows (1, 2, ...)."""
        self._row_forwards: dict[Any, _RowAdapters] = {}
        """The per-row forward of each PEFT LoRA layer."""
        # Loading an adapter rebuilds the stacks the worker's forward pass reads: never both.
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

    def close(self, timeout: float | None = None) -> None:
        """Stop the engine and drop the model, its adapters and their stacked weights."""
        super().close(timeout)
        self._row_forwards.clear()

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> the path or hub id each was loaded from."""
        return dict(self._sources)

    def load_adapter(self, name: str, source: str | Path) -> None:
        """Load the LoRA adapter at ``source`` (a folder, or a hub repo) as ``name``.

        Loading a name again from the same source does nothing.

        Raises:
            ValueError: ``name`` is empty or contains ``.`` or is loaded from another source;
                the adapter is not plain LoRA on linear layers; or it does not fit the base.
            ModelNotFoundError: no adapter is found at ``source``.
        """
        source = str(source)
        if not name.strip() or "." in name:
            raise ValueError(f"invalid adapter name {name!r}: it must be non-empty, without '.'")
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
            self.model.eval()
            try:
                self._restack([*self._sources, name])
            except ValueError:
                self.model.delete_adapter(name)  # type: ignore[operator]
                self._restack(list(self._sources))
                raise
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
        """The base weights (counted once), each adapter's and the stacks' padding, in bytes."""
        with self._model_lock:
            per_adapter = dict.fromkeys(self._sources, 0)
            for name, parameter in self.model.named_parameters():
                adapter = _adapter_of(name, per_adapter)
                if adapter is not None:
                    per_adapter[adapter] += parameter.numel() * parameter.element_size()
            lora = sum(per_adapter.values())
            base = model_bytes(self.model) - lora  # PEFT's parameters are views of the stacks
            stacked = sum(
                t.numel() * t.element_size()
                for forward in self._row_forwards.values()
                if forward.stack is not None
                for t in (forward.stack.a, forward.stack.b, forward.stack.scaling)
            )
        return LoraMemory(base_bytes=base, adapter_bytes=per_adapter, padding_bytes=stacked - lora)

    def _restack(self, names: Sequence[str]) -> None:
        """Stack the weights of ``names`` (rows 1, 2, ...) in every LoRA layer and make PEFT's
        parameters views of the stacks; PEFT's own LoRA computation is switched off."""
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer

        module: Any
        for module_name, module in self.model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            if not isinstance(module, LoraLinear) or module.lora_embedding_A:
                raise ValueError(
                    f"LoRA on {module_name} ({type(module).__name__}) is not supported"
                )
            # Variants (DoRA, ...) and a bias on B change the update: not computed here.
            variants = {**getattr(module, "lora_variant", {}), **getattr(module, "use_dora", {})}
            for name in names:
                if variants.get(name) or getattr(module, "lora_bias", {}).get(name, False):
                    raise ValueError(
                        f"adapter {name!r}: DoRA, LoRA variants and LoRA bias are not supported"
                    )
            forward = self._row_forwards.get(module)
            if forward is None:
                forward = self._row_forwards[module] = _RowAdapters(module.base_layer)
                module.forward = forward  # type: ignore[method-assign]  # per instance: the class keeps its own
            module.enable_adapters(False)  # the engine computes the LoRA updates instead
            forward.stack = _stack(module, names)

    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None and adapter not in self._sources:
            known = ", ".join(self._sources) or "none"
            raise ValueError(f"unknown LoRA adapter {adapter!r} (loaded: {known})")

    def _batch_generate_kwargs(self, batch: list[Any]) -> dict[str, Any]:
        return {"adapters": [r.adapter for r in batch]}

    def _generate(
        self, conversations: Any, settings: Any, **model_kwargs: Any
    ) -> list[tuple[str, int, int, str]]:
        import torch

        adapters: list[str | None] = model_kwargs.pop("adapters", [None] * len(conversations))
        with self._model_lock:
            rows = {n: k for k, n in enumerate(self._sources, start=1)}
            index = None
            if any(adapters):
                index = torch.tensor([rows[a] if a else 0 for a in adapters], device=self.device)
            for forward in self._row_forwards.values():
                forward.select(index)
            try:
                return super()._generate(conversations, settings, **model_kwargs)
            finally:
                for forward in self._row_forwards.values():
                    forward.select(None)


def _stack(layer: Any, names: Sequence[str]) -> _Stack | None:
    """The stacked weights of ``names`` in one PEFT LoRA layer (None if it adapts none of
    them); PEFT's parameters become views of the stack rows, so nothing is stored twice."""
    import torch

    present = [n for n in names if n in layer.lora_A]
    if not present:
        return None
    first = layer.lora_A[present[0]].weight
    rank = max(layer.lora_A[n].weight.shape[0] for n in present)
    width_in, width_out = first.shape[1], layer.lora_B[present[0]].weight.shape[0]
    rows = len(names) + 1
    a = torch.zeros(rows, width_in, rank, dtype=first.dtype, device=first.device)
    b = torch.zeros(rows, rank, width_out, dtype=first.dtype, device=first.device)
    scaling = torch.zeros(rows, dtype=first.dtype, device=first.device)
    for row, name in enumerate(names, start=1):
        if name not in layer.lora_A:
            continue
        a_param, b_param = layer.lora_A[name].weight, layer.lora_B[name].weight
        r = a_param.shape[0]
        a[row, :, :r] = a_param.detach().T
        b[row, :r, :] = b_param.detach().T
        scaling[row] = layer.scaling[name]
        # PEFT keeps [r, in] and [out, r]: transposed views of the stack rows.
        a_param.data = a[row, :, :r].T
        b_param.data = b[row, :r, :].T
    return _Stack(a=a, b=b, scaling=scaling)


def _adapter_of(parameter_name: str, adapters: dict[str, int]) -> str | None:
    """The adapter a PEFT parameter belongs to: its name has ``lora_A.<adapter>.weight``,
    ``lora_B.<adapter>.weight`` or the like."""
    parts = parameter_name.split(".")
    for kind, adapter in itertools.pairwise(parts):
        if kind.startswith("lora_") and adapter in adapters:
            return adapter
    return None


def _read_lora_config(name: str, source: str) -> Any:
    """The adapter's PEFT config, checked to be plain LoRA."""
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


__all__ = ["LoraEngine", "LoraMemory"]
