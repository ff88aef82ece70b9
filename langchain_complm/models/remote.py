"""Chat models served elsewhere: an OpenAI-compatible engine (vLLM, TGI, SGLang, llama.cpp's
server, ...) or any LangChain provider, named as :func:`langchain.chat_models.init_chat_model`
names it (``"anthropic:claude-haiku-4-5"``).

:class:`ChatRemote` puts the provider's chat model behind a client-side concurrency cap and
turns its failures into the named errors of :mod:`langchain_complm.errors`, each naming the
model, where it is served and what to check. Requests, token usage and traces are the
provider's own: ``ChatRemote`` adds no run of its own to a trace.

Needs the ``serve`` extra (``pip install "langchain-complm[serve]"``: ``langchain`` for
``init_chat_model`` and ``langchain-openai`` for OpenAI-compatible endpoints), plus the
provider's package for other providers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import ModelConnectionError, ModelError, ModelTimeoutError
from langchain_core.exceptions import ModelNotFoundError as ProviderModelNotFoundError
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_complm.concurrency import ConcurrencyLimiter
from langchain_complm.errors import (
    ModelNotServedError,
    RemoteModelError,
    ServerHTTPError,
    ServerTimeoutError,
    ServerUnreachableError,
)

NO_API_KEY = "EMPTY"
"""Sent to an OpenAI-compatible endpoint configured without a key (vLLM without --api-key
accepts any), so the client never falls back to ``$OPENAI_API_KEY`` and sends a real OpenAI
key to some other server."""

_SERVE_EXTRA = 'pip install "langchain-complm[serve]"'


def check_endpoint(base_url: str | None, adapter: str | None) -> None:
    """Reject settings no server can serve.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL, or ``adapter`` comes without one.
    """
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    if adapter is not None and base_url is None:
        raise ValueError("adapter needs base_url: adapters are served by an endpoint")


class ChatRemote(BaseChatModel):
    """A chat model on a server: the provider's chat model (``client``) with at most
    ``max_concurrency`` requests in flight and named errors.

    Build one with :meth:`from_model`. Structured output and tool binding are the client's
    (for an OpenAI-compatible engine, ``with_structured_output`` asks for a JSON schema, which
    vLLM enforces with guided decoding), under the same cap and error names.

    Raises (from any call):
        ServerUnreachableError, ModelNotServedError, ServerHTTPError, ServerTimeoutError.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: BaseChatModel = Field(description="The provider's chat model; sends the requests.")
    endpoint: str = Field(description="Where it is served: a base URL, or provider:model.")
    served_model: str = Field(description="The model (or adapter) name requests ask for.")
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once, over all threads and tasks; more wait their turn."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds per request, as given to the client (shown in timeout errors)."""

    _limiter: ConcurrencyLimiter | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        if self.max_concurrency is not None:
            self._limiter = ConcurrencyLimiter(self.max_concurrency)

    @property
    def limiter(self) -> ConcurrencyLimiter | None:
        """The cap's limiter (its ``peak`` and ``waits`` say how it was used); None without
        a cap."""
        return self._limiter

    @classmethod
    def from_model(
        cls,
        model: str,
        *,
        name: str | None = None,
        base_url: str | None = None,
        provider: str | None = None,
        adapter: str | None = None,
        api_key: str | None = None,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
        **kwargs: Any,
    ) -> ChatRemote:
        """Connect to a served model (no request is sent until the first call).

        Args:
            model: The model name the server serves (vLLM's ``--served-model-name``), or,
                without ``provider``, an ``init_chat_model`` name (``"provider:model"``, or
                a model name it infers the provider from).
            name: The model's name in messages (a config's key for it); default ``model``.
            base_url: The server, e.g. ``http://127.0.0.1:8000/v1``.
            provider: ``init_chat_model``'s ``model_provider``; default ``"openai"`` (an
                OpenAI-compatible endpoint) with ``base_url``, else inferred from ``model``.
            adapter: A LoRA adapter the server serves on top of ``model`` (vLLM
                ``--lora-modules NAME=PATH``); requests then ask for it by name.
            api_key: The key; default none for an OpenAI-compatible endpoint
                (:data:`NO_API_KEY` is sent), the provider's own environment variable
                otherwise.
            max_concurrency: Cap on requests in flight.
            timeout: Seconds per request.
            max_retries: The client's retries on connection errors, 429 and 5xx.
            kwargs: Further fields of the provider's chat model class (``temperature``,
                ``max_tokens``, ...).

        Raises:
            ImportError: ``langchain``, ``langchain-openai`` or the provider's package is
                missing (the message says what to install).
            ValueError: ``adapter`` without ``base_url``, or a provider that cannot be
                inferred from ``model``.
        """
        try:
            from langchain.chat_models import init_chat_model
        except ImportError as exc:
            raise ImportError(f"served models need langchain: {_SERVE_EXTRA}") from exc
        check_endpoint(base_url, adapter)
        served = adapter or model
        if provider is None and base_url is not None:
            provider = "openai"
        if api_key is None and base_url is not None and provider == "openai":
            api_key = NO_API_KEY
        options: dict[str, Any] = {"max_retries": max_retries, **kwargs}
        settings = {"base_url": base_url, "api_key": api_key, "timeout": timeout}
        options |= {key: value for key, value in settings.items() if value is not None}
        endpoint = base_url or (f"{provider}:{model}" if provider else model)
        try:
            client = init_chat_model(served, model_provider=provider, **options)
        except ImportError as exc:
            raise ImportError(f"{exc} (served models: {_SERVE_EXTRA})") from exc
        return cls(
            client=client,
            endpoint=endpoint,
            served_model=served,
            max_concurrency=max_concurrency,
            timeout=timeout,
            name=name or model,
        )

    # --- BaseChatModel ----------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return f"complm-remote-{self.client._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, **self.client._identifying_params}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        # Traces show the provider and model that answered, not this wrapper.
        return self.client._get_ls_params(stop=stop, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._slot(), self._named_errors():
            return self.client._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        async with self._slot():
            with self._named_errors():
                return await self.client._agenerate(
                    messages, stop=stop, run_manager=run_manager, **kwargs
                )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with self._slot(), self._named_errors():
            yield from self.client._stream(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async with self._slot():
            with self._named_errors():
                async for chunk in self.client._astream(
                    messages, stop=stop, run_manager=run_manager, **kwargs
                ):
                    yield chunk

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """The client's tool binding (its request arguments), on this model."""
        bound = self.client.bind_tools(tools, **kwargs)
        if not isinstance(bound, RunnableBinding):
            raise TypeError(f"{type(self.client).__name__}.bind_tools did not bind arguments")
        return self.bind(**bound.kwargs)

    def with_structured_output(
        self, schema: Any, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """The client's structured output (its method and parser), under this model's cap
        and error names."""
        return _Guarded(self.client.with_structured_output(schema, **kwargs), self)

    # --- the cap and the names ---------------------------------------------------------------

    def _slot(self) -> Any:
        """Hold while a request is in flight: ``with`` in threads, ``async with`` in tasks.
        A request given up by its caller's timeout frees its slot at once (see
        :meth:`~langchain_complm.concurrency.ConcurrencyLimiter.permit`)."""
        return self._limiter.permit() if self._limiter is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def _named_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            named = self._name(exc)
            if named is None:
                raise
            raise named from exc

    def _name(self, exc: Exception) -> RemoteModelError | None:
        """The named error for a provider's failure; None for one that is not the server's
        (a bad argument, a refusal, a parse error)."""
        if isinstance(exc, RemoteModelError):
            return None
        where = {"model": self.name or self.served_model, "endpoint": self.endpoint}
        head = f"model {where['model']!r} ({self.served_model} at {self.endpoint})"
        detail = _short(exc)
        if isinstance(exc, ModelTimeoutError) or _caused_by(exc, httpx.TimeoutException):
            limit = f"{self.timeout:g} s" if self.timeout is not None else "the client's timeout"
            return ServerTimeoutError(
                f"{head}: no answer within {limit} ({detail}); raise the model's timeout, "
                "lower max_concurrency, or check the server's load",
                **where,
            )
        if isinstance(exc, ModelConnectionError) or _caused_by(exc, httpx.TransportError):
            return ServerUnreachableError(
                f"{head}: cannot reach the server ({detail}); is it running, and is base_url "
                "right? (start commands: docs/serving.md)",
                **where,
            )
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int):
            return None
        if (status == 404 or isinstance(exc, ProviderModelNotFoundError)) and _names_model(exc):
            return ModelNotServedError(
                f"{head}: the server does not serve {self.served_model!r} ({detail}); check "
                "the model's `model`/`adapter` against the server's GET /v1/models (vLLM: "
                "--served-model-name, --lora-modules NAME=PATH)",
                **where,
            )
        return ServerHTTPError(
            f"{head}: HTTP {status} ({detail}){_HTTP_HINTS.get(status, '')}",
            status_code=status,
            retryable=isinstance(exc, ModelError) and exc.is_retryable,
            **where,
        )


_HTTP_HINTS = {
    401: "; check the model's api_key_env",
    403: "; check the model's api_key_env",
    404: "; check base_url (OpenAI-compatible servers serve under /v1)",
    429: "; the server is rate limiting: lower max_concurrency",
}


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception it was raised from is a ``kind``: SDKs built on
    httpx (openai, anthropic, ...) raise their own errors from httpx's."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk: cause chains can loop
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _names_model(exc: Exception) -> bool:
    """Whether a 404 is about the model name (vLLM, OpenAI and Anthropic say so) rather than
    the URL (a base_url without /v1 gets a bare "Not Found")."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("param") == "model":
        return True
    return "model" in str(exc).lower()


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Guarded(Runnable[Any, Any]):
    """A runnable over a :class:`ChatRemote`'s client (its structured output) that holds the
    model's slot and names its errors. Config passes straight through: traces show the
    client's own runs."""

    def __init__(self, bound: Runnable[Any, Any], model: ChatRemote) -> None:
        self.bound = bound
        self.model = model
        self.name = bound.get_name()

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        with self.model._slot(), self.model._named_errors():
            return self.bound.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        async with self.model._slot():
            with self.model._named_errors():
                return await self.bound.ainvoke(input, config, **kwargs)

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        with self.model._slot(), self.model._named_errors():
            yield from self.bound.stream(input, config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async with self.model._slot():
            with self.model._named_errors():
                async for chunk in self.bound.astream(input, config, **kwargs):
                    yield chunk

    def __repr__(self) -> str:
        return f"{self.model.name}.with_structured_output({self.bound!r})"


__all__ = ["NO_API_KEY", "ChatRemote", "check_endpoint"]
