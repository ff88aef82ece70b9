"""Chat model over a local transformers causal LM, served by a shared micro-batching engine.

Comp-LLM runs several sub-queries at once, often on the same small expert model. On a CPU,
running ``generate`` from several threads over one model is slower than running the calls one
after another, while one batched ``generate`` over N prompts costs far less than N calls. So
every model gets one :class:`GenerationEngine`: a worker thread that owns the model and its
tokenizer, collects the requests that arrive together (from threads, ``batch()`` or asyncio
tasks) and answers them with one batched, left-padded ``generate`` call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field

from langchain_complm.batching import BatchCohort, current_cohort
from langchain_complm.concurrency import device_lock, result_unless_cancelled
from langchain_complm.models._grammar import schema_text
from langchain_complm.text import truncate_at_stop

if TYPE_CHECKING:
    import torch
    from transformers import (
        LogitsProcessorList,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        StoppingCriteriaList,
    )

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WINDOW_MS = 5.0
DEFAULT_BATCH_WINDOW_RATIO = 0.03
MAX_ADAPTIVE_WINDOW_MS = 150.0
"""Cap of the batch window that grows with a model's generate time (``batch_window_ratio``)."""
MAX_COHORT_WAIT_MS = 500.0
"""Cap of the wait for the missing members of a batch cohort."""

_IDLE_EXIT_S = 30.0
"""An idle worker thread exits after this long; the next request starts a new one."""

PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""Template used for tokenizers that ship none (base models): ``Role: text`` lines."""

_STOP_CACHE_SIZE = 32
"""Stop-string criteria kept per engine (one per distinct set of stop strings)."""

_PLAIN_TEMPLATE_STOP = ("\nUser:",)
"""Without a real template a model goes on to write the next user turn; cut it there."""

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings of one request; requests are only batched with equal settings."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    json_schema: str | None = None
    """A JSON schema (canonical JSON text) every reply is constrained to (see
    :mod:`~langchain_complm.models._grammar`); None: free text."""

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (stop strings and schema excluded)."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
        }
        # Sampling parameters are only passed when sampling: transformers warns otherwise.
        if self.do_sample:
            for name in ("temperature", "top_p", "top_k"):
                if (value := getattr(self, name)) is not None:
                    kwargs[name] = value
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


@dataclass(frozen=True)
class GenerationOutput:
    """The answer to one request and how it was produced."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    batch_size: int
    queue_wait_s: float
    """Seconds from submission to the start of ``generate`` (device wait included)."""
    generation_s: float
    device_wait_s: float = 0.0
    """Seconds the batch waited for its device (another model's ``generate`` on it)."""
    batch_adapters: tuple[str | None, ...] = ()
    """The LoRA adapter of each row of the batch (None: the model alone)."""


@dataclass
class EngineStats:
    """Cumulative counters of an engine, for benchmarks and tests."""

    requests: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    generation_s: float = 0.0
    device_wait_s: float = 0.0
    """Seconds batches waited for the device lock (see :mod:`langchain_complm.models.pool`)."""

    @property
    def generate_calls(self) -> int:
        """Number of ``generate`` calls made."""
        return len(self.batch_sizes)


@dataclass
class _Request:
    conversation: list[dict[str, str]]
    settings: GenerationSettings
    max_batch_size: int
    batch_window_s: float
    window_ratio: float = 0.0
    cohort: BatchCohort | None = None
    adapter: str | None = None
    future: Future[GenerationOutput] = field(default_factory=Future)
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple[GenerationSettings, int]:
        return self.settings, self.max_batch_size


