"""Tool-call formats: how a tool call is read from the policy's text.

A parser's :meth:`~ToolCallParser.parse` returns the :class:`ToolCall` in a turn's text,
``None`` when the turn calls no tool (it is then the final answer), or raises
:class:`ToolCallParseError` for a malformed call (the rollout shows the message to the
policy as an observation and counts it in ``agent/parse_errors``).

The default format (``"json"``) is the one Hermes / Qwen chat templates use::

    <tool_call>{"name": "calculator", "arguments": {"expression": "3+4"}}</tool_call>

``"marker"`` is a compact format for tiny vocabularies: the text before a one-character
marker is the single argument of one tool (``3+4!`` calls ``calculator(expression="3+4")``),
and the marker ends the turn. Plug in another format with any object that has ``parse`` and
``stop_strings`` (see :class:`ToolCallParser`), or register it in :data:`PARSERS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from flowrl.agents.errors import ToolCallParseError, ToolDefinitionError


@dataclass(frozen=True)
class ToolCall:
    """A parsed call: the tool's name and its arguments (a JSON object)."""

    name: str
    arguments: dict = field(default_factory=dict)


class ToolCallParser(Protocol):
    """What a tool-call format provides."""

    #: strings that end a policy turn when generated (e.g. the call's closing tag)
    stop_strings: tuple[str, ...]

    def parse(self, text: str) -> ToolCall | None: ...


class JSONToolCallParser:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the default)."""

    name = "json"

    def __init__(self, open_tag: str = "<tool_call>", close_tag: str = "</tool_call>") -> None:
        self.open_tag, self.close_tag = open_tag, close_tag
        self.stop_strings = (close_tag,)

    def parse(self, text: str) -> ToolCall | None:
        start = text.find(self.open_tag)
        if start < 0:
            return None
        end = text.find(self.close_tag, start)
        if end < 0:
            raise ToolCallParseError(f"tool call (json): {self.open_tag} without "
                                     f"{self.close_tag}")
        body = text[start + len(self.open_tag):end].strip()
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as err:
            raise ToolCallParseError(f"tool call (json): not valid JSON ({err.msg} at "
                                     f"character {err.pos}): {body[:80]!r}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise ToolCallParseError(f"tool call (json): expected an object with a string "
                                     f"'name', got {body[:80]!r}")
        args = obj.get("arguments", {})
        if isinstance(args, str):  # OpenAI-style: arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                raise ToolCallParseError(f"tool call (json): 'arguments' of "
                                         f"'{obj['name']}' is a string but not JSON") from None
        if not isinstance(args, dict):
            raise ToolCallParseError(f"tool call (json): 'arguments' of '{obj['name']}' must "
                                     f"be an object, got {type(args).__name__}")
        return ToolCall(obj["name"], args)


class MarkerToolCallParser:
    """``ARG<marker>`` calls ``tool(argument=ARG)``: a one-token call for tiny vocabularies.

    The marker ends the turn (it is a stop string). Text after the marker is not allowed.
    """

    name = "marker"

    def __init__(self, tool: str, argument: str, marker: str = "!") -> None:
        if len(marker) != 1:
            raise ToolDefinitionError(f"marker parser for tool '{tool}': the marker must be "
                                      f"one character, got {marker!r}")
        self.tool, self.argument, self.marker = tool, argument, marker
        self.stop_strings = (marker,)

    def parse(self, text: str) -> ToolCall | None:
        at = text.find(self.marker)
        if at < 0:
            return None
        rest = text[at + 1:].strip()
        if rest:
            raise ToolCallParseError(f"tool call (marker {self.marker!r}): text after the "
                                     f"marker: {rest[:40]!r}")
        return ToolCall(self.tool, {self.argument: text[:at].strip()})


#: Tool-call formats by name (``make_parser("json")``).
PARSERS: dict[str, Callable[..., Any]] = {"json": JSONToolCallParser,
                                          "marker": MarkerToolCallParser}


def make_parser(name: str = "json", **options: Any) -> ToolCallParser:
    """The parser registered as ``name``, built with ``options``."""
    if name not in PARSERS:
        raise ToolDefinitionError(f"unknown tool-call format {name!r}; known: "
                                  f"{', '.join(sorted(PARSERS))}")
    return PARSERS[name](**options)
