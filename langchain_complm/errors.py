"""Every error the package raises on purpose, under one base, :class:`CompLLMError`.

Each also keeps the built-in base users already catch (``ValueError`` for bad input,
``FileNotFoundError`` for missing model files, ``RuntimeError`` for failed execution), so
``except ValueError`` keeps working where it did. The errors of served models
(:class:`RemoteModelError` and its four kinds) keep langchain-core's provider-independent
:class:`~langchain_core.exceptions.ModelError` classes instead, so code that catches
``ModelConnectionError`` or ``ModelTimeoutError`` from any LangChain chat model catches them
too; the ``complm`` command exits with a code per kind (docs/cli-and-config.md).
"""

from __future__ import annotations

from typing import Any

from langchain_core.exceptions import (
    ModelConnectionError,
    ModelError,
    ModelTimeoutError,
)
from langchain_core.exceptions import (
    ModelNotFoundError as _ProviderModelNotFoundError,
)


class CompLLMError(Exception):
    """Base class of langchain-complm's errors."""


class PlanValidationError(CompLLMError, ValueError):
    """A plan is not a valid sub-query DAG; the message names the problem."""


class SubQueryExecutionError(CompLLMError, RuntimeError):
    """Raised under ``on_failure="raise"``; ``result`` holds everything that was computed
    (an :class:`~langchain_complm.execute.ExecutionResult`)."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


class AggregationError(CompLLMError, RuntimeError):
    """The aggregator failed; ``output`` still holds the plan and every sub-answer (a
    :class:`~langchain_complm.pipeline.CompLLMOutput` with an empty ``answer``)."""

    def __init__(self, message: str, output: Any) -> None:
        super().__init__(message)
        self.output = output


class PlanReviewError(CompLLMError, ValueError):
    """A reviewer's answer to the plan-review interrupt is not a valid approval, edit or
    replacement; the message names the problem, and the run still waits for a valid one."""


class ConfigError(CompLLMError, ValueError):
    """A config file or object is invalid; the message names the file and the problem."""


class ModelNotFoundError(CompLLMError, FileNotFoundError):
    """A model's files are missing: a local path, a model not in the offline cache, or the
    package of an embedded model not installed. The message names the model and the fix."""


class MemoryBudgetError(CompLLMError, ValueError):
    """A model is larger than the whole budget of its pool."""


class UsageError(CompLLMError):
    """Bad command-line input (``complm`` exits with code 2)."""


# --- served models --------------------------------------------------------------------------


class RemoteModelError(CompLLMError, ModelError):
    """A request to a served model failed; the message names the model, where it is served
    and what to check.

    Attributes:
        model: The model's name (its key under ``models:`` in a config file).
        endpoint: Where it is served: a base URL, or ``provider:model``.
    """

    def __init__(self, message: str, *, model: str, endpoint: str) -> None:
        super().__init__(message)
        self.model = model
        self.endpoint = endpoint


class ServerUnreachableError(RemoteModelError, ModelConnectionError):
    """The server could not be reached (refused, reset, no route, DNS)."""


class ModelNotServedError(RemoteModelError, _ProviderModelNotFoundError):
    """The server answers, but does not serve the model or adapter name asked for."""


class ServerHTTPError(RemoteModelError):
    """The server answered a request with an HTTP error (bad request, auth, rate limit, 5xx).

    Attributes:
        status_code: The HTTP status.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        endpoint: str,
        status_code: int,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, model=model, endpoint=endpoint)
        self.status_code = status_code
        self.is_retryable = retryable


class ServerTimeoutError(RemoteModelError, ModelTimeoutError):
    """The server did not answer within the model's ``timeout``."""


__all__ = [
    "AggregationError",
    "CompLLMError",
    "ConfigError",
    "MemoryBudgetError",
    "ModelNotFoundError",
    "ModelNotServedError",
    "PlanReviewError",
    "PlanValidationError",
    "RemoteModelError",
    "ServerHTTPError",
    "ServerTimeoutError",
    "ServerUnreachableError",
    "SubQueryExecutionError",
    "UsageError",
]
