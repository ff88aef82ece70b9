"""The pipeline as a LangGraph StateGraph: its stages as nodes, its schemas, every input form,
no deadlock under any max_concurrency, async end to end, and the places LangGraph users put it
(a node of a MessagesState graph, a tool, a chain with an output parser)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from fakes import (
    KeywordEmbeddings,
    fake_llm,
    literal_aggregator,
    literal_generator,
    make_expert,
    plan_json,
    recording_llm,
)
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from langchain_complm import CompLLMOutput, Expert, Plan, RoutingDecision, SubQuery
from langchain_complm.errors import AggregationError
from langchain_complm.pipeline import create_comp_llm

PLAN = plan_json(
    ("q1", "What is the sum of 2 and 3?", []),
    ("q2", "Which drug treats this disease?", []),
    ("q3", "Multiply {q1} by the number of war years", ["q1"]),
)
ANSWER = "Final: 5, aspirin, 10."


def build(delay: float = 0.0, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    experts, fakes = {}, {}
    for name in ("math", "medicine", "history"):
        experts[name], fakes[name] = make_expert(name, delay=delay)
    comp = create_comp_llm(
        list(experts.values()),
        generator=literal_generator(kwargs.pop("generator", fake_llm(PLAN))),
        router=kwargs.pop("router", KeywordEmbeddings()),
        aggregator=literal_aggregator(kwargs.pop("aggregator", fake_llm(ANSWER))),
        **kwargs,
    )
    return comp, fakes


def overlapping(calls: list[dict[str, Any]]) -> bool:
    return any(
        a["start"] < b["end"] and b["start"] < a["end"] for a in calls for b in calls if a is not b
    )


def test_the_graph_has_the_papers_stages_and_typed_schemas() -> None:
    comp, _ = build()
    graph = comp.get_graph()
    assert set(graph.nodes) == {
        "__start__",
        "decompose",
        "route",
        "execute",
        "aggregate",
        "__end__",
    }
    edges = {(e.source, e.target) for e in graph.edges}
    assert ("decompose", "route") in edges and ("execute", "aggregate") in edges
    reviewed, _ = build(review_plan=True, checkpointer=InMemorySaver())
    edges = {(e.source, e.target) for e in reviewed.get_graph().edges}
    assert ("route", "review") in edges and ("review", "execute") in edges
    inputs = comp.get_input_jsonschema()["properties"]
    assert set(inputs) == {"query", "messages", "plan"}
    outputs = comp.get_output_jsonschema()
    assert set(outputs["properties"]) == {
        "query",
        "answer",
        "plan",
        "results",
        "timings",
        "messages",
    }


@pytest.mark.parametrize(
    "value",
    [
        {"messages": [{"role": "user", "content": "What is 2+3?"}]},  # what Studio sends
        {"messages": [("user", "What is 2+3?")]},
        [("system", "be brief"), ("human", "What is 2+3?")],
        [HumanMessage("What is 2+3?")],
    ],
)
def test_message_input_gets_the_answer_appended(value: Any) -> None:
    comp, _ = build()
    out = comp.invoke(value)
    assert out["query"] == "What is 2+3?"
    assert isinstance(out["messages"][-1], AIMessage)
    assert out["messages"][-1].content == ANSWER
    assert out["messages"][-2].content == "What is 2+3?"


def test_works_as_a_node_of_a_messages_state_graph() -> None:
    comp, _ = build()
    parent = (
        StateGraph(MessagesState)
        .add_node("complm", comp)
        .add_edge(START, "complm")
        .compile(checkpointer=InMemorySaver())
    )
    config = {"configurable": {"thread_id": "t"}}
    state = parent.invoke({"messages": [HumanMessage("What is 2+3?")]}, config)
    assert [m.type for m in state["messages"]] == ["human", "ai"]
    assert state["messages"][-1].content == ANSWER
    state = parent.invoke({"messages": [HumanMessage("And a drug?")]}, config)
    assert [m.type for m in state["messages"]] == ["human", "ai", "human", "ai"]


# --- no deadlock, whatever the concurrency limit ---------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["superstep", "eager", "sequential"])
def test_sync_calls_with_max_concurrency_one_finish(mode: str) -> None:
    comp, fakes = build(delay=0.05, mode=mode)
    limit = {"max_concurrency": 1}
    assert comp.invoke("q", limit)["answer"] == ANSWER
    assert [o["answer"] for o in comp.batch(["a", "b"], limit)] == [ANSWER, ANSWER]
    events = list(comp.stream("q", limit))  # custom stream mode: LangGraph's stream waiter
    assert events[-1]["type"] == "done"
    # The limit is the experts': none of their calls overlapped.
    assert not overlapping(fakes["math"].calls + fakes["medicine"].calls)


@pytest.mark.timeout(60)
def test_inside_a_users_graph_with_max_concurrency_one() -> None:
    comp, _ = build()

    def ask(state: MessagesState) -> dict:
        return {"messages": [AIMessage(comp.invoke(state["messages"])["answer"])]}

    parent = StateGraph(MessagesState).add_node("ask", ask).add_edge(START, "ask").compile()
    for run in (parent, StateGraph(MessagesState).add_node("c", comp).add_edge(START, "c")):
        graph = run if run is parent else run.compile()
        state = graph.invoke({"messages": [HumanMessage("q")]}, {"max_concurrency": 1})
        assert state["messages"][-1].content == ANSWER


# --- async end to end -----------------------------------------------------------------------


async def test_async_only_experts_run_under_ainvoke_without_a_thread() -> None:
    threads: set[str] = set()

    async def answer(messages: Any) -> str:
        threads.add(threading.current_thread().name)
        await asyncio.sleep(0.01)
        return "async answer"

    experts = [
        Expert(name=name, description=f"{name} questions", llm=RunnableLambda(answer))
        for name in ("math", "medicine", "history")
    ]
    comp = create_comp_llm(
        experts,
        generator=literal_generator(fake_llm(PLAN)),
        router=KeywordEmbeddings(),
        aggregator=literal_aggregator(fake_llm(ANSWER)),
    )
    out = CompLLMOutput.model_validate(await comp.ainvoke("q"))
    assert {r.status for r in out.results.values()} == {"ok"}
    assert threads == {threading.current_thread().name}  # the event loop's own thread
    # A sync call cannot run an async-only expert, and says so.
    failed = CompLLMOutput.model_validate(comp.invoke("q")).results["q1"]
    assert failed.status == "failed" and "ainvoke" in (failed.error or "")


async def test_concurrent_ainvokes_do_not_mix_their_answers() -> None:
    comp, _ = build(delay=0.05)
    questions = [f"question number {i}" for i in range(50)]
    outs = await asyncio.gather(*(comp.ainvoke({"plan": Plan.single(q)}) for q in questions))
    assert [o["query"] for o in outs] == questions
    assert all(o["results"]["q1"].question == q for o, q in zip(outs, questions, strict=True))


# --- plans as input ------------------------------------------------------------------------


def test_a_given_plan_skips_decomposition_and_a_routed_one_routing() -> None:
    generator = recording_llm(PLAN)
    embeddings = KeywordEmbeddings()
    comp, _ = build(generator=generator, router=embeddings)
    plan = Plan(
        query="my own plan",
        sub_queries=(
            SubQuery(id="a", question="What is the sum of 1 and 1?"),
            SubQuery(id="b", question="Times {a}, a number", depends_on=("a",)),
        ),
    )
    out = CompLLMOutput.model_validate(comp.invoke({"plan": plan}))
    assert generator.prompts == []
    assert [sq.expert for sq in out.plan.sub_queries] == ["math", "math"]
    assert out.query == "my own plan" and out.answer == ANSWER
    embedded = len(embeddings.calls)
    route = RoutingDecision(
        sub_query_id="a", question="x", expert="history", score=1.0, scores={"history": 1.0}
    )
    routed = Plan(query="routed", sub_queries=(SubQuery(id="a", question="x", route=route),))
    out = CompLLMOutput.model_validate(comp.invoke(routed))
    assert len(embeddings.calls) == embedded  # not routed again
    assert out.results["a"].expert == "history" and generator.prompts == []


def test_an_invalid_plan_is_rejected_before_anything_runs() -> None:
    comp, fakes = build()
    bad = {"query": "q", "sub_queries": [{"id": "a", "question": "x", "depends_on": ["a"]}]}
    with pytest.raises(ValueError, match="depends on itself"):
        comp.invoke({"plan": bad})
    with pytest.raises(TypeError, match="got None"):
        comp.invoke(None)
    assert fakes["math"].calls == []


# --- the conversation reaches the decomposer -------------------------------------------------


def test_the_decomposer_sees_the_system_message_and_earlier_turns() -> None:
    generator = recording_llm(PLAN)
    comp, _ = build(generator=generator, aggregator=fake_llm(ANSWER))
    comp.invoke(
        [
            SystemMessage("You are a travel assistant."),
            HumanMessage("Tell me about France."),
            AIMessage("France is a country in Europe."),
            HumanMessage("And its capital?"),
        ]
    )
    prompt = generator.prompts[0]
    context = prompt[-2].text
    assert prompt[-1].text.endswith("And its capital?")
    assert "System: You are a travel assistant." in context
    assert "User: Tell me about France." in context
    assert "Assistant: France is a country in Europe." in context
    assert "self-contained" not in prompt[-1].text  # the instruction is in the context message


def test_a_follow_up_on_a_thread_carries_the_conversation() -> None:
    generator = recording_llm(PLAN)
    comp, _ = build(generator=generator, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "chat"}}
    comp.invoke("Who wrote Hamlet?", config)
    out = comp.invoke("When was he born?", config)
    assert [m.type for m in out["messages"]] == ["human", "ai", "human", "ai"]
    context = generator.prompts[1][-2].text
    assert "User: Who wrote Hamlet?" in context and f"Assistant: {ANSWER}" in context
    assert len(generator.prompts[0]) == len(generator.prompts[1]) - 1  # no context at first


def test_the_conversation_is_bounded() -> None:
    generator = recording_llm(PLAN)
    comp, _ = build(generator=generator)
    turns = [HumanMessage(f"old question {i} " + "x" * 900) for i in range(20)]
    comp.invoke([*turns, HumanMessage("latest?")])
    context = generator.prompts[0][-2].text
    assert "old question 19" in context and "old question 10" not in context
    assert len(context) < 2600  # max_chars of the default ConversationPolicy, plus the header


# --- where LangGraph and LangChain users put it -------------------------------------------


def test_as_tool_takes_a_question_and_returns_the_answer_text() -> None:
    comp, _ = build()
    tool = comp.as_tool()
    assert tool.name == "comp_llm" and set(tool.args) == {"query"}
    assert tool.invoke({"query": "What is 2+3?"}) == ANSWER
    assert tool.invoke("What is 2+3?") == ANSWER


async def test_as_tool_async() -> None:
    comp, _ = build()
    assert await comp.as_tool(name="experts").ainvoke({"query": "q"}) == ANSWER


def test_an_output_parser_reads_the_answer() -> None:
    comp, _ = build()
    chain = comp | StrOutputParser()
    assert chain.invoke("q") == ANSWER
    assert "".join(chain.stream("q")) == ANSWER
    assert comp.pipe(StrOutputParser()).invoke("q") == ANSWER


@pytest.mark.parametrize("stream_plan", [False, True])
def test_messages_stream_carries_only_the_final_answers_tokens(stream_plan: bool) -> None:
    math = Expert(name="math", description="sum add", llm=recording_llm("expert tokens here"))
    comp = create_comp_llm(
        [math],
        generator=literal_generator(
            recording_llm(plan_json(("q1", "sum one", []), ("q2", "add two", [])), "unused plan")
        ),
        router=KeywordEmbeddings(),
        aggregator=literal_aggregator(recording_llm("the final answer")),
        mode="eager",
        stream_plan=stream_plan,
    )
    chunks = [m for m, _ in comp.stream("q", stream_mode="messages")]
    # Streamed once, token by token; the final message in the state is not repeated.
    assert "".join(m.content for m in chunks) == "the final answer"
    everything = [
        m.content
        for m, _ in comp.stream(
            "q", {"configurable": {"stream_all_tokens": True}}, stream_mode="messages"
        )
    ]
    assert any("expert" in c for c in everything) and any("sub_queries" in c for c in everything)


# --- failures -------------------------------------------------------------------------------


def test_an_aggregator_failure_raises_with_every_sub_answer_and_resumes() -> None:
    class FlakyChat(FakeListChatModel):
        broken: bool = True

        def _stream(self, *args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise RuntimeError("the aggregator is down")
            yield from super()._stream(*args, **kwargs)

    aggregator = FlakyChat(responses=["recovered"])
    comp, fakes = build(aggregator=aggregator, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(AggregationError, match="the aggregator is down") as failure:
        comp.invoke("q", config)
    output = failure.value.output
    assert output.answer == ""
    statuses = {k: r.status for k, r in output.results.items()}
    assert statuses == dict.fromkeys(("q1", "q2", "q3"), "ok")
    assert output.results["q3"].answer.startswith("math answer")
    calls = len(fakes["math"].calls)
    aggregator.broken = False
    assert comp.invoke(None, config)["answer"] == "recovered"
    assert len(fakes["math"].calls) == calls  # only the aggregator ran again


def test_architecture_doc_draws_the_real_graph() -> None:
    from pathlib import Path

    comp, _ = build(review_plan=True, checkpointer=InMemorySaver())
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert "```mermaid\n" + comp.get_graph().draw_mermaid().strip() + "\n```" in doc, (
        "docs/architecture.md's pipeline drawing is stale: paste get_graph().draw_mermaid()"
    )
