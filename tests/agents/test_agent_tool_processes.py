"""Tools in worker processes: a hanging call's process is killed and replaced."""

from __future__ import annotations

import time

import pytest

from agent_setup import LOOKUP, lookup, spin
from flowrl.agents import MarkerToolCallParser, Tool, ToolEnvironment, ToolProcessPool
from flowrl.errors import ConfigError


@pytest.fixture(scope="module")
def pool():
    p = ToolProcessPool(num_workers=1, timeout_s=1.0)
    yield p
    p.close()


def test_calls_errors_and_a_killed_hang(pool):
    assert pool.call("tool 'lookup'", lookup, ("12",)).value == "3"
    err = pool.call("tool 'lookup'", lookup, ("boom",))
    assert (err.kind, err.value) == ("error", "ValueError: lookup exploded")
    (proc, _), = list(pool._idle.queue)
    start = time.monotonic()
    out = pool.call("tool 'spin'", spin, ("forever",))
    assert time.monotonic() - start < 3
    assert (out.kind, out.value) == ("timeout", "tool 'spin' took longer than 1s; its worker "
                                                "process was killed")
    assert not proc.is_alive() and pool.replaced == 1
    # the replacement serves the next call (it may still be starting: the call waits for it)
    assert pool.call("tool 'spin'", spin, ("ok",)).value == "OK"


def test_an_unpicklable_call_is_an_error_and_the_worker_stays(pool):
    out = pool.call("tool 'x'", lambda: 1, ())
    assert out.kind == "error" and out.value.startswith("tool 'x' could not be sent to a "
                                                        "worker process")
    assert pool.call("tool 'lookup'", lookup, ("7",)).value == "7"


def test_tool_environment_runs_tools_in_the_process_pool(pool):
    env = ToolEnvironment([LOOKUP, Tool("spin", spin, {"type": "object", "properties": {
        "x": {"type": "string"}}})], MarkerToolCallParser("spin", "x", "!"), runner=pool)
    env.reset({})
    res = env.step("forever!")
    assert res.observation == ("error: tool 'spin': tool 'spin' took longer than 1s; its "
                               "worker process was killed")
    assert res.info == {"tool_calls": 1, "tool_timeouts": 1}
    assert env.step("hi!").observation == "HI"


def test_pool_settings_are_checked():
    with pytest.raises(ConfigError, match="tool process pool: num_workers must be >= 1 and "
                                          "timeout_s > 0, got 0 and 1.0"):
        ToolProcessPool(0, 1.0)
