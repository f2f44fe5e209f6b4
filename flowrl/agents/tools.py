"""Tools: a name, JSON-schema arguments and a Python callable.

>>> calc = Tool("calculator", calculate,
...             {"type": "object", "properties": {"expression": {"type": "string"}},
...              "required": ["expression"]}, description="evaluate + and - on integers")
>>> tools = ToolSet([calc]); tools.call("calculator", {"expression": "3+4"})
'7'

Arguments are checked against the schema (:mod:`jsonschema`, installed with ray) before the
callable runs; a bad argument is a :class:`ToolArgumentError` naming the tool and the field.
The callable's result is turned into the observation text with ``str``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import jsonschema

from flowrl.agents.errors import ToolArgumentError, ToolDefinitionError, UnknownToolError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Tool:
    """One tool. ``fn(**arguments)`` must be picklable (a module-level function) to run on
    Ray workers; ``parameters`` is a JSON schema of type ``object``."""

    name: str
    fn: Callable[..., Any]
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ToolDefinitionError(f"tool name {self.name!r} is not a valid name "
                                      f"(letters, digits, _ . -; at most 64 characters)")
        if not callable(self.fn):
            raise ToolDefinitionError(f"tool '{self.name}': fn is not callable ({self.fn!r})")
        if self.parameters.get("type") != "object":
            raise ToolDefinitionError(f"tool '{self.name}': parameters must be a JSON schema "
                                      f"of type 'object', got type "
                                      f"{self.parameters.get('type')!r}")
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters)
        except jsonschema.SchemaError as err:
            raise ToolDefinitionError(f"tool '{self.name}': parameters is not a valid JSON "
                                      f"schema: {err.message}") from None

    def validate(self, arguments: Any) -> None:
        """Raise :class:`ToolArgumentError` (naming the tool and field) unless ``arguments``
        fits the schema."""
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"tool '{self.name}': arguments must be an object, got "
                                    f"{type(arguments).__name__}")
        errors = sorted(jsonschema.Draft202012Validator(self.parameters).iter_errors(arguments),
                        key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = ".".join(str(p) for p in e.path) or "arguments"
            raise ToolArgumentError(f"tool '{self.name}': {where}: {e.message}")

    def __call__(self, arguments: dict) -> str:
        """Validate, call, and return the result as text."""
        self.validate(arguments)
        return str(self.fn(**arguments))

    def spec(self) -> dict:
        """The OpenAI-style function description (for a system prompt or chat template)."""
        return {"type": "function", "function": {"name": self.name,
                                                  "description": self.description,
                                                  "parameters": self.parameters}}


class ToolSet:
    """Tools by name (names are unique)."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self.tools: dict[str, Tool] = {}
        for t in tools:
            if not isinstance(t, Tool):
                raise ToolDefinitionError(f"ToolSet takes Tool objects, got {t!r}")
            if t.name in self.tools:
                raise ToolDefinitionError(f"tool '{t.name}' is declared twice")
            self.tools[t.name] = t

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)

    def get(self, name: str) -> Tool:
        """The tool called ``name``; :class:`UnknownToolError` with a "did you mean" if none."""
        if name not in self.tools:
            hint = difflib.get_close_matches(str(name), list(self.tools), n=1)
            raise UnknownToolError(
                f"unknown tool {name!r}" + (f"; did you mean '{hint[0]}'?" if hint else "") +
                f" (tools: {', '.join(sorted(self.tools)) or 'none'})")
        return self.tools[name]

    def call(self, name: str, arguments: dict) -> str:
        """Run tool ``name`` on ``arguments`` in this thread (see :mod:`flowrl.agents.pool`
        for calls with a deadline)."""
        return self.get(name)(arguments)

    def specs(self) -> list[dict]:
        return [t.spec() for t in self.tools.values()]
