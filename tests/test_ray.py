"""The Ray runtime on a real local Ray cluster (2 CPUs, virtual devices)."""

from __future__ import annotations

import json
import time

import pytest
import torch

import flowrl
from flowrl import BaseModule, Engine, StageError, flow
from ppo_setup import build_ppo

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]


def _comparable(row):
    return {k: v for k, v in row.items()
            if not (k.startswith("time/") or k.endswith("_per_s") or k == "sync/gbps")}


def test_ray_run_matches_local_run_exactly(tiny_ppo_config, tmp_path):
    engine, _ = build_ppo(tiny_ppo_config)
    local = engine.learn()
    tiny_ppo_config["runtime"] = "ray"
    tiny_ppo_config["runtime_args"]["output_dir"] = str(tmp_path)
    engine, _ = build_ppo(tiny_ppo_config)
    try:
        remote = engine.learn()
        assert len(engine.executor.groups) == 6  # no colocation: one worker group per model
    finally:
        engine.shutdown()
    assert [_comparable(r) for r in remote] == [_comparable(r) for r in local]
    trace = json.loads((tmp_path / "runtime_trace.json").read_text())
    assert {e["name"] for e in trace["traceEvents"]} >= {"policy.forward_step",
                                                         "ppo_policy.train_step"}


def test_data_parallel_trainer_syncs_into_single_replica_inference(tiny_ppo_config):
    tiny_ppo_config["runtime"] = "ray"
    tiny_ppo_config["runtime_args"]["num_episode"] = 1
    # The value trainer: its loss is a plain mean per micro-batch, so DP=2 is the same math
    # as one process (the policy trainer whitens over its replica's share of the batch).
    tiny_ppo_config["models"]["ppo_value"]["data_parallel_size"] = 2
    engine, _ = build_ppo(tiny_ppo_config)
    try:
        rows = engine.learn()
        ex = engine.executor
        assert ex.model_group["ppo_value"].replicas == 2
        states = [ray.get(w.state.remote("ppo_value")) for w in ex.replicas("ppo_value")]
        value = ray.get(ex.replicas("value")[0].state.remote("value"))
    finally:
        engine.shutdown()
    a, b = states[0]["model"], states[1]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # gradients were averaged across replicas
    assert all(torch.equal(a[k], value["model"][k]) for k in a)  # DP=2 -> DP=1 sync
    assert rows[0]["sync/bytes"] > 0
    # the same run in one process: same math, up to the order of the gradient sum
    tiny_ppo_config["runtime"] = "local"
    engine, mods = build_ppo(tiny_ppo_config)
    engine.learn()
    local = mods["ppo_value"].model.state_dict()
    assert all(torch.allclose(a[k], local[k], atol=1e-5) for k in a)


class Slow(BaseModule):
    """Sleeps instead of computing: concurrency shows up even on a busy 2-core machine."""

    def build_dataset(self, prompts, is_eval=False):
        from test_data import DefaultCollate
        return DefaultCollate(len(prompts))

    def forward_step(self, data, iteration=0):
        time.sleep(0.25)
        return {self.name: data["query"] if "query" in data else data[next(iter(data))]}

    def train_step(self, data, iteration):
        return {"n": float(len(data))}


def test_stages_on_disjoint_devices_overlap():
    flowrl.init({"runtime": "ray",
                 "runtime_args": {"sample_per_episode": 8, "generation_batch_size": 2,
                                  "train_global_batch_size": 8, "train_micro_batch_size": 8,
                                  "progress": False},
                 "models": {"gen": {}, "score": {}, "trainer": {}}})
    gen, score, trainer = Slow("gen"), Slow("score"), Slow("trainer")

    @flow
    def rollout(batch):
        out = gen.forward_step(batch)
        return out, score.forward_step(out)

    @flow
    def train(batch):
        trainer.train_step(batch)

    engine = Engine(rollout, train)
    engine.set_dataset(list(range(8)))
    try:
        row = engine.learn()[0]
        stage_sum = sum(r.seconds for r in engine.executor.records if r.role == "rollout")
    finally:
        engine.shutdown()
    # 4 batches x 2 stages x 0.25 s = 2 s if run one after the other; pipelined ~1.25 s
    assert stage_sum >= 1.9
    assert row["time/rollout_s"] < 0.85 * stage_sum, (row["time/rollout_s"], stage_sum)


def test_a_dead_actor_is_reported_and_resume_loses_no_step(tiny_ppo_config, tmp_path):
    tiny_ppo_config["runtime"] = "ray"
    tiny_ppo_config["runtime_args"].update(num_episode=4, save_episode_interval=1,
                                           output_dir=str(tmp_path))
    engine, _ = build_ppo(tiny_ppo_config)
    try:
        engine.learn(num_episode=2)  # checkpoints after episodes 1 and 2
        ray.kill(engine.executor.replicas("reference")[0])
        with pytest.raises(StageError, match=r"model 'reference', replica 0.*worker process died"):
            engine.learn(num_episode=4)
        rows = engine.learn(num_episode=4, resume=True)  # fresh workers, from episode 2
    finally:
        engine.shutdown()
    assert [r["episode"] for r in rows] == [3, 4]
    tiny_ppo_config["runtime"] = "local"
    tiny_ppo_config["runtime_args"]["output_dir"] = str(tmp_path / "uninterrupted")
    uninterrupted, _ = build_ppo(tiny_ppo_config)
    expected = uninterrupted.learn()
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in expected[2:]]


def test_colocated_models_share_a_worker_and_offload_for_real(tiny_ppo_config):
    """A compiled schedule that must offload runs on Ray: colocated models share one worker
    process, the offload/onload ops move real bytes there, and the numbers do not change."""
    from flowrl.compiler import ClusterSpec

    # sizes for planning: the tiny GPTs (d_model 32) have about 33k parameters each
    for name, section in tiny_ppo_config["models"].items():
        section.update(num_params=1 if name == "reward" else 33_000, num_layers=2,
                       hidden_size=32, vocab_size=47, max_seq_len=16, dtype="fp32")
    cluster = ClusterSpec.local(1, memory_gb=0.0012)  # too small to keep every model resident
    engine, _ = build_ppo(tiny_ppo_config)
    local_schedule = engine.compile(cluster=cluster, strategy="colocate")
    engine.schedule = local_schedule
    local = engine.learn()
    assert engine.executor.offload_ops > 0

    tiny_ppo_config["runtime"] = "ray"
    engine, _ = build_ppo(tiny_ppo_config)
    engine.schedule = engine.compile(cluster=cluster, strategy="colocate")
    try:
        remote = engine.learn()
        ex = engine.executor
        assert len(ex.groups) == 1 and ex.groups[0].replicas == 1  # one shared process
        assert ex.offload_ops > 0 and ex.offload_bytes > 0 and ex.onload_bytes > 0
    finally:
        engine.shutdown()
    assert [_comparable(r) for r in remote] == [_comparable(r) for r in local]
