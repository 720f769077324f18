"""lab's tools as LangChain tools, and LangChain tools in lab's registry (needs `langchain-core`, the
`langchain` extra).

    from labcli.reasoning import tools, tools_langchain
    lc = tools_langchain.to_langchain(tools.registry(tools.shipped_passages()))
    lc["Calculator"].invoke({"expression": "12 * 7 + 16"})        # '100', what lab's Calculator says
    counter = tools_langchain.from_langchain(word_count)     # any BaseTool of one argument
    tools.react(generate, {**tools.registry(), counter.name: counter}, question)

A lab Tool becomes a `StructuredTool` whose schema has one string field named by `Tool.arg` (the
calculator's `expression`, the retriever's `query`), so a LangChain agent sees what to pass. Going the
other way keeps lab's contract that a tool answers text and never raises: a LangChain tool's error
comes back as `error: ...`, as lab's own tools report theirs.
"""

from __future__ import annotations

from labcli.errors import UserError
from labcli.reasoning.tools import Tool

HINT = "pip install 'labcli[langchain]' (langchain-core)"


def _langchain():
    try:
        from langchain_core import tools as lc_tools
    except ImportError as exc:
        raise UserError("LangChain is not installed", HINT) from exc
    return lc_tools


def as_langchain(tool: Tool):
    """One lab Tool as a LangChain `StructuredTool` (input: {tool.arg: str}, output: str)."""
    from pydantic import Field, create_model

    lc_tools = _langchain()
    schema = create_model(f"{tool.name}Input", **{tool.arg: (str, Field(description=f"the {tool.arg} for {tool.name}"))})
    return lc_tools.StructuredTool.from_function(func=lambda **kwargs: tool(kwargs[tool.arg]), name=tool.name,
                                                 description=tool.description, args_schema=schema)


def to_langchain(tools: dict[str, Tool]) -> dict:
    """A lab registry as LangChain tools, by name."""
    return {name: as_langchain(t) for name, t in tools.items()}


def from_langchain(tool) -> Tool:
    """A LangChain tool of one argument as a lab Tool (usable in `react` and Toolformer decoding)."""
    lc_tools = _langchain()
    if not isinstance(tool, lc_tools.BaseTool):
        raise UserError(f"{tool!r} is not a LangChain tool", "pass a langchain_core.tools.BaseTool (e.g. made with @tool)")
    if len(tool.args) != 1:
        raise UserError(f"LangChain tool {tool.name} takes {len(tool.args)} arguments ({', '.join(tool.args)}); "
                        "lab's tools take one string", "wrap it in a tool of one argument that parses that string")
    arg = next(iter(tool.args))

    def call(text: str) -> str:
        try:
            return str(tool.invoke({arg: text}))
        except Exception as exc:  # noqa: BLE001 - lab's tools answer an error as text, the agent reads it
            return f"error: {exc.__class__.__name__}: {exc}"

    return Tool(tool.name, tool.description, call, arg=arg)
