"""The Comp-LLM pipeline behind LangGraph's server: ``langgraph dev`` serves these graphs
(see ``langgraph.json`` at the repository root).

- ``graph``: the pipeline. Studio and Agent Chat UI send ``{"messages": [...]}`` (plain
  dicts) and read ``messages`` back; the answer is appended there as an AI message.
- ``reviewed``: the same pipeline, pausing after routing for plan review; resume the thread
  with ``{"resume": "approve"}`` or an edit (see :func:`~langchain_complm.pipeline.apply_review`).

Both are built when this module is imported, from one set of loaded models: the server's
blocking-call checker rejects a graph factory that loads models lazily. The embedded default
is served unless ``$COMPLM_CONFIG`` names a config file. The server brings its own
checkpointer, so threads, resumption and plan review work as they do in-process.
"""

from __future__ import annotations

import os

from langchain_complm.config import CONFIG_ENV, build_parts

_parts = build_parts(os.environ.get(CONFIG_ENV) or None)

graph = _parts.pipeline(name="complm")
reviewed = _parts.pipeline(review_plan=True, name="complm_review")

__all__ = ["graph", "reviewed"]
