from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import KeywordEmbeddings, fake_llm, make_expert, plan_json, recording_llm
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_tests.unit_tests import ChatModelUnitTests
from langgraph.checkpoint.memory import InMemorySaver

from langchain_complm import ChatCompLLM, Expert, create_comp_llm
from langchain_complm.aggregate import ResponseAggregator
from langchain_complm.decompose.generator import SubQueryGenerator

PLAN = plan_json(("q1", "What is the sum of 2 and 3?", []), ("q2", "Which drug treats it?", []))


def comp_llm(answer: str = "Five, and aspirin. STOP here") -> Any:
    math, _ = make_expert("math")
    medicine, _ = make_expert("medicine")
    return create_comp_llm(
        [math, medicine],
        # The fake plan does not ask the tests' questions: no repair.
        generator=SubQueryGenerator(llm=fake_llm(PLAN), repair=False),
        router=KeywordEmbeddings(),
        aggregator=ResponseAggregator(llm=fake_llm(answer), check_coverage=False),
    )


class TestChatCompLLMStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatCompLLM]:
        return ChatCompLLM

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"comp_llm": comp_llm()}

    @property
    def has_tool_calling(self) -> bool:
        return False  # bind_tools raises, pointing to as_tool()


def test_invoke_returns_answer_with_trace_metadata() -> None:
    chat = ChatCompLLM(comp_llm=comp_llm())
    reply = chat.invoke([HumanMessage("What is 2+3, and which drug treats headaches?")])
    assert isinstance(reply, AIMessage)
    assert reply.content == "Five, and aspirin. STOP here"
    trace = reply.response_metadata["complm"]
    assert [sq["id"] for sq in trace["plan"]["sub_queries"]] == ["q1", "q2"]
    assert trace["results"]["q1"]["expert"] == "math"


def test_drops_into_an_lcel_chain() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "Answer briefly: {question}")])
    chain = prompt | ChatCompLLM(comp_llm=comp_llm()) | StrOutputParser()
    assert chain.invoke({"question": "2+3 and a drug?"}) == "Five, and aspirin. STOP here"
    assert (
        chain.batch([{"question": "a"}, {"question": "b"}]) == ["Five, and aspirin. STOP here"] * 2
    )


def test_stream_yields_aggregator_tokens_and_stop_cuts_them() -> None:
    chat = ChatCompLLM(comp_llm=comp_llm())
    chunks = list(chat.stream("q"))
    assert len(chunks) > 2
    assert "".join(c.content for c in chunks) == "Five, and aspirin. STOP here"
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.response_metadata["complm"]["answer"] == "Five, and aspirin. STOP here"
    stopped = ChatCompLLM(comp_llm=comp_llm(), stop=["STOP"])
    assert "".join(c.content for c in stopped.stream("q")) == "Five, and aspirin. "
    assert stopped.invoke("q").content == "Five, and aspirin. "
    assert ChatCompLLM(comp_llm=comp_llm()).invoke("q", stop=[", and"]).content == "Five"


async def test_async_invoke_and_stream() -> None:
    chat = ChatCompLLM(comp_llm=comp_llm())
    assert (await chat.ainvoke("q")).content == "Five, and aspirin. STOP here"
    text = "".join([c.content async for c in chat.astream("q")])
    assert text == "Five, and aspirin. STOP here"


def test_failure_policy_overrides_reach_the_executor() -> None:
    math, fake = make_expert("math", fail_times=1)
    medicine, _ = make_expert("medicine")
    comp = create_comp_llm(
        [math, medicine],
        generator=fake_llm(PLAN),
        router=KeywordEmbeddings(),
        aggregator=ResponseAggregator(llm=fake_llm("done"), check_coverage=False),
    )
    reply = ChatCompLLM(comp_llm=comp, max_retries=1).invoke("q")
    assert reply.response_metadata["complm"]["results"]["q1"]["status"] == "ok"
    assert len(fake.calls) == 2


def test_works_as_the_model_of_a_langgraph_agent_node() -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph

    chat = ChatCompLLM(comp_llm=comp_llm("It is five."))

    def agent(state: MessagesState) -> dict:
        return {"messages": [chat.invoke(state["messages"])]}

    graph = (
        StateGraph(MessagesState)
        .add_node("agent", agent)
        .add_edge(START, "agent")
        .compile(checkpointer=InMemorySaver())
    )
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"messages": [HumanMessage("What is 2+3?")]}, config)
    state = graph.invoke({"messages": [HumanMessage("And a drug?")]}, config)
    assert [m.type for m in state["messages"]] == ["human", "ai", "human", "ai"]
    assert state["messages"][-1].content == "It is five."
    # Each turn answers the latest human message.
    trace = state["messages"][-1].response_metadata["complm"]
    assert trace["query"] == "And a drug?"


