"""Errors of the agent package (all :class:`flowrl.errors.FlowRLError`)."""

from __future__ import annotations

from flowrl.errors import ConfigError, FlowRLError


class AgentError(FlowRLError):
    """Base of the agent package's errors."""


class ToolDefinitionError(AgentError, ConfigError):
    """A tool is declared wrongly (bad name, invalid JSON schema); names the tool."""


class ToolArgumentError(AgentError, ValueError):
    """A tool call's arguments do not fit the tool's JSON schema; names tool and field."""


class UnknownToolError(AgentError, LookupError):
    """A tool call names a tool that is not declared; the message lists the known ones."""


class ToolCallParseError(AgentError, ValueError):
    """The policy's text holds a malformed tool call; names the parser and what is wrong."""


class TrajectoryError(AgentError, ValueError):
    """A trajectory does not fit its budget or batch layout; names the setting."""
