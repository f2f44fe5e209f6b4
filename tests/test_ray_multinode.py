"""PPO across two Ray nodes on this machine: a node is lost mid-run, the error names the models
it took with it, and a replacement node resumes the run exactly.

Two raylets (``ray.cluster_utils.Cluster``) offer distinct custom resources, ``node_a`` and
``node_b``; ``models.<name>.ray_node_resource`` pins the policy side to one node and the
value/reward side to the other.
"""

from __future__ import annotations

import re

import pytest

from flowrl import StageError
from ppo_setup import build_ppo

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NODE_A = ("policy", "reference", "ppo_policy")
NODE_B = ("reward", "value", "ppo_value")


def _node_args(resource: str) -> dict:
    return {"num_cpus": 1, "resources": {"flowrl_device": 3, resource: 3}}


@pytest.fixture
def cluster():
    assert not ray.is_initialized()
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={**_node_args("node_a"), "include_dashboard": False})
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _comparable(row: dict) -> dict:
    return {k: v for k, v in row.items()
            if not (k.startswith("time/") or k.endswith("_per_s") or k == "sync/gbps")}


def test_a_lost_node_is_named_and_a_replacement_resumes_exactly(cluster, tiny_ppo_config,
                                                                tmp_path):
    node_b = cluster.add_node(**_node_args("node_b"))
    cfg = tiny_ppo_config
    cfg["runtime_args"].update(num_episode=3, save_episode_interval=1, output_dir=str(tmp_path))
    local_cfg = {**cfg, "runtime_args": {**cfg["runtime_args"],
                                         "output_dir": str(tmp_path / "uninterrupted")}}
    cfg.update(runtime="ray", ray_address=cluster.address)
    for name in NODE_A:
        cfg["models"][name]["ray_node_resource"] = "node_a"
    for name in NODE_B:
        cfg["models"][name]["ray_node_resource"] = "node_b"

    engine, _ = build_ppo(cfg)
    try:
        engine.setup()
        ex = engine.executor
        placed = {m: ex.actor_nodes[(ex.model_group[m].name, 0)] for m in NODE_A + NODE_B}
        assert {placed[m] for m in NODE_B} == {node_b.node_id}
        assert node_b.node_id not in {placed[m] for m in NODE_A}

        save = engine.runner.save_checkpoint

        def save_then_lose_node_b():  # mid-run: right after episode 1's checkpoint
            path = save()
            if engine.runner.episode == 1:
                cluster.remove_node(node_b)
            return path

        engine.runner.save_checkpoint = save_then_lose_node_b
        with pytest.raises(StageError, match=r"episode 2\).*worker process died") as info:
            engine.learn()
        lost = re.search(r"models lost: ([\w, ]+) \(Ray node \w+ \(resources: ([\w, ]+)\) is "
                         r"gone\)", str(info.value))
        assert lost, str(info.value)
        assert sorted(lost.group(1).split(", ")) == sorted(NODE_B)
        assert "node_b" in lost.group(2).split(", ")

        cluster.add_node(**_node_args("node_b"))  # the replacement
        rows = engine.learn(resume=True)
    finally:
        engine.shutdown()
    assert [r["episode"] for r in rows] == [2, 3]

    uninterrupted, _ = build_ppo(local_cfg)  # the same run, uninterrupted, in one process
    expected = uninterrupted.learn()
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in expected[1:]]