class GenerationEngine:
    """Serves one model and tokenizer from a single worker thread, batching requests.

    The worker is the only thread that touches the model and the tokenizer, so ``generate``
    never runs twice at once on a model and a fast tokenizer is never shared across threads.
    It waits up to the first request's batch window for more requests with the same settings
    and batch limit, then answers them all with one ``generate`` call; requests with other
    settings wait for the next round, in arrival order.

    Get engines with :meth:`for_model`, which returns the one engine of a model object.
    A tokenizer without a chat template gets :data:`PLAIN_CHAT_TEMPLATE` (with a warning).

    Each ``generate`` call holds its device's lock
    (:func:`langchain_complm.models.pool.device_lock`), so engines of different models on one
    device take turns unless :func:`~langchain_complm.models.pool.set_device_concurrency`
    allows more. :meth:`close` stops the engine and drops its model (a model pool unloading
    it).
    """

    _registry: ClassVar[weakref.WeakValueDictionary[int, GenerationEngine]] = (
        weakref.WeakValueDictionary()
    )
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    _ids: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Wrap ``model`` and ``tokenizer``; prefer :meth:`for_model`, which shares engines."""
        self.model = model
        self.tokenizer = tokenizer
        self._extra_stop: tuple[str, ...] = ()
        if not getattr(tokenizer, "chat_template", None):
            warnings.warn(
                f"tokenizer of {model.name_or_path!r} has no chat template; "
                "using a plain 'Role: text' template",
                stacklevel=3,
            )
            tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
            self._extra_stop = _PLAIN_TEMPLATE_STOP
        if tokenizer.pad_token_id is None:
            # Left padding needs a pad token; the EOS token is the usual stand-in.
            tokenizer.pad_token = tokenizer.eos_token
        self._end_ids = _end_token_ids(model, tokenizer)
        self._grammar_tokenizer: Any = None  # llguidance's tokenizer, built on first use
        self._stop_cache: OrderedDict[tuple[str, ...], StoppingCriteriaList] = OrderedDict()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = False  # the worker saw close()'s wake-up and exits after its batch
        self._worker: threading.Thread | None = None
        self._stats = EngineStats()
        self._recent_generate_s = 0.0  # moving average of a generate call's duration
        self._name = f"complm-engine-{next(self._ids)}"

    @classmethod
    def for_model(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
    ) -> GenerationEngine:
        """The engine of ``model``, created on first use.

        Two chat models over the same model object share its engine, so their requests are
        batched together. A later call with another tokenizer object gets the existing engine.
        """
        with cls._registry_lock:
            engine = cls._registry.get(id(model))
            if engine is None or engine.model is not model:
                engine = cls(model, tokenizer)
                cls._registry[id(model)] = engine
            return engine

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (inputs are moved there)."""
        return self.model.device

    @property
    def num_parameters(self) -> int:
        """Number of parameters of the model."""
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def stats(self) -> EngineStats:
        """A snapshot of the cumulative counters."""
        with self._lock:
            return replace(self._stats, batch_sizes=list(self._stats.batch_sizes))

    def reset_stats(self) -> None:
        """Zero the cumulative counters."""
        with self._lock:
            self._stats = EngineStats()

    def submit(
        self,
        conversation: list[dict[str, str]],
        settings: GenerationSettings,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
        batch_window_ratio: float = 0.0,
        cohort: BatchCohort | None = None,
        adapter: str | None = None,
    ) -> Future[GenerationOutput]:
        """Queue one chat ``conversation`` (role/content dicts); the future gets the answer.

        ``max_batch_size`` caps the batch this request joins (1: never batched) and
        ``batch_window_ms`` is how long the worker waits for companions when it is first;
        ``batch_window_ratio`` lengthens that wait to this fraction of the engine's recent
        ``generate`` time (at most :data:`MAX_ADAPTIVE_WINDOW_MS`). A request of a
        ``cohort`` (:mod:`~langchain_complm.batching`) that is first waits for the cohort's
        other members up to the engine's recent ``generate`` time (at most
        :data:`MAX_COHORT_WAIT_MS`): waiting longer would cost more than a second call.
        Cancelling the future before its batch starts drops the request. ``adapter`` names
        the LoRA adapter to answer with, on an engine that serves adapters
        (:class:`~langchain_complm.models.lora.LoraEngine`); requests for different adapters
        share batches.

        Raises:
            RuntimeError: the engine is closed.
            ValueError: the engine has no adapter ``adapter``.
        """
        self._check_adapter(adapter)
        request = _Request(
            conversation=conversation,
            settings=settings,
            max_batch_size=max(1, max_batch_size),
            batch_window_s=max(0.0, batch_window_ms) / 1000,
            window_ratio=max(0.0, batch_window_ratio),
            cohort=cohort,
            adapter=adapter,
        )
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed (its model was unloaded)")
            self._queue.put(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._worker.start()
        return request.future

    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None:
            raise ValueError(f"{self._name} serves no LoRA adapters (asked for {adapter!r})")

    def _batch_generate_kwargs(self, batch: list[_Request]) -> dict[str, Any]:
        """Extra ``generate`` arguments for a batch (an adapter engine routes rows)."""
        return {}

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self, timeout: float | None = None) -> None:
        """Stop the engine: fail queued requests, let the running batch finish (waiting up to
        ``timeout`` seconds), and drop the model and tokenizer so their memory can be freed.

        Later :meth:`submit` calls raise ``RuntimeError``; closing twice does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
            if worker is not None:
                self._queue.put(None)  # wakes the worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        self._fail_queued(deque())
        with self._registry_lock:
            if self._registry.get(id(self.model)) is self:
                del self._registry[id(self.model)]
        self._stop_cache.clear()
        # Stale chat models may still hold the engine; the weights must not stay with it.
        self.model = None  # type: ignore[assignment]
        self.tokenizer = None  # type: ignore[assignment]

    def _fail_queued(self, pending: deque[_Request]) -> None:
        while True:
            try:
                request = self._queue.get(False)
            except queue.Empty:
                break
            if request is not None:
                pending.append(request)
        for request in pending:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(RuntimeError(f"{self._name} was closed"))
        pending.clear()

    def _run(self) -> None:
        pending: deque[_Request] = deque()
        while True:
            if self._stopping:
                with self._lock:
                    self._worker = None
                self._fail_queued(pending)
                return
            if pending:
                first = pending.popleft()
            else:
                try:
                    request = self._queue.get(timeout=_IDLE_EXIT_S)
                except queue.Empty:
                    with self._lock:
                        # Checked under the lock so a concurrent submit() either lands
                        # before this check or sees no worker and starts a new one.
                        if self._queue.empty():
                            self._worker = None
                            return
                    continue
                if request is None:
                    self._stopping = True
                    continue
                first = request
            self._serve(self._collect(first, pending))

    def _collect(self, first: _Request, pending: deque[_Request]) -> list[_Request]:
        batch = [first]
        limit = first.max_batch_size
        for request in list(pending):
            if len(batch) >= limit:
                break
            if request.key == first.key:
                pending.remove(request)
                batch.append(request)
        # Measured from arrival: requests that queued during the previous generate call
        # are served at once instead of waiting another window.
        adaptive = min(MAX_ADAPTIVE_WINDOW_MS / 1000, first.window_ratio * self._recent_generate_s)
        deadline = first.enqueued_at + max(first.batch_window_s, adaptive)
        cohort = first.cohort
        cohort_deadline = deadline
        if cohort is not None:
            wait = min(MAX_COHORT_WAIT_MS / 1000, self._recent_generate_s or float("inf"))
            cohort_deadline = max(deadline, first.enqueued_at + wait)
        while len(batch) < limit:
            missing = cohort is not None and sum(r.cohort is cohort for r in batch) < cohort.size
            timeout = (cohort_deadline if missing else deadline) - time.perf_counter()
            try:
                arrived = (
                    self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get(False)
                )
            except queue.Empty:
                break
            if arrived is None:  # close(): serve this batch, then stop
                self._stopping = True
                break
            (batch if arrived.key == first.key else pending).append(arrived)
        return batch

    def _serve(self, batch: list[_Request]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        waiting = time.perf_counter()
        try:
            # Engines of other models on this device take turns (resources.device_lock).
            with device_lock(self.device):
                started = time.perf_counter()
                answers = self._generate(
                    [r.conversation for r in live],
                    live[0].settings,
                    **self._batch_generate_kwargs(live),
                )
                elapsed = time.perf_counter() - started
        except Exception as exc:  # every caller of the batch gets the error
            for request in live:
                request.future.set_exception(exc)
            return
        device_wait = started - waiting
        with self._lock:
            self._stats.requests += len(live)
            self._stats.batch_sizes.append(len(live))
            self._stats.generation_s += elapsed
            self._stats.device_wait_s += device_wait
            previous = self._recent_generate_s
            self._recent_generate_s = elapsed if not previous else 0.7 * previous + 0.3 * elapsed
        for request, (text, prompt_tokens, completion_tokens, finish_reason) in zip(
            live, answers, strict=True
        ):
            request.future.set_result(
                GenerationOutput(
                    text=text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    finish_reason=finish_reason,
                    batch_size=len(live),
                    queue_wait_s=started - request.enqueued_at,
                    generation_s=elapsed,
                    device_wait_s=device_wait,
                    batch_adapters=tuple(r.adapter for r in live),
                )
            )

    def _generate(
        self,
        conversations: list[list[dict[str, str]]],
        settings: GenerationSettings,
        **model_kwargs: Any,
    ) -> list[tuple[str, int, int, str]]:
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        # The template already holds BOS and role markers: no second set of special tokens.
        inputs = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        ).to(self.device)
        stop = settings.stop + self._extra_stop
        kwargs = settings.generate_kwargs()
        if stop:
            # Ends rows early on a stop string; the text is still cut below, since a
            # stop string can end inside a token.
            kwargs["stopping_criteria"] = self._stop_criteria(stop)
        if settings.json_schema is not None:
            kwargs["logits_processor"] = self._grammar(settings.json_schema, inputs)
        with torch.inference_mode():
            # transformers' stubs type ``generate`` loosely (as a Tensor attribute).
            output = self.model.generate(  # type: ignore[operator]
                **inputs, pad_token_id=self.tokenizer.pad_token_id, **kwargs, **model_kwargs
            )
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        answers = []
        for row, n_prompt in zip(new_tokens, prompt_tokens, strict=True):
            end = next((i for i, t in enumerate(row) if t in self._end_ids), len(row))
            text = str(self.tokenizer.decode(row[:end], skip_special_tokens=True))
            text, stopped = truncate_at_stop(text, stop)
            finish_reason = "stop" if stopped or end < len(row) else "length"
            answers.append((text, int(n_prompt), min(end + 1, len(row)), finish_reason))
        return answers

    def _grammar(self, json_schema: str, inputs: Any) -> LogitsProcessorList:
        from transformers import LogitsProcessorList

        from langchain_complm.models._grammar import (
            GrammarLogitsProcessor,
            compile_schema,
            ll_tokenizer,
        )

        if self._grammar_tokenizer is None:
            self._grammar_tokenizer = ll_tokenizer(self.tokenizer, self._end_ids)
        processor = GrammarLogitsProcessor(
            self._grammar_tokenizer,
            compile_schema(json_schema),
            batch_size=inputs["input_ids"].shape[0],
            prompt_width=inputs["input_ids"].shape[1],
            end_ids=self._end_ids,
        )
        return LogitsProcessorList([processor])

    def _stop_criteria(self, stop: tuple[str, ...]) -> StoppingCriteriaList:
        # Building the criterion scans the whole vocabulary (0.3 s for SmolLM2's 49k tokens),
        # so it is built once per stop set; it holds no per-call state.
        criteria = self._stop_cache.pop(stop, None)
        if criteria is None:
            from transformers import StoppingCriteriaList, StopStringCriteria

            criteria = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stop))])
            if len(self._stop_cache) >= _STOP_CACHE_SIZE:
                self._stop_cache.popitem(last=False)
        self._stop_cache[stop] = criteria  # most recently used last
        return criteria


def _end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Token ids that end a row: EOS ids of model and tokenizer, and the pad id."""
    ids: set[int] = set()
    for value in (
        getattr(model.generation_config, "eos_token_id", None),
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, Iterable):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _to_conversation(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    conversation = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else _ROLES.get(message.type)
        if role is None:
            raise ValueError(f"unsupported message type {message.type!r} for a local chat model")
        conversation.append({"role": role, "content": str(message.text)})
    return conversation


class ChatLocalHuggingFace(BaseChatModel):
    """Chat model over a local transformers causal LM, safe to call concurrently.

    Concurrent calls on models that share a :class:`GenerationEngine` (same model object)
    are merged into batched ``generate`` calls; see the module docstring. The prompt is
    built with the tokenizer's chat template and never echoed: only new tokens are decoded.
    Decoding is greedy unless ``do_sample=True``. Stop strings (``stop`` here and per call)
    end a row early and are cut from the answer. ``stream()`` yields the answer as one chunk.
    A tokenizer without a chat template (a base model) gets :data:`PLAIN_CHAT_TEMPLATE` with
    a warning, rather than an error, and ``"\\nUser:"`` as an extra stop string.

    Each answer's ``response_metadata`` holds ``batch_size`` (prompts in its ``generate``
    call), ``queue_wait_s``, ``device_wait_s`` (part of the queue wait spent waiting for
    another model's ``generate`` on the same device), ``generation_s``, ``prompt_tokens``,
    ``completion_tokens`` and ``finish_reason``; ``usage_metadata`` holds the token counts.
    A model over a LoRA adapter (``adapter``, see :mod:`~langchain_complm.models.lora`), or
    one whose batch held adapter rows, also reports ``adapter`` (None: the base model) and
    ``batch_adapters`` (the adapter of each row of its ``generate``).

    Example:
        .. code-block:: python

            llm = ChatLocalHuggingFace.from_model_id(
                "HuggingFaceTB/SmolLM2-135M-Instruct", max_new_tokens=64
            )
            llm.batch(["What is 2+3?", "Capital of France?"])  # one generate call
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: GenerationEngine = Field(exclude=True, repr=False)
    """The shared engine that owns the model and tokenizer."""
    model_id: str | None = None
    """Hub id or folder the model came from (for tracing and reports)."""
    adapter: str | None = None
    """LoRA adapter of the engine to answer with (a
    :class:`~langchain_complm.models.lora.LoraEngine`); None: the model itself."""
    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, ge=1)
    do_sample: bool = False
    """Sample instead of greedy decoding; greedy answers are reproducible."""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    json_schema: dict[str, Any] | None = None
    """Constrain every reply to this JSON schema (grammar-constrained decoding); a call or
    :meth:`with_structured_output` may set one too."""
    stop: list[str] | None = None
    """Stop strings applied to every call, on top of the call's own ``stop``."""
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1)
    """Most prompts merged into one ``generate`` call; 1 serializes calls without batching."""
    batch_window_ms: float = Field(default=DEFAULT_BATCH_WINDOW_MS, ge=0)
    """How long the engine waits for more requests before starting a batch."""
    batch_window_ratio: float = Field(default=DEFAULT_BATCH_WINDOW_RATIO, ge=0, le=1)
    """Lengthens the batch window to this fraction of the model's recent ``generate`` time
    (at most 150 ms; 0: off). Concurrent sub-queries reach the engine some milliseconds
    apart (tens under load), and a request that misses a batch waits a whole ``generate``;
    a slow model can afford to wait longer for companions than a fast one."""

    @classmethod
    def from_model(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_id: str | None = None,
        **kwargs: Any,
    ) -> ChatLocalHuggingFace:
        """A chat model over an already loaded ``model`` and ``tokenizer``.

        ``kwargs`` set the fields (``max_new_tokens``, ``stop``, ``max_batch_size``, ...).
        Instances over the same model object share one engine.
        """
        engine = GenerationEngine.for_model(model, tokenizer)
        return cls(engine=engine, model_id=model_id or model.name_or_path or None, **kwargs)

    @classmethod
    def from_model_id(
        cls,
        model_id: str,
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        torch_dtype: Any = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        do_sample: bool = False,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
        model_kwargs: Mapping[str, Any] | None = None,
        tokenizer_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChatLocalHuggingFace:
        """Load a causal LM from a hub id or a local folder; see :func:`load_causal_lm`.

        The generation and batching arguments and ``kwargs`` (``stop``, ``temperature``,
        ...) set the fields of the same names.

        Raises:
            FileNotFoundError: ``model_id`` looks like a path but no such folder exists, or
                ``gguf_file`` is not in it.
        """
        model, tokenizer = load_causal_lm(
            model_id,
            gguf_file=gguf_file,
            device=device,
            torch_dtype=torch_dtype,
            model_kwargs=model_kwargs,
            tokenizer_kwargs=tokenizer_kwargs,
        )
        return cls.from_model(
            model,
            tokenizer,
            model_id=model_id,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            max_batch_size=max_batch_size,
            batch_window_ms=batch_window_ms,
            **kwargs,
        )

    @property
    def num_parameters(self) -> int:
        """Number of parameters of the underlying model."""
        return self.engine.num_parameters

    @property
    def batch_group(self) -> tuple[Hashable, ...]:
        """Calls of chat models with the same group can share one ``generate``: same engine,
        decoding settings and batch limit (see :func:`langchain_complm.batching.batch_group`)."""
        return (self.engine, self._settings({}, None), self.max_batch_size)

    @property
    def _llm_type(self) -> str:
        return "local-huggingface"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "adapter": self.adapter,
            **self._settings({}, None).generate_kwargs(),
            "stop": self.stop,
            "max_batch_size": self.max_batch_size,
            "batch_window_ms": self.batch_window_ms,
            "batch_window_ratio": self.batch_window_ratio,
        }

    def _settings(self, overrides: dict[str, Any], stop: list[str] | None) -> GenerationSettings:
        unknown = set(overrides) - _OVERRIDABLE
        if unknown:
            raise TypeError(f"unsupported generation arguments: {sorted(unknown)}")
        values = {name: getattr(self, name) for name in _OVERRIDABLE} | overrides
        if values["json_schema"] is not None:
            values["json_schema"] = schema_text(values["json_schema"])
        stops = tuple(dict.fromkeys([*(self.stop or ()), *(stop or ())]))
        return GenerationSettings(stop=stops, **values)

    def with_structured_output(  # type: ignore[override]
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["json_schema", "json_mode"] = "json_schema",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Replies constrained to ``schema`` by grammar-constrained decoding, parsed.

        Args:
            schema: a pydantic model class (replies parse into instances), a TypedDict or
                a JSON schema dict (replies parse into dicts).
            include_raw: return ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``
                as LangChain's chat models do; a reply cut off by ``max_new_tokens`` then
                keeps its text in ``raw``.
            method: ``"json_schema"`` (the schema's grammar) or ``"json_mode"`` (any JSON
                object).

        Raises:
            ValueError: an unknown ``method`` or argument, or a schema llguidance cannot
                compile (named).
        """
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        if method not in ("json_schema", "json_mode"):
            raise ValueError(
                f"method must be 'json_schema' or 'json_mode' for a local model, not {method!r}"
            )
        from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
        from langchain_core.runnables import RunnableMap, RunnablePassthrough
        from langchain_core.utils.function_calling import convert_to_json_schema
        from langchain_core.utils.pydantic import is_basemodel_subclass

        from langchain_complm.models._grammar import compile_schema

        is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
        json_schema = (
            {"type": "object"}
            if method == "json_mode"
            else schema.model_json_schema()  # type: ignore[union-attr]
            if is_model
            else schema
            if isinstance(schema, dict)
            else convert_to_json_schema(schema)  # a TypedDict
        )
        compile_schema(schema_text(json_schema))  # a bad schema fails here, not mid-run
        llm = self.bind(json_schema=json_schema)
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
            if is_model and method == "json_schema"
            else JsonOutputParser()
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [unparsed], exception_key="parsing_error"
        )

    def _submit(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        engine: GenerationEngine | None = None,
    ) -> Future[GenerationOutput]:
        return (engine or self.engine).submit(
            _to_conversation(messages),
            self._settings(kwargs, stop),
            max_batch_size=self.max_batch_size,
            batch_window_ms=self.batch_window_ms,
            batch_window_ratio=self.batch_window_ratio,
            cohort=current_cohort(),
            adapter=self.adapter,
        )

    def _to_result(
        self, output: GenerationOutput, extra: Mapping[str, Any] | None = None
    ) -> ChatResult:
        metadata = {
            "model_name": self.model_id,
            "batch_size": output.batch_size,
            "queue_wait_s": output.queue_wait_s,
            "device_wait_s": output.device_wait_s,
            "generation_s": output.generation_s,
            "prompt_tokens": output.prompt_tokens,
            "completion_tokens": output.completion_tokens,
            "finish_reason": output.finish_reason,
            **(
                {"adapter": self.adapter, "batch_adapters": list(output.batch_adapters)}
                if self.adapter is not None or any(output.batch_adapters)
                else {}
            ),
            **(extra or {}),
        }
        message = AIMessage(
            content=output.text,
            response_metadata=metadata,
            usage_metadata={
                "input_tokens": output.prompt_tokens,
                "output_tokens": output.completion_tokens,
                "total_tokens": output.prompt_tokens + output.completion_tokens,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # A call given up by its timeout stops waiting, and its request, if not started yet,
        # leaves the queue.
        return self._to_result(result_unless_cancelled(self._submit(messages, stop, kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        future = self._submit(messages, stop, kwargs)
        return self._to_result(await asyncio.wrap_future(future))


_OVERRIDABLE = frozenset(
    {
        "max_new_tokens",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "json_schema",
    }
)
"""Generation fields a call may override, e.g. ``llm.invoke(q, max_new_tokens=16)``."""


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_source(model_id: str, gguf_file: str | None) -> tuple[str, str | None]:
    """Split ``model_id`` into what ``from_pretrained`` takes, checking local paths.

    A path to a ``.gguf`` file stands for its folder plus ``gguf_file``. Anything that looks
    like a path (absolute, ``.``/``~`` prefix, more than one ``/``) must exist locally;
    ``name`` and ``org/name`` that are not local folders are hub ids.
    """
    path = Path(model_id).expanduser()
    if path.is_file() and path.suffix == ".gguf" and gguf_file is None:
        return str(path.parent), path.name
    if path.is_dir():
        if gguf_file is not None and not (path / gguf_file).is_file():
            raise FileNotFoundError(f"GGUF file {gguf_file!r} not found in {path}")
        return str(path), gguf_file
    looks_local = model_id.startswith(("/", ".", "~")) or "\\" in model_id
    if looks_local or model_id.count("/") > 1 or path.exists():
        raise FileNotFoundError(f"model folder not found: {path} (from model_id {model_id!r})")
    return model_id, gguf_file


_loads_lock = threading.Lock()
_loads: dict[Hashable, threading.Lock] = {}
"""A lock per load key: two threads loading the same weights load them once."""
_loaded: dict[Hashable, tuple[weakref.ref[Any], PreTrainedTokenizerBase]] = {}
"""The process's one model cache: (model, tokenizer) per :func:`load_causal_lm` key, while
something still holds the model (an entry goes when its model is garbage-collected)."""


def load_causal_lm(
    model_id: str,
    *,
    gguf_file: str | None = None,
    device: str | None = None,
    torch_dtype: Any = None,
    model_kwargs: Mapping[str, Any] | None = None,
    tokenizer_kwargs: Mapping[str, Any] | None = None,
    shared: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode, on ``device``, once per process.

    The same weights asked for again (same source, GGUF file, device, dtype and extra
    arguments) while the first load is still in use are the same objects: every chat model,
    pool entry and LoRA engine over them shares one copy and, through
    :meth:`GenerationEngine.for_model`, one engine. Loaded models are for inference only:
    fine-tuning loads its own copy.

    Args:
        model_id: Hugging Face hub id (downloaded and cached by transformers) or local folder;
            a path to a ``.gguf`` file also works.
        gguf_file: GGUF file inside the folder or repo; it is dequantized on load.
        device: ``"cpu"``, ``"cuda:0"``, ...; default: CUDA when available, else CPU. Ignored
            when ``model_kwargs`` holds a ``device_map``.
        torch_dtype: e.g. ``torch.bfloat16``, ``"float16"`` or ``"auto"``; default float32.
        model_kwargs: extra ``AutoModelForCausalLM.from_pretrained`` arguments.
        tokenizer_kwargs: extra ``AutoTokenizer.from_pretrained`` arguments.
        shared: ``False``: a copy of its own, outside the cache, for an owner that frees it
            (:class:`~langchain_complm.models.pool.ModelPool` closes its models' engines).

    Raises:
        FileNotFoundError: a local-looking ``model_id`` or its ``gguf_file`` is missing.
    """
    source, gguf_file = resolve_source(model_id, gguf_file)
    model_args = dict(model_kwargs or {})
    if gguf_file is not None:
        model_args["gguf_file"] = gguf_file
    if torch_dtype is not None:
        model_args["dtype"] = torch_dtype
    tokenizer_args = dict(tokenizer_kwargs or {})
    if gguf_file is not None:
        tokenizer_args.setdefault("gguf_file", gguf_file)
    if "device_map" not in model_args:
        device = device or default_device()
    if not shared:
        return _load(source, device, model_args, tokenizer_args)
    local = Path(source)
    key = (
        str(local.resolve()) if local.is_dir() else source,
        None if "device_map" in model_args else device,
        repr(sorted(model_args.items(), key=itemgetter(0))),
        repr(sorted(tokenizer_args.items(), key=itemgetter(0))),
    )
    with _loads_lock:
        lock = _loads.setdefault(key, threading.Lock())
    with lock:
        cached = _loaded.get(key)
        if cached is not None and (model := cached[0]()) is not None:
            return model, cached[1]
        model, tokenizer = _load(source, device, model_args, tokenizer_args)
        _loaded[key] = (weakref.ref(model), tokenizer)
        weakref.finalize(model, _forget, key, _loaded[key][0])
        return model, tokenizer


def _forget(key: Hashable, ref: weakref.ref[Any]) -> None:
    # Only the entry of the model that died: the key may already hold a newer load.
    if (entry := _loaded.get(key)) is not None and entry[0] is ref:
        del _loaded[key]


def _load(
    source: str, device: str | None, model_args: dict[str, Any], tokenizer_args: dict[str, Any]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = model_args.get("gguf_file")
    logger.info("loading %s%s", source, f" ({gguf_file})" if gguf_file else "")
    tokenizer = AutoTokenizer.from_pretrained(source, **tokenizer_args)
    model = AutoModelForCausalLM.from_pretrained(source, **model_args)
    if device is not None:
        model = model.to(device)  # type: ignore[arg-type]
    return model.eval(), tokenizer


__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_NEW_TOKENS",
    "PLAIN_CHAT_TEMPLATE",
    "ChatLocalHuggingFace",
    "EngineStats",
    "GenerationEngine",
    "GenerationOutput",
    "GenerationSettings",
    "default_device",
    "load_causal_lm",
    "resolve_source",
]
