"""Progress events that the pipeline stages emit while a query runs.

Events reach users two ways, both standard: LangGraph's ``stream_mode="custom"`` (what
``stream()`` of the Comp-LLM runnable yields by default) and LangChain custom callback events
(``on_custom_event`` in ``astream_events``, named :data:`PROGRESS_EVENT`). Outside a running
graph or run, emitting is a no-op, so every stage also works on its own.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Literal

from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.runnables import RunnableConfig
from typing_extensions import NotRequired, TypedDict

PROGRESS_EVENT = "complm_progress"
"""Name of the LangChain custom event carrying a :class:`ProgressEvent`."""

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


def emit(event: ProgressEvent, config: RunnableConfig | None = None) -> None:
    """Send ``event`` to the LangGraph stream writer and to callback handlers, if any."""
    from langgraph.config import get_stream_writer

    with suppress(RuntimeError):  # not inside a LangGraph run
        get_stream_writer()(event)
    with suppress(RuntimeError):  # no parent run to attach the event to
        dispatch_custom_event(PROGRESS_EVENT, event, config=config)
