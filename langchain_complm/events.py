"""Progress events that the pipeline stages emit while a query runs.

Events reach users two ways, both standard: LangGraph's ``stream_mode="custom"`` (what
``stream()`` of the Comp-LLM runnable yields by default) and LangChain custom callback events
(``on_custom_event`` in ``astream_events``, named :data:`PROGRESS_EVENT`). Outside a running
graph or run, emitting is a no-op, so every stage also works on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.runnables import RunnableConfig
from langgraph.constants import TAG_NOSTREAM
from typing_extensions import NotRequired, TypedDict

PROGRESS_EVENT = "complm_progress"
"""Name of the LangChain custom event carrying a :class:`ProgressEvent`."""

STREAM_ALL_TOKENS = "stream_all_tokens"
"""``config["configurable"]`` key: when true, ``stream_mode="messages"`` also carries the
decomposer's and the experts' tokens, not only the final answer's."""

EventType = Literal[
    "plan",  # the generator produced the plan
    "routed",  # one sub-query was assigned an expert
    "subquery_start",  # an expert started on a sub-query
    "subquery_answer",  # a sub-query was answered
    "subquery_error",  # a sub-query failed (after retries and fallback) or was skipped
    "token",  # a chunk of the aggregator's final answer
    "done",  # the final output
]


class ProgressEvent(TypedDict):
    """One progress event. ``type`` says which; the other keys depend on it."""

    type: EventType
    sub_query_id: NotRequired[str]
    expert: NotRequired[str]
    score: NotRequired[float]
    answer: NotRequired[str]
    error: NotRequired[str]
    content: NotRequired[str]
    data: NotRequired[Any]


def current_writer() -> Callable[[Any], None] | None:
    """The stream writer of the LangGraph run we are in, if any.

    A graph run inside a node (the executor's plan graph) has a writer of its own whose
    output its parent does not stream; capturing the outer writer first lets the inner
    graph's nodes report to the stream the user is reading.
    """
    from langgraph.config import get_stream_writer

    try:
        return get_stream_writer()
    except (RuntimeError, KeyError):  # not inside a LangGraph run
        return None


def emit(
    event: ProgressEvent,
    config: RunnableConfig | None = None,
    writer: Callable[[Any], None] | None = None,
) -> None:
    """Send ``event`` to the stream writer (``writer`` or the current run's) and to callback
    handlers, if any."""
    if (writer := writer or current_writer()) is not None:
        writer(event)
    if not _has_custom_event_handlers(config):
        return
    with suppress(RuntimeError):  # no parent run to attach the event to
        dispatch_custom_event(PROGRESS_EVENT, event, config=config)


def quiet(config: RunnableConfig) -> RunnableConfig:
    """``config`` for a model call whose tokens are not the answer (the plan, the experts'
    sub-answers): tagged so LangGraph's ``messages`` stream skips them, unless the run asks
    for every token with :data:`STREAM_ALL_TOKENS`."""
    if (config.get("configurable") or {}).get(STREAM_ALL_TOKENS):
        return config
    return {**config, "tags": [*(config.get("tags") or ()), TAG_NOSTREAM]}


def _has_custom_event_handlers(config: RunnableConfig | None) -> bool:
    """Whether the run's handlers take custom events. Dispatching configures a callback
    manager, which costs more than the rest of a sub-query's bookkeeping; the handlers it
    would reach (tracers from the environment included) are the run's inheritable ones."""
    callbacks = (config or {}).get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        callbacks = callbacks.handlers
    return any(not handler.ignore_custom_event for handler in callbacks or ())
