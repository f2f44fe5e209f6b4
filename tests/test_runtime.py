"""Parameter sync, offload, stage errors and end-to-end episodes on the local runtime."""

from __future__ import annotations

import json

import pytest
import torch

import flowrl
from flowrl import BaseModule, Engine, Evaluator, TorchModule, flow
from flowrl.errors import FlowRLError, KeyCollisionError, StageError
from flowrl.runtime.sync import sync_parameters
from ppo_setup import build_ppo


class Linear(TorchModule):
    def __init__(self, name, seed, shape=(3, 2)):
        super().__init__(name)
        self.seed, self.shape = seed, shape

    def setup(self):
        torch.manual_seed(self.seed)
        self.model = torch.nn.Linear(*self.shape)
        self.optimizer = torch.optim.Adam(self.model.parameters())


def test_parameter_sync_changes_the_inference_weights():
    flowrl.init({"models": {"a": {}, "b": {}}})
    src, dst = Linear("a", 0), Linear("b", 1)
    src.setup(), dst.setup()
    before = dst.model.weight.clone()
    assert not torch.equal(before, src.model.weight)
    stats = sync_parameters(src, dst)
    assert torch.equal(dst.model.weight, src.model.weight)
    assert torch.equal(dst.model.bias, src.model.bias)
    assert dst.model.weight.data_ptr() != src.model.weight.data_ptr()  # a copy, not aliasing
    assert stats.tensors == 2 and stats.bytes == (6 + 2) * 4


def test_sync_reports_mismatches_and_offloaded_state():
    flowrl.init({"models": {"a": {}, "b": {}}})
    src, dst = Linear("a", 0), Linear("b", 1, shape=(4, 2))
    src.setup(), dst.setup()
    with pytest.raises(FlowRLError, match=r"cannot sync a -> b: shape mismatches: "
                                          r"weight: \(2, 3\) vs \(2, 4\)"):
        sync_parameters(src, dst)
    ok = Linear("c", 2)
    flowrl.get_args().models["c"] = flowrl.ModelConfig()
    ok.setup()
    ok.offload(("weights",))
    with pytest.raises(FlowRLError, match="the weights of 'c' are offloaded"):
        sync_parameters(src, ok)


def test_offload_releases_and_onload_restores_state():
    flowrl.init({"models": {"a": {}}})
    m = Linear("a", 0)
    m.setup()
    m.model(torch.ones(1, 3)).sum().backward()
    m.optimizer.step()
    w = m.model.weight.clone()
    moved = m.offload()
    assert moved > 0 and m.is_offloaded
    assert m.model.weight.numel() == 0 and m.model.weight.grad is None
    with pytest.raises(RuntimeError):
        m.model(torch.ones(1, 3))
    assert m.onload() == moved
    assert torch.equal(m.model.weight, w) and not m.is_offloaded
    assert m.offload_count == 1 and m.onload_count == 1
    m.optimizer.step()  # optimizer state came back too
    m.model(torch.ones(1, 3)).sum().backward()
    m.offload()
    m.onload(("grads", "optimizer", "weights"))  # any order: weights come back first
    assert m.model.weight.grad.shape == m.model.weight.shape and not m.is_offloaded


class Source(BaseModule):
    def build_dataset(self, prompts, is_eval=False):
        from test_data import DefaultCollate
        return DefaultCollate(len(prompts))

    def forward_step(self, data, iteration=0):
        return {"x": data["query"].float()}


class Broken(BaseModule):
    def forward_step(self, data, iteration=0):
        return {"y": data["x"] @ torch.ones(5, 5)}


class Clash(BaseModule):
    def forward_step(self, data, iteration=0):
        return {"x": data["x"]}  # undeclared: the clash is caught when data meets


class Sink(BaseModule):
    def forward_step(self, data, iteration=0):
        return {"z": data["x"]}

    def train_step(self, data, iteration):
        return {"n": float(len(data))}


def _run(rollout_body, models):
    flowrl.init({"runtime_args": {"sample_per_episode": 4, "generation_batch_size": 2,
                                  "train_global_batch_size": 4, "train_micro_batch_size": 2,
                                  "progress": False},
                 "models": {m: {} for m in models}})
    mods = {n: cls(n) for n, cls in models.items()}

    @flow
    def train(batch):
        mods["sink"].train_step(batch)

    engine = Engine(flow(rollout_body(mods), name="rollout"), train)
    engine.set_dataset(list(range(8)))
    return engine


