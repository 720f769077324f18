"""lab's tools through LangChain's interface answer what lab's registry answers; LangChain tools run in lab's ReAct loop."""

from __future__ import annotations

import pytest

from labcli.errors import UserError
from labcli.reasoning import tools

lc_tools = pytest.importorskip("langchain_core.tools")
tools_langchain = pytest.importorskip("labcli.reasoning.tools_langchain")


@pytest.fixture(scope="module")
def lab_registry():
    return tools.registry(tools.shipped_passages("test"))


def test_calculator_and_retrieval_through_langchain_match_lab(lab_registry):
    lc = tools_langchain.to_langchain(lab_registry)
    assert all(isinstance(t, lc_tools.BaseTool) for t in lc.values())
    assert lc["Calculator"].args.keys() == {"expression"} and lc["Search"].args.keys() == {"query"}
    for expr in ("12 * 7 + 16", "10 / 4", "2 ** 10"):
        assert lc["Calculator"].invoke({"expression": expr}) == lab_registry["Calculator"](expr)
    assert lc["Calculator"].invoke({"expression": "12 * 7 + 16"}) == "100"
    query = "What language is spoken in Saint Vincent and the Grenadines?"
    assert lc["Search"].invoke({"query": query}) == lab_registry["Search"](query) == \
        "The primary language spoken in Saint Vincent and the Grenadines is Vincentian Creole."


def test_a_langchain_tool_runs_in_labs_react_loop():
    @lc_tools.tool
    def word_count(text: str) -> int:
        """Counts the words of a text."""
        return len(text.split())

    counter = tools_langchain.from_langchain(word_count)
    registry = {**tools.registry(), counter.name: counter}
    script = iter(["Action: word_count[the quick brown fox]\n", "Action: Calculator[4 * 3]\n", "Final Answer: 12"])
    trace = tools.react(lambda prompt: next(script), registry, "Four words times three?")
    assert trace.steps == [("word_count", "the quick brown fox", "4"), ("Calculator", "4 * 3", "12")]
    assert trace.answer == "12" and "word_count (Counts the words of a text.)" in trace.prompt


def test_langchain_errors_come_back_as_text_and_several_arguments_are_refused():
    @lc_tools.tool
    def fails(text: str) -> str:
        """Always fails."""
        raise RuntimeError("no network here")

    @lc_tools.tool
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    assert tools_langchain.from_langchain(fails)("x") == "error: RuntimeError: no network here"
    with pytest.raises(UserError, match="takes 2 arguments"):
        tools_langchain.from_langchain(add)
    with pytest.raises(UserError, match="not a LangChain tool"):
        tools_langchain.from_langchain(len)
