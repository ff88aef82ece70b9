"""Every error the package raises on purpose, under one base, :class:`CompLLMError`.

Each also keeps the built-in base users already catch (``ValueError`` for bad input,
``FileNotFoundError`` for missing model files, ``RuntimeError`` for failed execution), so
``except ValueError`` keeps working where it did.
"""

from __future__ import annotations

from typing import Any


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


class ConfigError(CompLLMError, ValueError):
    """A config file or object is invalid; the message names the file and the problem."""


class ModelNotFoundError(CompLLMError, FileNotFoundError):
    """A model's files are missing: a local path, a model not in the offline cache, or the
    package of an embedded model not installed. The message names the model and the fix."""


class MemoryBudgetError(CompLLMError, ValueError):
    """A model is larger than the whole budget of its pool."""


class UsageError(CompLLMError):
    """Bad command-line input (``complm`` exits with code 2)."""


__all__ = [
    "CompLLMError",
    "ConfigError",
    "MemoryBudgetError",
    "ModelNotFoundError",
    "PlanValidationError",
    "SubQueryExecutionError",
    "UsageError",
]