def test_a_failing_call_names_model_method_episode_and_inputs():
    engine = _run(lambda m: lambda b: m["broken"].forward_step(m["source"].forward_step(b)),
                  {"source": Source, "broken": Broken, "sink": Sink})
    with pytest.raises(StageError, match=r"broken.forward_step failed \(model 'broken', "
                                         r"Broken.forward_step, episode 1, iteration 0.*\{x:\(2,\)\}"
                                         r".*RuntimeError") as e:
        engine.learn()
    assert isinstance(e.value.__cause__, RuntimeError)  # the real cause is kept


def test_undeclared_key_clash_is_caught_at_run_time():
    def body(m):
        def rollout(b):
            s = m["source"].forward_step(b)
            return m["sink"].forward_step(s, m["clash"].forward_step(s))
        return rollout

    engine = _run(body, {"source": Source, "clash": Clash, "sink": Sink})
    with pytest.raises(KeyCollisionError, match="key 'x' is produced by both source.forward_step "
                                                "and clash.forward_step"):
        engine.learn()


def test_train_step_gets_micro_batches_and_metrics_are_logged():
    engine = _run(lambda m: lambda b: m["sink"].forward_step(m["source"].forward_step(b)),
                  {"source": Source, "sink": Sink})
    rows = engine.learn()
    assert rows[0]["sink/n"] == 2.0  # global batch 4 / micro batch 2
    assert rows[0]["samples"] == 4.0


def test_tiny_ppo_reward_improves_and_metrics_are_written(tiny_ppo_config, tmp_path):
    cfg = tiny_ppo_config
    cfg["runtime_args"].update(num_episode=12, sample_per_episode=32, generation_batch_size=16,
                               train_global_batch_size=16, train_micro_batch_size=8,
                               num_training_epoch=2, output_dir=str(tmp_path))
    for m in ("ppo_policy", "ppo_value"):
        cfg["models"][m]["args"]["lr"] = 0.003
    engine, mods = build_ppo(cfg)
    rows = engine.learn()
    rewards = [r["reward/reward"] for r in rows]
    assert max(rewards[-3:]) > rewards[0] + 0.1, rewards
    # after every episode's sync the inference policy equals the trainer
    for a, b in zip(mods["policy"].model.parameters(), mods["ppo_policy"].model.parameters()):
        assert torch.equal(a, b)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 12
    row = json.loads(lines[-1])
    for key in ("reward/reward", "reward/kl", "ppo_policy/loss", "ppo_value/loss",
                "policy/generated_tokens_per_s", "sync/bytes", "time/episode_s"):
        assert key in row, key


def test_evaluator_runs_every_n_episodes(tiny_ppo_config):
    tiny_ppo_config["runtime_args"].update(num_episode=3, eval_episode_interval=2)
    engine, mods = build_ppo(tiny_ppo_config)

    @flow
    def evaluate(batch):
        out = mods["policy"].forward_step(batch)
        return mods["reward"].forward_step(out, mods["reference"].forward_step(out),
                                           mods["value"].forward_step(out))

    engine.set_evaluator(Evaluator(evaluate).set_dataset(["abc", "bcd", "cde"]))
    rows = engine.learn()
    assert "eval/score" not in rows[0] and "eval/score" in rows[1] and "eval/score" not in rows[2]
    assert 0.0 <= rows[1]["eval/score"] <= 1.0


def test_new_run_dir_starts_run_N_and_resume_continues_the_newest(tiny_ppo_config, tmp_path,
                                                                   capsys):
    cfg = tiny_ppo_config
    cfg["runtime_args"].update(num_episode=1, output_dir=str(tmp_path), new_run_dir=True,
                               save_episode_interval=1)
    for n in (1, 2):
        engine, _ = build_ppo(cfg)
        capsys.readouterr()
        engine.learn()
        out = capsys.readouterr().out
        run = tmp_path / f"run-{n}"
        assert f"metrics: {run}/metrics.jsonl" in out and f"checkpoints: {run}/checkpoints" in out
        assert (run / "metrics.jsonl").is_file() and (run / "op_profile.jsonl").is_file()
        assert (run / "checkpoints" / "episode_0001").is_dir()
    assert not (tmp_path / "metrics.jsonl").exists()
    cfg["runtime_args"].update(num_episode=2, resume=True)
    engine, _ = build_ppo(cfg)
    assert [r["episode"] for r in engine.learn()] == [2]
    assert flowrl.get_args().runtime_args.output_dir == str(tmp_path / "run-2")
    assert len((tmp_path / "run-2" / "metrics.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "run-1" / "metrics.jsonl").read_text().splitlines()) == 1
