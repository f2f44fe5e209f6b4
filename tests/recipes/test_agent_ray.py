"""``flowrl train`` with an ``agent:`` section on the Ray runtime (``runtime: ray``): the
AgentPolicy's episodes (tool calls, multi-turn) run in a Ray worker and train to the same
metrics, row for row, as the local runtime."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
ray = pytest.importorskip("ray")

from recipes.test_agent_recipe import config  # noqa: E402
from flowrl.recipes import build  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

#: a tool the tiny model can call: its vocabulary has "=", which the marker parser then reads
#: as ``echo(expression=<the turn's text>)`` (the recipe tests' "!" is not in it)
ECHO = '''
def echo(expression: str) -> str:
    """Echoes its argument."""
    return expression or "0"
'''


def _comparable(row: dict) -> dict:
    """A row without its wall-clock figures (times such as ``policy/agent/env_s``, rates),
    which differ run to run."""
    return {k: v for k, v in row.items()
            if not (k.startswith("time/") or k.endswith("_s") or k == "sync/gbps")}


def _learn(cfg: dict) -> tuple[list[dict], str]:
    engine, _ = build(cfg)
    try:
        return engine.learn(), type(engine.executor).__name__
    finally:
        engine.shutdown()


ECHO_AGENT = {"tools": ["echo.py:echo"], "parser": "marker",
              "parser_options": {"tool": "echo", "argument": "expression", "marker": "="}}


@pytest.mark.parametrize("agent", [{}, ECHO_AGENT, {"environment": "envs.py:make_env"}],
                         ids=["tools", "tool_calls", "environment"])
def test_agent_recipe_on_ray_matches_the_local_run(tmp_path, tiny_model, agent):
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    for d in (local_dir, ray_dir):
        d.mkdir()
        (d / "echo.py").write_text(ECHO)
    local, local_executor = _learn(config(local_dir, str(tiny_model), **agent))
    cfg = config(ray_dir, str(tiny_model), **agent)
    cfg["runtime"] = "ray"
    remote, ray_executor = _learn(cfg)
    assert (local_executor, ray_executor) == ("LocalExecutor", "RayExecutor")
    assert len(remote) == len(local) == 2
    assert remote[-1]["policy/agent/turns"] >= 1 and remote[-1]["policy/agent/env_errors"] == 0
    if "tools" in agent or not agent:  # the tools were loaded in the worker; none failed
        assert all(r["policy/agent/tool_errors"] == 0 for r in remote)
    if agent is ECHO_AGENT:  # the worker's episodes called the tool (and went on turning)
        assert sum(r["policy/agent/tool_calls"] for r in remote) > 0
    assert [_comparable(r) for r in remote] == [_comparable(r) for r in local]
