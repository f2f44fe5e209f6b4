"""runtime_args.max_staleness in the runtime: k = 0 is the synchronous loop exactly, the bound
holds per sample, local == Ray, and a checkpoint taken mid-pipeline resumes exactly."""

from __future__ import annotations

import pytest
import torch

from flowrl import ConfigError
from flowrl.ir import EpisodeSpec
from flowrl.runtime.checkpoint import CheckpointManager
from flowrl.runtime.staleness import (RolloutQueue, StalenessError, check_bound,
                                      staleness_metrics, tag_samples)
from ppo_setup import TINY_PPO, build_ppo
from tiny_engines import one_thread  # noqa: F401 (fixture)
from tiny_engines import TINY_GRPO, build_grpo, comparable, config, module_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

BUILDERS = {"ppo": (TINY_PPO, lambda c: build_ppo(c)[0]),
            "grpo": (TINY_GRPO, lambda c: build_grpo(c, False))}


def _same_tensors(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _same_tensors(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same_tensors(x, y)
    else:
        assert a == b


def _record_trained_versions(engine) -> list[tuple[int, list[int]]]:
    """(episode, versions of the samples) of every train call, as the trainer receives them."""
    engine.setup()
    seen, run = [], engine.executor.run

    def spy(role, data, iteration):
        if role == "train":
            seen.append((engine.executor.episode,
                         [int(v) for mb in data for v in mb["weight_version"]]))
        return run(role, data, iteration)
    engine.executor.run = spy
    return seen


# ---- semantics: one source of truth --------------------------------------------------------
def test_episode_spec_defines_the_behaviour_version_and_the_rollout_order():
    sync = EpisodeSpec.from_counts(16, 8, 8, 1)
    assert sync.max_staleness == 0 and [sync.behaviour_version(e) for e in range(4)] == \
        [0, 1, 2, 3]
    assert [sync.rollouts_in(e, 4) for e in range(4)] == [[0], [1], [2], [3]]
    two = EpisodeSpec.from_counts(16, 8, 8, 1, max_staleness=2)
    assert [two.behaviour_version(e) for e in range(5)] == [0, 0, 0, 1, 2]
    assert [two.rollouts_in(e, 5) for e in range(5)] == [[0, 1, 2], [3], [4], [], []]
    assert EpisodeSpec.from_counts(16, 8, 8, 1, max_staleness=3).rollouts_in(0, 2) == [0, 1]


def test_max_staleness_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"max_staleness"):
        build_ppo(config(TINY_PPO, max_staleness=-1))


# ---- k = 0 is the synchronous loop ---------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_k0_equals_the_synchronous_run_exactly(kind):
    base, build = BUILDERS[kind]
    plain = build(config(base, num_episode=3))
    plain_rows = plain.learn()
    cfg = config(base, num_episode=3, max_staleness=0)
    zero = build(cfg)
    seen = _record_trained_versions(zero)
    rows = zero.learn()
    assert comparable(rows) == comparable(plain_rows)
    assert not any(k.startswith("staleness/") for k in rows[0])  # the same row as before
    _same_tensors(module_tensors(zero), module_tensors(plain))
    assert all(set(v) == {e} for e, v in seen)  # on-policy: version == episode


# ---- k >= 1: the bound, per sample ---------------------------------------------------------
@pytest.mark.parametrize("kind,k", [("ppo", 1), ("ppo", 2), ("grpo", 1), ("grpo", 2)])
def test_every_trained_sample_is_at_most_k_versions_old(kind, k):
    base, build = BUILDERS[kind]
    engine = build(config(base, num_episode=5, max_staleness=k))
    seen = _record_trained_versions(engine)
    rows = engine.learn()
    assert sorted({e for e, _ in seen}) == [0, 1, 2, 3, 4]
    for e, versions in seen:
        assert versions and all(e - k <= v <= e for v in versions)
        assert set(versions) == {max(0, e - k)}  # exactly the documented behaviour version
    assert [r["staleness/max"] for r in rows] == [float(min(e, k)) for e in range(5)]
    assert [r["staleness/mean"] for r in rows] == [float(min(e, k)) for e in range(5)]
    assert all(r["samples"] == base["runtime_args"]["sample_per_episode"] for r in rows)
    assert len(engine.runner.queue) == 0  # nothing generated past the last episode


def test_k1_trains_episode_e_on_the_same_prompts_as_the_synchronous_loop():
    """Only the generating weights differ: episode 1 (version 0 either way) is identical."""
    sync_rows = build_ppo(config(TINY_PPO, num_episode=2))[0].learn()
    async_rows = build_ppo(config(TINY_PPO, num_episode=2, max_staleness=1))[0].learn()
    first = {k: v for k, v in comparable(async_rows)[0].items() if not k.startswith("staleness")}
    assert first == comparable(sync_rows)[0]
    assert comparable(async_rows)[1] != comparable(sync_rows)[1]  # episode 2: version 0 data


def test_same_seed_and_k_give_the_same_run():
    runs = [build_grpo(config(TINY_GRPO, num_episode=3, max_staleness=1), False)
            for _ in range(2)]
    rows = [r.learn() for r in runs]
    assert comparable(rows[0]) == comparable(rows[1])
    _same_tensors(module_tensors(runs[0]), module_tensors(runs[1]))


def test_a_rollout_on_other_weights_than_scheduled_is_refused():
    engine = build_ppo(config(TINY_PPO, num_episode=2, max_staleness=1))[0]
    engine.setup()
    engine.executor.set_weight_version(3)  # as if a sync had overtaken the rollout
    with pytest.raises(StalenessError, match=r"the rollout of episode 1 ran on weight version "
                                             r"3, not 0 \(runtime_args.max_staleness=1\)"):
        engine.learn()


def test_the_bound_check_names_the_episode_sample_and_bound():
    samples = tag_samples([{"x": torch.tensor(1)} for _ in range(3)], 2)
    assert check_bound(samples, 3, 1) == [2, 2, 2]
    assert staleness_metrics([2, 2, 3], 3) == {"staleness/mean": 2 / 3, "staleness/max": 1.0}
    samples[1]["weight_version"] = torch.tensor(1)
    with pytest.raises(StalenessError, match=r"episode 4: sample 1 was generated by weight "
                                             r"version 1, outside \[2, 3\] allowed by "
                                             r"runtime_args.max_staleness=1"):
        check_bound(samples, 3, 1)
    with pytest.raises(StalenessError, match=r"already has a 'weight_version' key"):
        tag_samples(samples, 0)


def test_the_rollout_queue_is_bounded():
    q = RolloutQueue(1)
    q.put(0, ([], [], 0.0))
    q.put(1, ([], [], 0.0))
    with pytest.raises(StalenessError, match=r"more than 2 episodes of rollouts in flight .*"
                                             r"runtime_args.max_staleness=1"):
        q.put(2, ([], [], 0.0))
    with pytest.raises(StalenessError, match="generated twice"):
        q.put(1, ([], [], 0.0))
    assert q.take(0) == ([], [], 0.0)
    with pytest.raises(StalenessError, match=r"no rollout was generated for episode 1"):
        q.take(0)


# ---- checkpoint mid-pipeline -----------------------------------------------------------------
@pytest.mark.parametrize("kind,k", [("ppo", 1), ("grpo", 2)])
def test_resume_mid_pipeline_is_exact(kind, k, tmp_path):
    base, build = BUILDERS[kind]
    full = build(config(base, num_episode=4, max_staleness=k,
                        output_dir=str(tmp_path / "full")))
    full_rows = full.learn()

    cfg = config(base, num_episode=4, max_staleness=k, output_dir=str(tmp_path / "split"),
                 save_episode_interval=1)
    build(cfg).learn(num_episode=2)  # "crashes" after episode 2, rollouts of 3.. in flight
    ckpt = CheckpointManager(tmp_path / "split" / "checkpoints").load_latest()
    in_flight = ckpt.parts["runner"]["in_flight"]
    assert sorted(in_flight) == list(range(2, 2 + k))
    for episode, (samples, _, _) in in_flight.items():
        assert {int(s["weight_version"]) for s in samples} == {max(0, episode - k)}

    cfg["runtime_args"]["resume"] = True
    resumed = build(cfg)
    rows = resumed.learn()
    assert [r["episode"] for r in rows] == [3, 4]
    assert comparable(resumed.history) == comparable(full_rows)
    _same_tensors(module_tensors(resumed), module_tensors(full))


# ---- local == Ray --------------------------------------------------------------------------
@pytest.mark.ray
def test_ray_equals_local_at_k1(tmp_path):
    ray = pytest.importorskip("ray")
    cfg = config(TINY_PPO, num_episode=3, max_staleness=1)
    local_engine = build_ppo(cfg)[0]
    local = local_engine.learn()
    ray.init(address="local", num_cpus=2, resources={"flowrl_device": 16},
             include_dashboard=False, log_to_driver=False)
    try:
        cfg["runtime"] = "ray"
        engine = build_ppo(cfg)[0]
        try:
            remote = engine.learn()
            states = engine.executor.module_states()
        finally:
            engine.shutdown()
    finally:
        ray.shutdown()
    assert comparable(remote) == comparable(local)
    _same_tensors(states, local_engine.executor.module_states())


def test_learning_past_the_configured_episodes_keeps_the_bound():
    """learn(num_episode=...) beyond runtime_args.num_episode: the pipeline was filled for
    the configured episodes, so the next rollout is generated late, by the current weights."""
    engine = build_ppo(config(TINY_PPO, num_episode=2, max_staleness=1))[0]
    seen = _record_trained_versions(engine)
    engine.learn()
    rows = engine.learn(num_episode=4)
    assert [r["episode"] for r in rows] == [3, 4]
    assert [(e, set(v)) for e, v in seen] == [(0, {0}), (0, {0}), (1, {0}), (1, {0}),
                                              (2, {2}), (2, {2}), (3, {2}), (3, {2})]
    assert [r["staleness/max"] for r in engine.history] == [0.0, 1.0, 0.0, 1.0]

    one_call = build_ppo(config(TINY_PPO, num_episode=2, max_staleness=1))[0]
    one_call.learn(num_episode=4)  # one call: the pipeline is filled for 4 episodes
    assert [r["staleness/max"] for r in one_call.history] == [0.0, 1.0, 1.0, 1.0]
