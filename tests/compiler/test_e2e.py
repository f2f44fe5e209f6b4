"""End to end: the tiny PPO fixture compiled for a tiny local device runs with real offload."""

from __future__ import annotations

import math

import torch

import flowrl
from flowrl.compiler import ClusterSpec, check_residency

from compiler_helpers import tiny_config
from fixtures.tiny_ppo import (PolicyInference, PolicyReference, PolicyTrainer, RewardInference,
                               ValueInference, ValueTrainer, make_prompts)


def build_engine():
    flowrl.init(tiny_config())
    engine = flowrl.RLHFEngine(PolicyInference("policy"), PolicyReference("reference"),
                               RewardInference("reward"), ValueInference("value"),
                               PolicyTrainer("ppo_policy"), ValueTrainer("ppo_value"))
    engine.set_dataset(make_prompts(64))
    return engine


def test_tiny_ppo_runs_a_compiled_schedule_with_real_offload():
    engine = build_engine()
    # ~6 MB of model state would be resident without offload; the device holds 3 MB.
    engine.schedule = engine.compile(cluster=ClusterSpec.local(1, memory_gb=0.003),
                                     strategy="colocate")
    schedule = engine.schedule
    assert schedule.memory.peak_before[0] > schedule.memory.capacity[0]
    assert schedule.memory.peak_after[0] <= schedule.memory.capacity[0]
    check_residency(schedule)

    history = engine.learn()
    ex = engine.executor
    assert ex.schedule is schedule
    assert ex.offload_ops > 0 and ex.onload_ops > 0
    assert ex.offload_bytes > 0 and ex.onload_bytes > 0
    assert engine.modules["ppo_policy"].offload_count > 0
    assert len(history) == 2
    for row in history:
        for key in ("ppo_policy/loss", "ppo_value/loss", "reward/reward"):
            assert math.isfinite(row[key])

    # Offload is transparent: the same run without a cluster (no transfers) gives the same
    # numbers, and the synced policy holds exactly the trainer's weights.
    for m in engine.modules.values():
        m.onload(("weights", "grads", "optimizer"))
    policy, trainer = engine.modules["policy"].model, engine.modules["ppo_policy"].model
    for (name, a), (_, b) in zip(policy.named_parameters(), trainer.named_parameters()):
        assert torch.equal(a, b), name
    baseline = build_engine()
    plain = baseline.learn()
    assert baseline.executor.offload_ops == 0
    for got, want in zip(history, plain):
        for key in ("ppo_policy/loss", "ppo_value/loss", "reward/reward", "reward/kl"):
            assert got[key] == want[key], key