def usage_comp(**kwargs: Any) -> Any:
    math = Expert(name="math", description="sum add", llm=recording_llm("five", usage=5))
    medicine = Expert(
        name="medicine", description="drug treat", llm=recording_llm("aspirin", usage=5)
    )
    return create_comp_llm(
        [math, medicine],
        generator=recording_llm(PLAN, usage=5),
        router=KeywordEmbeddings(),
        aggregator=recording_llm("Five, and aspirin.", usage=5),
        **kwargs,
    )


def test_forwards_the_callers_config_to_a_checkpointed_runnable() -> None:
    comp = usage_comp(checkpointer=InMemorySaver())
    chat = ChatCompLLM(comp_llm=comp)
    config = {"configurable": {"thread_id": "t1"}}
    # A question the fake plan fits: plan repair drops sub-queries the question does not ask.
    assert chat.invoke("What is 2+3, and which drug treats it?", config).content == (
        "Five, and aspirin."
    )
    assert "".join(c.content for c in chat.stream("And a drug?", config)) == "Five, and aspirin."
    messages = comp.get_state(config).values["messages"]
    assert [m.type for m in messages] == ["human", "ai", "human", "ai"]
    with pytest.raises(ValueError, match="thread_id"):
        chat.invoke("no thread")


async def test_forwards_the_callers_config_async() -> None:
    comp = usage_comp(checkpointer=InMemorySaver())
    chat = ChatCompLLM(comp_llm=comp)
    config = {"configurable": {"thread_id": "t2"}}
    await chat.ainvoke("What is 2+3?", config)
    assert "".join([c.content async for c in chat.astream("q", config)]) == "Five, and aspirin."
    assert len((await comp.aget_state(config)).values["messages"]) == 4


def test_usage_sums_every_model_call_and_the_trace_stays_small() -> None:
    chat = ChatCompLLM(comp_llm=usage_comp())
    reply = chat.invoke("What is 2+3, and a drug?")
    # Decomposer, two experts and the aggregator: four calls of 5 + 5 tokens.
    assert reply.usage_metadata == {"input_tokens": 20, "output_tokens": 20, "total_tokens": 40}
    merged = None
    for chunk in chat.stream("What is 2+3, and a drug?"):
        merged = chunk if merged is None else merged + chunk
    assert merged.usage_metadata["total_tokens"] == 40
    summary = reply.response_metadata["complm"]
    assert "prompt" not in json.dumps(summary) and "attempts" not in json.dumps(summary)
    full = ChatCompLLM(comp_llm=usage_comp(), trace="full").invoke("What is 2+3, and a drug?")
    assert len(json.dumps(summary)) < len(json.dumps(full.response_metadata["complm"])) / 2
    assert full.response_metadata["complm"]["results"]["q1"]["attempts"]
    none = ChatCompLLM(comp_llm=usage_comp(), trace="none").invoke("q")
    assert "complm" not in none.response_metadata


def test_an_agents_message_stream_gets_only_the_answer_once() -> None:
    from langgraph.graph import START, MessagesState, StateGraph

    chat = ChatCompLLM(comp_llm=usage_comp())

    def agent(state: MessagesState) -> dict:
        return {"messages": [chat.invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("agent", agent).add_edge(START, "agent").compile()
    chunks = [
        m for m, meta in graph.stream({"messages": [HumanMessage("q")]}, stream_mode="messages")
    ]
    assert "".join(m.content for m in chunks) == "Five, and aspirin."


@pytest.mark.parametrize("use_async", [False, True])
async def test_streamed_runs_stay_inside_the_callers_trace(use_async: bool) -> None:
    from test_comp_llm import RunRecorder

    chat = ChatCompLLM(comp_llm=comp_llm())
    recorder = RunRecorder()
    if use_async:
        [c async for c in chat.astream("q", {"callbacks": [recorder]})]
    else:
        list(chat.stream("q", {"callbacks": [recorder]}))
    (top,) = [k for k, r in recorder.runs.items() if r["parent"] is None]
    assert recorder.runs[top]["name"] == "chat_model"  # the ChatCompLLM run
    experts = [k for k, r in recorder.runs.items() if r["name"].startswith("expert:")]
    assert len(experts) == 2
    assert all(recorder.ancestors(k)[-2:] == ["CompLLM", "chat_model"] for k in experts)


def test_bind_tools_says_how_to_use_it_as_a_tool_and_as_tool_answers() -> None:
    chat = ChatCompLLM(comp_llm=comp_llm())
    with pytest.raises(NotImplementedError, match=r"as_tool\(\)"):
        chat.bind_tools([])
    tool = chat.as_tool()
    assert tool.invoke({"query": "2+3?"}) == "Five, and aspirin. STOP here"
