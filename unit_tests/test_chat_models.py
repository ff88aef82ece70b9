from __future__ import annotations

from typing import Any

from fakes import KeywordEmbeddings, fake_llm, make_expert, plan_json
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_complm import ChatCompLLM, create_comp_llm
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
