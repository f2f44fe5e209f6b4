"""Multi-turn, tool-using rollouts (see docs/agents.md).

* :mod:`~flowrl.agents.env` the environment API (``reset``/``step``) and ToolEnvironment;
* :mod:`~flowrl.agents.tools` tools by name, JSON-schema arguments and a callable;
* :mod:`~flowrl.agents.parsers` tool-call formats (default: ``<tool_call>{json}</tool_call>``);
* :mod:`~flowrl.agents.pool` environment/tool calls with a deadline each;
* :mod:`~flowrl.agents.trajectory` token-id bookkeeping and the batch layout;
* :mod:`~flowrl.agents.rollout` the multi-turn rollout module.
"""

from flowrl.agents.env import Environment, StepResult, ToolEnvironment
from flowrl.agents.errors import (AgentError, ToolArgumentError, ToolCallParseError,
                                  ToolDefinitionError, TrajectoryError, UnknownToolError)
from flowrl.agents.parsers import (PARSERS, JSONToolCallParser, MarkerToolCallParser, ToolCall,
                                   ToolCallParser, make_parser)
from flowrl.agents.pool import CallPool, Outcome, ToolProcessPool, call_with_timeout
from flowrl.agents.rollout import AgentArgs, AgentDataset, AgentRollout, TurnIO, run_episodes
from flowrl.agents.tools import Tool, ToolSet
from flowrl.agents.trajectory import Trajectory, full_sequence, multi_turn_gae, to_batch

__all__ = ["Environment", "StepResult", "ToolEnvironment", "AgentError", "ToolArgumentError",
           "ToolCallParseError", "ToolDefinitionError", "TrajectoryError", "UnknownToolError",
           "PARSERS", "JSONToolCallParser", "MarkerToolCallParser", "ToolCall",
           "ToolCallParser", "make_parser", "CallPool", "Outcome", "ToolProcessPool", "call_with_timeout",
           "AgentArgs", "AgentDataset", "AgentRollout", "TurnIO", "run_episodes", "Tool", "ToolSet",
           "Trajectory", "full_sequence", "multi_turn_gae", "to_batch"]
