"""The agent rollout on Ray workers gives the same run as the local executor."""

from __future__ import annotations

import pytest

from agent_setup import agent_config, build_agent
from tiny_engines import comparable

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]


def _same(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in comparable(rows)]


def test_ray_agent_run_matches_local_run():
    local = build_agent(agent_config()).learn()
    cfg = agent_config()
    cfg["runtime"] = "ray"
    engine = build_agent(cfg)
    try:
        remote = engine.learn()
    finally:
        engine.shutdown()
    assert local[-1]["policy/agent/tool_calls"] > 0
    assert _same(remote) == _same(local)
