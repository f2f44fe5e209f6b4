"""Tools (JSON-schema arguments) and tool-call parsers: good calls and every error path."""

from __future__ import annotations

import pytest

from flowrl.agents import (JSONToolCallParser, MarkerToolCallParser, Tool, ToolArgumentError,
                           ToolCall, ToolCallParseError, ToolDefinitionError, ToolSet,
                           UnknownToolError, make_parser)
from flowrl.errors import FlowRLError

SCHEMA = {"type": "object", "properties": {"expression": {"type": "string"},
                                           "digits": {"type": "integer", "minimum": 0}},
          "required": ["expression"]}


def add(expression: str, digits: int = 0) -> int:
    return sum(int(t) for t in expression.split("+"))


def test_a_tool_validates_and_calls_with_its_schema():
    calc = Tool("calc", add, SCHEMA, "adds")
    assert calc({"expression": "3+4"}) == "7"
    assert calc.spec()["function"]["parameters"] is SCHEMA
    with pytest.raises(ToolArgumentError, match=r"tool 'calc': digits: -1 is less than the "
                                                r"minimum of 0"):
        calc({"expression": "1", "digits": -1})
    with pytest.raises(ToolArgumentError, match=r"tool 'calc': arguments: 'expression' is a "
                                                r"required property"):
        calc({})
    with pytest.raises(ToolArgumentError, match=r"tool 'calc': arguments must be an object"):
        calc.validate(["3+4"])


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "bad name!", "fn": add}, r"tool name 'bad name!' is not a valid name"),
    ({"name": "calc", "fn": 3}, r"tool 'calc': fn is not callable"),
    ({"name": "calc", "fn": add, "parameters": {"type": "array"}},
     r"tool 'calc': parameters must be a JSON schema of type 'object', got type 'array'"),
    ({"name": "calc", "fn": add, "parameters": {"type": "object", "properties": 3}},
     r"tool 'calc': parameters is not a valid JSON schema"),
])
def test_a_badly_declared_tool_is_refused_by_name(kwargs, message):
    with pytest.raises(ToolDefinitionError, match=message) as err:
        Tool(**kwargs)
    assert isinstance(err.value, FlowRLError)


def test_toolset_names_unknown_and_duplicate_tools():
    tools = ToolSet([Tool("calculator", add, SCHEMA)])
    assert tools.call("calculator", {"expression": "1+1"}) == "2"
    with pytest.raises(UnknownToolError, match=r"unknown tool 'calculater'; did you mean "
                                               r"'calculator'\? \(tools: calculator\)"):
        tools.get("calculater")
    with pytest.raises(ToolDefinitionError, match="tool 'calculator' is declared twice"):
        ToolSet([Tool("calculator", add, SCHEMA), Tool("calculator", add, SCHEMA)])


def test_json_parser_reads_the_default_format():
    p = JSONToolCallParser()
    text = 'let me add <tool_call>{"name": "calc", "arguments": {"expression": "3+4"}}' \
           '</tool_call>'
    assert p.parse(text) == ToolCall("calc", {"expression": "3+4"})
    assert p.parse('<tool_call>{"name": "calc", "arguments": "{\\"x\\": 1}"}</tool_call>') \
        == ToolCall("calc", {"x": 1})
    assert p.parse("the answer is 7") is None
    assert p.stop_strings == ("</tool_call>",)
    assert isinstance(make_parser(), JSONToolCallParser)


@pytest.mark.parametrize("text, message", [
    ('<tool_call>{"name": "calc"', r"tool call \(json\): <tool_call> without </tool_call>"),
    ("<tool_call>{name: calc}</tool_call>",
     r"tool call \(json\): not valid JSON \(Expecting property name enclosed in double quotes "
     r"at character 1\)"),
    ('<tool_call>["calc"]</tool_call>',
     r"tool call \(json\): expected an object with a string 'name'"),
    ('<tool_call>{"name": "calc", "arguments": [1]}</tool_call>',
     r"tool call \(json\): 'arguments' of 'calc' must be an object, got list"),
    ('<tool_call>{"name": "calc", "arguments": "x=1"}</tool_call>',
     r"tool call \(json\): 'arguments' of 'calc' is a string but not JSON"),
])
def test_json_parser_errors_name_the_problem(text, message):
    with pytest.raises(ToolCallParseError, match=message):
        JSONToolCallParser().parse(text)


def test_marker_parser_and_its_errors():
    p = MarkerToolCallParser("calculator", "expression", "!")
    assert p.parse("3+4!") == ToolCall("calculator", {"expression": "3+4"})
    assert p.parse("!") == ToolCall("calculator", {"expression": ""})
    assert p.parse("7") is None
    with pytest.raises(ToolCallParseError, match=r"tool call \(marker '!'\): text after the "
                                                 r"marker: '12'"):
        p.parse("!12")
    with pytest.raises(ToolDefinitionError, match="marker parser for tool 'calculator': the "
                                                  "marker must be one character, got '!!'"):
        MarkerToolCallParser("calculator", "expression", "!!")
    with pytest.raises(ToolDefinitionError, match="unknown tool-call format 'xml'; known: "
                                                  "json, marker"):
        make_parser("xml")
