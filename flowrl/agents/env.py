"""The environment API: ``reset(sample) -> observation`` and ``step(action) -> observation,
reward, done, info``.

Observations and actions are text. The rollout encodes an observation once and appends its
ids to the trajectory (masked out of the loss); the action is the decoded text of the
policy's turn, used only to *act*: the training path keeps the sampled ids.

:class:`ToolEnvironment` is the environment of tool use: a turn that calls a tool (in the
parser's format) gets the tool's output as the observation; a turn without a call is the
final answer, scored by :meth:`ToolEnvironment.final_reward`. Tool errors, bad arguments,
unknown tools, malformed calls and timeouts become observations the policy sees, flagged in
``info`` (``tool_error``, ``tool_timeout``, ``parse_error``) so the rollout can count them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from flowrl.agents.errors import AgentError
from flowrl.agents.parsers import JSONToolCallParser, ToolCallParser
from flowrl.agents.pool import ToolProcessPool, call_with_timeout
from flowrl.agents.tools import Tool, ToolSet


@dataclass
class StepResult:
    """What one :meth:`Environment.step` returns (a 4-tuple is accepted too)."""

    observation: str
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Any, env: str) -> StepResult:
        """``value`` as a :class:`StepResult` (from a ``(obs, reward, done, info)`` tuple)."""
        if isinstance(value, StepResult):
            return value
        if isinstance(value, tuple) and len(value) == 4:
            return cls(str(value[0]), float(value[1]), bool(value[2]), dict(value[3] or {}))
        raise AgentError(f"environment {env}: step() must return a StepResult or "
                         f"(observation, reward, done, info), got {type(value).__name__}")


class Environment(ABC):
    """One episode's environment. A new one is made per sample (``make_environment``), so
    keep per-episode state on ``self``."""

    #: extra strings that end a policy turn (a tool-call closing tag, say)
    stop_strings: tuple[str, ...] = ()

    @abstractmethod
    def reset(self, sample: dict[str, Any]) -> str:
        """Start an episode for ``sample`` (the dataset row's columns); the first
        observation, appended after the prompt ("" for none)."""

    @abstractmethod
    def step(self, action: str) -> StepResult | tuple:
        """Act on the policy's turn ``action``: ``(observation, reward, done, info)``."""


class ToolEnvironment(Environment):
    """Tool use: tools by name, a tool-call format, and a reward for the final answer.

    ``tool_timeout_s`` bounds every tool call (run in a daemon thread); with ``runner`` (a
    :class:`~flowrl.agents.pool.ToolProcessPool`, shared by the module's environments) calls
    run in worker processes that are killed at the runner's deadline. Subclasses override
    :meth:`final_reward` (and :meth:`reset`, :meth:`format_result` to shape observations).
    """

    def __init__(self, tools: list[Tool] | ToolSet, parser: ToolCallParser | None = None,
                 tool_timeout_s: float = 5.0, runner: ToolProcessPool | None = None) -> None:
        self.tools = tools if isinstance(tools, ToolSet) else ToolSet(tools)
        self.parser = parser or JSONToolCallParser()
        self.stop_strings = tuple(self.parser.stop_strings)
        self.tool_timeout_s, self.runner = tool_timeout_s, runner
        self.sample: dict[str, Any] = {}

    def reset(self, sample: dict[str, Any]) -> str:
        self.sample = sample
        return ""

    def final_reward(self, answer: str) -> float:
        """The reward of the final answer ``answer`` (0 unless overridden)."""
        return 0.0

    def format_result(self, tool: str, result: str) -> str:
        """The observation for a tool's result."""
        return result

    def format_error(self, message: str) -> str:
        """The observation for a failed call (the policy sees it and may try again)."""
        return f"error: {message}"

    def prepare_arguments(self, tool: str, arguments: dict) -> dict:
        """Hook to fill arguments from the episode (e.g. defaults taken from the sample)."""
        return arguments

    def step(self, action: str) -> StepResult:
        try:
            call = self.parser.parse(action)
        except AgentError as err:
            return StepResult(self.format_error(str(err)), info={"parse_errors": 1})
        if call is None:
            return StepResult("", self.final_reward(action), True, {"final_answer": 1})
        try:
            tool = self.tools.get(call.name)
            arguments = self.prepare_arguments(call.name, call.arguments)
            tool.validate(arguments)
        except AgentError as err:
            return StepResult(self.format_error(str(err)),
                              info={"tool_calls": 1, "tool_errors": 1})
        name = f"tool '{tool.name}'"
        out = (self.runner.call(name, tool, (arguments,)) if self.runner is not None else
               call_with_timeout(name, tool, (arguments,), self.tool_timeout_s))
        if out.kind == "ok":
            return StepResult(self.format_result(tool.name, out.value), info={"tool_calls": 1})
        key = "tool_timeouts" if out.kind == "timeout" else "tool_errors"
        return StepResult(self.format_error(f"tool '{tool.name}': {out.value}"),
                          info={"tool_calls": 1, key: 1})
