"""Environment and tool calls under deadlines: errors and timeouts become observations and
counted flags, never a hang."""

from __future__ import annotations

import time

import pytest

from flowrl.agents import (CallPool, MarkerToolCallParser, StepResult, Tool, ToolEnvironment,
                           call_with_timeout)
from flowrl.agents.errors import AgentError
from flowrl.errors import ConfigError

ARG = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}


def echo(x: str) -> str:
    if x == "boom":
        raise RuntimeError("kaput")
    if x == "hang":
        time.sleep(30)
    return f"<{x}>"


class EchoEnv(ToolEnvironment):
    def __init__(self) -> None:
        super().__init__([Tool("echo", echo, ARG)], MarkerToolCallParser("echo", "x", "!"),
                         tool_timeout_s=0.3)

    def final_reward(self, answer: str) -> float:
        return float(answer == self.sample["answer"])


def test_pool_runs_calls_concurrently_and_reports_errors_and_timeouts():
    pool = CallPool(num_workers=4, timeout_s=0.5)
    start = time.monotonic()
    outs = pool.run("echo", echo, [("a",), ("boom",), ("hang",), ("b",)])
    assert time.monotonic() - start < 3  # the hanging call was abandoned at its deadline
    assert [o.kind for o in outs] == ["ok", "error", "timeout", "ok"]
    assert outs[0].value == "<a>"
    assert outs[1].value == "RuntimeError: kaput"
    assert outs[2].value == "echo took longer than 0.5s"
    assert pool.timeouts == 1
    # the abandoned call's slot was freed: four more calls still run at once
    start = time.monotonic()
    assert [o.kind for o in pool.run("sleep", time.sleep, [(0.3,)] * 4)] == ["ok"] * 4
    assert time.monotonic() - start < 1.0


def test_pool_settings_are_checked():
    with pytest.raises(ConfigError, match="agent pool: timeout_s must be > 0, got 0"):
        CallPool(2, 0)
    with pytest.raises(ConfigError, match="agent pool: num_workers must be >= 1, got 0"):
        CallPool(0, 1.0)


def test_tool_environment_turns_failures_into_observations():
    env = EchoEnv()
    env.reset({"answer": "7"})
    ok = env.step("hi!")
    assert (ok.observation, ok.done, ok.info) == ("<hi>", False, {"tool_calls": 1})
    err = env.step("boom!")
    assert err.observation == "error: tool 'echo': RuntimeError: kaput"
    assert err.info == {"tool_calls": 1, "tool_errors": 1} and not err.done
    start = time.monotonic()
    slow = env.step("hang!")
    assert time.monotonic() - start < 2
    assert slow.observation == "error: tool 'echo': tool 'echo' took longer than 0.3s"
    assert slow.info == {"tool_calls": 1, "tool_timeouts": 1}
    bad = env.step("!x")
    assert bad.observation == "error: tool call (marker '!'): text after the marker: 'x'"
    assert bad.info == {"parse_errors": 1}
    final = env.step("7")
    assert (final.reward, final.done) == (1.0, True)


def test_tool_environment_reports_bad_arguments_and_unknown_tools():
    env = EchoEnv()
    env.parser = MarkerToolCallParser("ehco", "x", "!")
    env.reset({"answer": "1"})
    res = env.step("a!")
    assert res.observation == ("error: unknown tool 'ehco'; did you mean 'echo'? (tools: echo)")
    assert res.info == {"tool_calls": 1, "tool_errors": 1}
    env.parser = MarkerToolCallParser("echo", "y", "!")
    res = env.step("a!")
    assert res.observation.startswith("error: tool 'echo': arguments: 'x' is a required")


def test_step_result_accepts_a_gym_tuple_and_names_a_bad_return():
    assert StepResult.of(("obs", 1, True, None), "E") == StepResult("obs", 1.0, True, {})
    with pytest.raises(AgentError, match=r"environment E: step\(\) must return a StepResult "
                                         r"or \(observation, reward, done, info\), got str"):
        StepResult.of("obs", "E")


def test_call_with_timeout_returns_at_the_deadline():
    start = time.monotonic()
    out = call_with_timeout("tool 'echo'", echo, ("hang",), 0.2)
    assert out.kind == "timeout" and time.monotonic() - start < 2
