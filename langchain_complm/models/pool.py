"""A memory budget for local models: :class:`ModelPool` keeps models resident within a budget.

A model is loaded when a call needs it, and least-recently-used idle models are unloaded to
make room. Its chat models (:meth:`ModelPool.chat_model`, :class:`ChatPooledHuggingFace`) plug
into ``Expert(llm=...)`` and report ``load_time_s`` in every reply's ``response_metadata``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import Field

from langchain_complm.concurrency import device_key, result_unless_cancelled
from langchain_complm.errors import MemoryBudgetError
from langchain_complm.models.huggingface import (
    ChatLocalHuggingFace,
    GenerationEngine,
    resolve_source,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


logger = logging.getLogger(__name__)


# --- memory budget ------------------------------------------------------------------------------

Loader = Callable[[], "tuple[PreTrainedModel, PreTrainedTokenizerBase]"]
"""Loads one model: returns ``(model, tokenizer)``, the model in eval mode on its device."""


def model_bytes(model: Any) -> int:
    """Bytes held by a model's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def estimate_model_bytes(
    model_id: str,
    *,
    torch_dtype: Any = None,
    gguf_file: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """``(bytes, parameters)`` a causal LM will take once loaded, without loading it.

    The model is built from its config on the ``meta`` device (no memory, about a second),
    and its parameters are counted × the bytes of ``torch_dtype`` (default float32, as
    :func:`~langchain_complm.models.huggingface.load_causal_lm` loads; ``"auto"`` reads the config).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source, gguf_file = resolve_source(model_id, gguf_file)
    config_args: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    for name in ("trust_remote_code", "revision"):
        if model_kwargs and name in model_kwargs:
            config_args[name] = model_kwargs[name]
    config = AutoConfig.from_pretrained(source, **config_args)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    skeleton.tie_weights()
    parameters = sum(p.numel() for p in skeleton.parameters())
    dtype = torch_dtype
    if dtype == "auto":
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    itemsize = torch.empty((), dtype=dtype or torch.float32).element_size()
    buffers = sum(b.numel() * b.element_size() for b in skeleton.buffers())
    return parameters * itemsize + buffers, parameters


@dataclass
class PoolModelStats:
    """What a :class:`ModelPool` knows about one of its models."""

    name: str
    state: Literal["unloaded", "loading", "resident"]
    size_bytes: int | None
    """Measured once loaded; before that the estimate (None when unknown)."""
    parameters: int | None
    users: int
    """Calls holding the model now."""
    loads: int
    evictions: int
    load_time_s: float
    """Seconds spent loading it, over all loads."""


@dataclass(eq=False)
class _Entry:
    name: str
    loader: Loader
    estimator: Callable[[], tuple[int, int]] | None
    size_bytes: int | None = None
    parameters: int | None = None
    state: Literal["unloaded", "loading", "resident"] = "unloaded"
    model: Any = None
    tokenizer: Any = None
    engine: GenerationEngine | None = None
    users: int = 0
    loads: int = 0
    evictions: int = 0
    load_time_s: float = 0.0
    reserved: int = 0
    """Bytes counted against the budget for this model (while loading or resident)."""
    options: tuple[Any, ...] = ()
    """How it was registered, to reject a second registration that differs."""


@dataclass(eq=False)
class ModelLease:
    """A model held resident for one call; release it (or use ``with``) when done.

    ``load_time_s`` is how long getting the model took: 0 when it was resident, else the
    time spent loading it (or waiting for another call's load, or for memory to free up).
    ``evicted`` names the models unloaded to make room for it.
    """

    pool: ModelPool
    name: str
    engine: GenerationEngine
    model: Any
    tokenizer: Any
    load_time_s: float = 0.0
    evicted: tuple[str, ...] = ()
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        """Give the model back to the pool (idempotent)."""
        if not self._released:
            self._released = True
            self.pool._release(self.name)

    def __enter__(self) -> ModelLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _free(entries: list[tuple[GenerationEngine | None, Any, Any]]) -> None:
    """Stop engines and drop the last references to their weights."""
    if not entries:
        return
    devices = set()
    for engine, model, _tokenizer in entries:
        if model is not None:
            devices.add(device_key(model.device))
        if engine is not None:
            engine.close()
    entries.clear()
    del engine, model, _tokenizer
    gc.collect()
    if any(d.startswith("cuda") for d in devices):
        import torch

        torch.cuda.empty_cache()


def _release_when_granted(future: asyncio.Future[ModelLease]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().release()


class ModelPool:
    """Local models kept resident within a memory budget, loaded when a call needs them.

    Register models by name (:meth:`register`, or implicitly with :meth:`chat_model`); the
    pool loads a model on its first use. When loading one would put the resident models over
    ``budget_bytes``, the least recently used models that no call is using are unloaded first
    (engine stopped, weights released, ``gc.collect()``); if the models in use leave too
    little room, the call waits until they are released. Sizes are estimated before the first
    load (parameters × dtype bytes, from the config on the ``meta`` device) and measured after
    it; a model with a custom ``loader`` and no ``size_bytes`` is measured after its first
    load, and idle models are then unloaded to get back under the budget.

    Thread-safe; async callers wait without blocking their event loop. ``budget_bytes=None``
    loads lazily and never evicts.

    Example:
        .. code-block:: python

            pool = ModelPool(budget_bytes=1_200_000_000)
            math = Expert(name="math", llm=pool.chat_model(math_dir, max_new_tokens=64))
            code = Expert(name="code", llm=pool.chat_model(code_dir, max_new_tokens=64))
    """

    def __init__(self, budget_bytes: float | None, *, wait_timeout: float | None = None) -> None:
        """``wait_timeout``: most seconds a call waits for memory; None waits as long as it
        takes (the models in use are released when their calls end)."""
        if budget_bytes is not None and budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
        self.budget_bytes = None if budget_bytes is None else int(budget_bytes)
        self.wait_timeout = wait_timeout
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()  # least recently used first

    # --- registration ---------------------------------------------------------------------

    def register(
        self,
        name: str,
        model_id: str | None = None,
        *,
        loader: Loader | None = None,
        size_bytes: int | None = None,
        device: str | None = None,
        torch_dtype: Any = None,
        gguf_file: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        tokenizer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Make ``name`` loadable: from ``model_id`` (hub id or folder, default ``name``)
        with :func:`~langchain_complm.models.huggingface.load_causal_lm`, or by calling ``loader``.

        Registering a name again with the same arguments does nothing.

        Raises:
            ValueError: ``name`` is registered with other arguments, or both ``model_id``
                and ``loader`` are given.
            MemoryBudgetError: ``size_bytes`` is over the budget.
        """
        if loader is not None and model_id is not None:
            raise ValueError("give model_id or loader, not both")
        options = (
            model_id,
            loader,
            size_bytes,
            device,
            str(torch_dtype),
            gguf_file,
            tuple(sorted((model_kwargs or {}).items())),
            tuple(sorted((tokenizer_kwargs or {}).items())),
        )
        estimator = None
        if loader is None:
            source = model_id or name

            def loader() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
                from langchain_complm.models.huggingface import load_causal_lm

                return load_causal_lm(
                    source,
                    gguf_file=gguf_file,
                    device=device,
                    torch_dtype=torch_dtype,
                    model_kwargs=model_kwargs,
                    tokenizer_kwargs=tokenizer_kwargs,
                    shared=False,  # the pool frees what it loads: nobody else may hold it
                )

            def estimator() -> tuple[int, int]:
                return estimate_model_bytes(
                    source, torch_dtype=torch_dtype, gguf_file=gguf_file, model_kwargs=model_kwargs
                )

        self._check_fits(name, size_bytes)
        with self._cond:
            existing = self._entries.get(name)
            if existing is not None:
                if existing.options != options:
                    raise ValueError(f"model {name!r} is already registered with other arguments")
                return
            self._entries[name] = _Entry(
                name=name,
                loader=loader,
                estimator=estimator,
                size_bytes=size_bytes,
                options=options,
            )

    def chat_model(
        self,
        model_id: str,
        *,
        name: str | None = None,
        loader: Loader | None = None,
        size_bytes: int | None = None,
        device: str | None = None,
        torch_dtype: Any = None,
        gguf_file: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        tokenizer_kwargs: Mapping[str, Any] | None = None,
        **chat_kwargs: Any,
    ) -> ChatPooledHuggingFace:
        """A chat model over pooled ``model_id``, for ``Expert(llm=...)``; loads nothing yet.

        ``model_id`` is registered under ``name`` (default: itself) unless it already is;
        the loading arguments are those of :meth:`register` (with ``loader``, ``model_id``
        is only the name reported in ``response_metadata``). ``chat_kwargs`` set the chat
        model's fields (``max_new_tokens``, ``stop``, ``max_batch_size``, ...). Chat models
        over one pooled model share its engine, so their concurrent calls are batched.
        """

        key = name or model_id
        if loader is not None:
            self.register(key, loader=loader, size_bytes=size_bytes)
        elif key not in self._entries or any(
            v is not None
            for v in (size_bytes, device, torch_dtype, gguf_file, model_kwargs, tokenizer_kwargs)
        ):
            self.register(
                key,
                model_id,
                size_bytes=size_bytes,
                device=device,
                torch_dtype=torch_dtype,
                gguf_file=gguf_file,
                model_kwargs=model_kwargs,
                tokenizer_kwargs=tokenizer_kwargs,
            )
        return ChatPooledHuggingFace(pool=self, pool_key=key, model_id=model_id, **chat_kwargs)

    def _check_fits(self, name: str, size: int | None) -> None:
        if size is not None and self.budget_bytes is not None and size > self.budget_bytes:
            raise MemoryBudgetError(
                f"model {name!r} needs {size / 2**20:.1f} MiB, more than the pool's whole "
                f"budget of {self.budget_bytes / 2**20:.1f} MiB"
            )

    # --- leases -----------------------------------------------------------------------------

    def acquire(self, name: str, timeout: float | None = None) -> ModelLease:
        """Hold model ``name`` resident, loading it (and evicting others) if needed.

        ``timeout`` (default: the pool's ``wait_timeout``) bounds the wait for memory or for
        another call's load of the same model.

        Raises:
            KeyError: ``name`` is not registered.
            MemoryBudgetError: the model is larger than the whole budget.
            TimeoutError: the wait timed out.
        """
        started = time.perf_counter()
        timeout = self.wait_timeout if timeout is None else timeout
        deadline = None if timeout is None else started + timeout
        entry = self._entry(name)
        self._estimate(entry)
        to_free: list[tuple[GenerationEngine | None, Any, Any]] = []
        evicted: list[str] = []
        waited = False
        with self._cond:
            while True:
                if entry.state == "resident":
                    entry.users += 1
                    self._lru.move_to_end(name)
                    load_time = time.perf_counter() - started if waited else 0.0
                    return self._lease(entry, load_time, ())
                if entry.state == "unloaded":
                    self._check_fits(name, entry.size_bytes)
                    victims = self._victims(entry.size_bytes or 0, exclude=name)
                    if victims is not None:
                        for victim in victims:
                            to_free.append(self._evict_locked(victim))
                            evicted.append(victim.name)
                        entry.state = "loading"
                        entry.reserved = entry.size_bytes or 0
                        break
                waited = True
                remaining = None if deadline is None else deadline - time.perf_counter()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"timed out waiting for model {name!r} to be resident")
                self._cond.wait(remaining)
        return self._load(entry, started, evicted, to_free)

    def _estimate(self, entry: _Entry) -> None:
        """Estimate the size of a model that was never loaded (outside the pool's lock)."""
        if entry.size_bytes is not None or entry.estimator is None or entry.state != "unloaded":
            return
        try:
            size, parameters = entry.estimator()
        except Exception as exc:  # measured after loading instead
            logger.warning("could not estimate the size of %s: %s", entry.name, exc)
            entry.estimator = None
            return
        with self._cond:
            if entry.size_bytes is None:
                entry.size_bytes, entry.parameters = size, parameters

    async def aacquire(self, name: str, timeout: float | None = None) -> ModelLease:
        """:meth:`acquire` without blocking the event loop (the wait runs in a thread)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self.acquire, name, timeout)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The lease may still arrive: release it then, or the model stays pinned.
            future.add_done_callback(_release_when_granted)
            raise

    def _load(
        self,
        entry: _Entry,
        started: float,
        evicted: list[str],
        to_free: list[tuple[GenerationEngine | None, Any, Any]],
    ) -> ModelLease:

        _free(to_free)
        t0 = time.perf_counter()
        try:
            logger.info("loading pooled model %s", entry.name)
            model, tokenizer = entry.loader()
            engine = GenerationEngine.for_model(model, tokenizer)
            size = model_bytes(model)
            parameters = int(sum(p.numel() for p in model.parameters()))
        except BaseException:
            with self._cond:
                entry.state = "unloaded"
                entry.reserved = 0
                self._cond.notify_all()
            raise
        elapsed = time.perf_counter() - t0
        with self._cond:
            entry.model, entry.tokenizer, entry.engine = model, tokenizer, engine
            entry.size_bytes, entry.parameters = size, parameters
            entry.reserved = size
            entry.state = "resident"
            entry.users += 1
            entry.loads += 1
            entry.load_time_s += elapsed
            self._lru[entry.name] = None
            self._lru.move_to_end(entry.name)
            # The estimate was missing or off: unload idle models to get back under budget.
            if self.budget_bytes is not None and self._reserved() > self.budget_bytes:
                for victim in self._victims(0, exclude=entry.name, partial=True) or []:
                    to_free.append(self._evict_locked(victim))
                    evicted.append(victim.name)
                if self._reserved() > self.budget_bytes:
                    logger.warning(
                        "model pool over budget: %.1f MiB resident, budget %.1f MiB",
                        self._reserved() / 2**20,
                        self.budget_bytes / 2**20,
                    )
            self._cond.notify_all()
            lease = self._lease(entry, time.perf_counter() - started, tuple(evicted))
        _free(to_free)
        return lease

    def _lease(self, entry: _Entry, load_time: float, evicted: tuple[str, ...]) -> ModelLease:
        assert entry.engine is not None
        return ModelLease(
            pool=self,
            name=entry.name,
            engine=entry.engine,
            model=entry.model,
            tokenizer=entry.tokenizer,
            load_time_s=load_time,
            evicted=evicted,
        )

    def _release(self, name: str) -> None:
        with self._cond:
            entry = self._entries[name]
            entry.users -= 1
            if name in self._lru:
                self._lru.move_to_end(name)
            self._cond.notify_all()

    # --- eviction ---------------------------------------------------------------------------

    def _reserved(self) -> int:
        return sum(e.reserved for e in self._entries.values())

    def _victims(self, size: int, *, exclude: str, partial: bool = False) -> list[_Entry] | None:
        """Idle resident models to unload, least recently used first, so that ``size`` more
        bytes fit; None if that is impossible now (``partial``: as many as help)."""
        if self.budget_bytes is None:
            return []
        excess = self._reserved() + size - self.budget_bytes
        victims: list[_Entry] = []
        for name in self._lru:
            if excess <= 0:
                break
            entry = self._entries[name]
            if name != exclude and entry.state == "resident" and entry.users == 0:
                victims.append(entry)
                excess -= entry.reserved
        return victims if excess <= 0 or partial else None

    def _evict_locked(self, entry: _Entry) -> tuple[GenerationEngine | None, Any, Any]:
        freed = (entry.engine, entry.model, entry.tokenizer)
        entry.engine = entry.model = entry.tokenizer = None
        entry.state = "unloaded"
        entry.reserved = 0
        entry.evictions += 1
        self._lru.pop(entry.name, None)
        logger.info("unloading pooled model %s", entry.name)
        return freed

    # --- management -------------------------------------------------------------------------

    def load(self, name: str) -> float:
        """Make ``name`` resident now (e.g. to warm up); seconds it took (0 if resident)."""
        with self.acquire(name) as lease:
            return lease.load_time_s

    def unload(self, name: str) -> bool:
        """Unload ``name`` if it is resident and idle; whether it was unloaded."""
        with self._cond:
            entry = self._entry(name)
            if entry.state != "resident" or entry.users:
                return False
            freed = [self._evict_locked(entry)]
            self._cond.notify_all()
        _free(freed)
        return True

    def clear(self) -> list[str]:
        """Unload every idle model; the names unloaded."""
        return [name for name in list(self._lru) if self.unload(name)]

    def num_parameters(self, name: str) -> int:
        """Parameters of model ``name`` (estimated, or loaded to count them)."""
        entry = self._entry(name)
        self._estimate(entry)
        if entry.parameters is None:
            self.load(name)
        assert entry.parameters is not None
        return entry.parameters

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"model {name!r} is not registered in this pool") from None

    @property
    def resident(self) -> list[str]:
        """Names of the resident models, least recently used first."""
        with self._cond:
            return list(self._lru)

    @property
    def resident_bytes(self) -> int:
        """Bytes counted against the budget now (resident and loading models)."""
        with self._cond:
            return self._reserved()

    @property
    def stats(self) -> dict[str, PoolModelStats]:
        """A snapshot per registered model."""
        with self._cond:
            return {
                e.name: PoolModelStats(
                    name=e.name,
                    state=e.state,
                    size_bytes=e.size_bytes,
                    parameters=e.parameters,
                    users=e.users,
                    loads=e.loads,
                    evictions=e.evictions,
                    load_time_s=e.load_time_s,
                )
                for e in self._entries.values()
            }

    def __repr__(self) -> str:
        budget = "None" if self.budget_bytes is None else f"{self.budget_bytes / 2**20:.0f} MiB"
        return f"ModelPool(budget={budget}, resident={self.resident})"


class ChatPooledHuggingFace(ChatLocalHuggingFace):
    """A :class:`ChatLocalHuggingFace` whose model lives in a
    :class:`~langchain_complm.models.pool.ModelPool`: it is loaded when a call needs it and may
    be unloaded between calls to keep the pool within its memory budget.

    Make one with :meth:`ModelPool.chat_model <langchain_complm.models.pool.ModelPool.chat_model>`.
    Each call holds the model resident while it runs. Besides the usual metadata, every
    reply's ``response_metadata`` has ``load_time_s`` (0 when the model was resident) and,
    when making room unloaded other models, ``evicted`` (their names).
    """

    engine: GenerationEngine | None = Field(  # type: ignore[assignment]
        default=None, exclude=True, repr=False
    )
    """Unused: the engine comes from the pool for each call."""
    pool: ModelPool = Field(exclude=True, repr=False)
    pool_key: str
    """The model's name in the pool."""

    @property
    def num_parameters(self) -> int:
        """Number of parameters of the model (estimated, or loaded to count them)."""
        return self.pool.num_parameters(self.pool_key)

    @property
    def batch_group(self) -> tuple[Hashable, ...]:
        # The engine changes as the model is unloaded and reloaded; its pooled name does not.
        _, *settings = super().batch_group
        return (self.pool, self.pool_key, *settings)

    @property
    def _llm_type(self) -> str:
        return "local-huggingface-pooled"

    def _lease_metadata(self, load_time_s: float, evicted: tuple[str, ...]) -> dict[str, Any]:
        return {"load_time_s": load_time_s, **({"evicted": list(evicted)} if evicted else {})}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self.pool.acquire(self.pool_key) as lease:
            output = result_unless_cancelled(self._submit(messages, stop, kwargs, lease.engine))
        return self._to_result(output, self._lease_metadata(lease.load_time_s, lease.evicted))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        lease = await self.pool.aacquire(self.pool_key)
        try:
            future = self._submit(messages, stop, kwargs, lease.engine)
            output = await asyncio.wrap_future(future)
        finally:
            lease.release()
        return self._to_result(output, self._lease_metadata(lease.load_time_s, lease.evicted))


__all__ = [
    "ChatPooledHuggingFace",
    "Loader",
    "MemoryBudgetError",
    "ModelLease",
    "ModelPool",
    "PoolModelStats",
    "estimate_model_bytes",
    "model_bytes",
]
