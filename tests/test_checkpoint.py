"""Checkpoints: atomic writes, corruption detection, and bit-identical resume."""

from __future__ import annotations

import json
import os
import pickle
import random
import warnings

import numpy as np
import pytest
import torch

import flowrl
from flowrl.errors import ConfigError
from flowrl.ir import Schedule
from flowrl.runtime.executor import LocalExecutor
from flowrl.runtime.checkpoint import (MANIFEST, CheckpointError, CheckpointManager,
                                       CheckpointWarning, preserved_rng, rng_state,
                                       set_rng_state)
from ppo_setup import TINY_PPO, build_ppo
from tiny_engines import one_thread  # noqa: F401 (fixture)
from tiny_engines import (TINY_DPO, TINY_GRPO, build_dpo, build_grpo, comparable, config,
                          module_tensors)

pytestmark = pytest.mark.usefixtures("one_thread")


def _assert_same_state(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# ---- RNG ----------------------------------------------------------------------------------
def test_rng_state_round_trips_python_numpy_and_torch():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])
    with preserved_rng():
        random.random(), np.random.rand(), torch.rand(5)
    after = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    random.random(), np.random.rand(), torch.rand(3)
    assert after[:2] == (random.random(), np.random.rand())


# ---- the manager --------------------------------------------------------------------------
def _parts(x: float) -> dict:
    return {"runner": {"episode": 1, "rng": rng_state(), "names": ["a", "b"], "x": x},
            "modules/policy": {"model": {"w": torch.full((3,), x)}}}


def test_save_is_atomic_and_load_round_trips(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(1, _parts(1.0))
    assert path == tmp_path / "episode_0001"
    manifest = json.loads((path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"runner.pt", "modules/policy.pt"}
    assert manifest["episode"] == 1 and all(len(f["sha256"]) == 64
                                            for f in manifest["files"].values())
    assert [p.name for p in tmp_path.iterdir()] == ["episode_0001"]  # no temporaries left
    ckpt = mgr.load(path)
    assert ckpt.episode == 1 and ckpt.parts["runner"]["names"] == ["a", "b"]
    assert torch.equal(ckpt.modules()["policy"]["model"]["w"], torch.ones(3))
    mgr.save(1, _parts(2.0))  # saving an episode again replaces it whole
    assert mgr.load(path).parts["runner"]["x"] == 2.0


def test_an_interrupted_save_is_ignored_and_cleaned_up(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _parts(1.0))
    crashed = tmp_path / ".tmp-episode_0002-123-abcd"  # a save killed before its rename
    crashed.mkdir()
    (crashed / "runner.pt").write_bytes(b"partial")
    assert mgr.load_latest().episode == 1
    mgr.save(2, _parts(2.0))
    assert not crashed.exists()


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated"),
    ("flip", "SHA-256"),
    ("no_manifest", "incomplete: no manifest.json"),
    ("missing_file", "modules/policy.pt is missing"),
])
def test_a_damaged_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage, message):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _parts(1.0))
    bad = mgr.save(2, _parts(2.0))
    f = bad / "modules" / "policy.pt"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "no_manifest":
        (bad / MANIFEST).unlink()
    else:
        f.unlink()
    with pytest.raises(CheckpointError, match=message):
        mgr.load(bad)
    with pytest.warns(CheckpointWarning, match=message):
        ckpt = mgr.load_latest()
    assert ckpt.episode == 1 and ckpt.parts["runner"]["x"] == 1.0
    assert mgr.skipped and mgr.skipped[0][0] == bad


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_refuses_arbitrary_pickles_even_with_a_valid_manifest(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(1, _parts(1.0))
    target = path / "runner.pt"
    torch.save({"evil": _Evil()}, target, pickle_module=pickle)
    manifest = json.loads((path / MANIFEST).read_text())
    import hashlib

    manifest["files"]["runner.pt"] = {"bytes": target.stat().st_size,
                                      "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        mgr.load(path)
    with pytest.warns(CheckpointWarning):
        assert mgr.load_latest() is None


def test_keep_last_prunes_old_checkpoints(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for ep in (1, 2, 3):
        mgr.save(ep, _parts(float(ep)))
    assert [ep for ep, _ in mgr.checkpoints()] == [2, 3]


def test_checkpointing_needs_a_directory():
    with pytest.raises(ConfigError, match="save_episode_interval needs a place for checkpoints"):
        flowrl.init({"runtime_args": {"save_episode_interval": 1}})


# ---- resume -----------------------------------------------------------------------------
BUILDERS = {
    "ppo": (lambda: config(TINY_PPO, num_episode=4), lambda c: build_ppo(c)[0]),
    "grpo": (lambda: config(TINY_GRPO, num_episode=4, eval_episode_interval=2),
             lambda c: build_grpo(c)),
    "dpo": (lambda: config(TINY_DPO, num_episode=4), lambda c: build_dpo(c, False)),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_k_episodes_then_resume_is_bit_identical_to_one_run(kind, tmp_path):
    make_cfg, build = BUILDERS[kind]

    full_cfg = make_cfg()
    full_cfg["runtime_args"]["output_dir"] = str(tmp_path / "full")
    full = build(full_cfg)
    full_rows = full.learn()

    cfg = make_cfg()
    cfg["runtime_args"].update(output_dir=str(tmp_path / "split"), save_episode_interval=1)
    first = build(cfg)
    first.learn(num_episode=2)  # "crashes" after two episodes
    assert (tmp_path / "split" / "checkpoints" / "episode_0002" / MANIFEST).is_file()

    cfg["runtime_args"]["resume"] = True
    resumed = build(cfg)  # a fresh process: new init, new modules
    rows = resumed.learn()
    assert [r["episode"] for r in rows] == [3, 4]
    assert comparable(resumed.history) == comparable(full_rows)
    _assert_same_state(module_tensors(resumed), module_tensors(full))
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == [1, 2, 3, 4]


def test_resume_skips_a_corrupt_latest_checkpoint_and_still_matches(tmp_path):
    full = build_grpo(config(TINY_GRPO, num_episode=4, output_dir=str(tmp_path / "full")))
    full_rows = full.learn()

    cfg = config(TINY_GRPO, num_episode=4, output_dir=str(tmp_path / "split"),
                 save_episode_interval=1)
    build_grpo(cfg).learn(num_episode=3)
    ckpt3 = tmp_path / "split" / "checkpoints" / "episode_0003" / "modules" / "grpo_policy.pt"
    ckpt3.write_bytes(ckpt3.read_bytes()[: ckpt3.stat().st_size // 2])

    resumed = build_grpo(cfg)
    with pytest.warns(CheckpointWarning, match="episode_0003.*truncated"):
        rows = resumed.learn(resume=True)
    assert [r["episode"] for r in rows] == [3, 4]  # episode 3 is redone from checkpoint 2
    assert comparable(resumed.history) == comparable(full_rows)
    _assert_same_state(module_tensors(resumed), module_tensors(full))


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    cfg = config(TINY_DPO, num_episode=1, output_dir=str(tmp_path), resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = build_dpo(cfg, False).learn()
    assert [r["episode"] for r in rows] == [1]


def test_checkpoint_holds_data_position_replay_and_counters(tmp_path):
    cfg = config(TINY_GRPO, num_episode=2, output_dir=str(tmp_path), save_episode_interval=2)
    engine = build_grpo(cfg, with_evaluator=False)
    engine.learn()
    ckpt = CheckpointManager(tmp_path / "checkpoints").load_latest()
    runner = ckpt.parts["runner"]
    assert ckpt.episode == 2 and runner["episode"] == 2
    assert runner["train_iteration"] == engine.runner.train_iteration == 4
    # 2 episodes x 2 rollout batches of 16 samples = 4 prompts each: 4 batches taken
    assert runner["prompts"] == engine.runner.prompts.state_dict()
    assert len(runner["replay"]) == 32 and set(runner["replay"][0]) >= {"response", "advantages"}
    assert set(ckpt.modules()) == {"policy", "reference", "reward", "grpo_policy"}
    assert set(ckpt.modules()["grpo_policy"]) == {"model", "optimizer"}
    assert [r["episode"] for r in runner["metrics"]] == [1, 2]


def test_an_offloaded_module_is_checkpointed_whole_and_stays_offloaded(tmp_path):
    from flowrl import TorchModule
    from flowrl.runtime.episodes import EpisodeRunner

    class Lin(TorchModule):
        def setup(self):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(3, 2)
            self.optimizer = torch.optim.Adam(self.model.parameters())

    cfg = flowrl.init({"models": {"lin": {}}})
    m = Lin("lin")
    m.setup()
    m.model(torch.ones(1, 3)).sum().backward()
    m.optimizer.step()
    expected = {k: v.clone() for k, v in m.model.state_dict().items()}
    exp_avg = m.optimizer.state[m.model.weight]["exp_avg"].clone()
    m.offload()

    runner = EpisodeRunner(LocalExecutor(Schedule({}, {}), {"lin": m}), cfg, None, None,
                           modules={"lin": m})
    state = runner.module_states()["lin"]
    assert m.is_offloaded and m.model.weight.numel() == 0
    for k, v in expected.items():
        assert torch.equal(state["model"][k], v)
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], exp_avg)
    runner.load_module_states({"lin": state})
    assert m.is_offloaded
    m.onload()
    assert torch.equal(m.model.weight, expected["weight"])


def test_optimizer_and_scheduler_state_survive_a_save_and_load(tmp_path):
    from flowrl import TorchModule
    from flowrl.runtime.episodes import EpisodeRunner

    class Sched(TorchModule):
        def setup(self):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(3, 2)
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1)
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 1, gamma=0.5)

        def step(self):
            self.optimizer.zero_grad()
            self.model(torch.ones(1, 3)).sum().backward()
            self.optimizer.step()
            self.scheduler.step()

    cfg = flowrl.init({"models": {"a": {}}})
    a = Sched("a")
    a.setup()
    for _ in range(3):
        a.step()
    mgr = CheckpointManager(tmp_path)
    mgr.save(3, {f"modules/{n}": s for n, s in
                 EpisodeRunner(LocalExecutor(Schedule({}, {}), {"a": a}), cfg, None, None,
                               modules={"a": a}).module_states().items()})

    flowrl.init({"models": {"a": {}}})
    b = Sched("a")
    b.setup()
    EpisodeRunner(LocalExecutor(Schedule({}, {}), {"a": b}), cfg, None, None,
                  modules={"a": b}).load_module_states(
        mgr.load_latest().modules())
    assert b.scheduler.last_epoch == 3 and b.optimizer.param_groups[0]["lr"] == 0.1 * 0.5 ** 3
    a.step(), b.step()  # the next step is the same in both
    assert torch.equal(a.model.weight, b.model.weight)
    assert b.scheduler.get_last_lr() == a.scheduler.get_last_lr()


# ---- retrying after a failure -----------------------------------------------------------
def _fail_once(module, method, at_iteration, exc):
    """Make ``module.method`` raise ``exc`` once, at ``at_iteration``."""
    original = getattr(module, method)
    state = {"raised": False}

    def flaky(data, iteration=0):
        if iteration == at_iteration and not state["raised"]:
            state["raised"] = True
            raise exc
        return original(data, iteration)

    setattr(module, method, flaky)


@pytest.mark.parametrize("model, method, iteration, exc", [
    ("reward", "forward_step", 4, RuntimeError("flaky reward server")),  # episode 3's rollout
    ("ppo_value", "train_step", 5, KeyboardInterrupt()),  # after episode 3's first step
])
def test_resume_after_a_failure_mid_episode_is_bit_identical(model, method, iteration, exc,
                                                             tmp_path):
    full, _ = build_ppo(config(TINY_PPO, num_episode=4, output_dir=str(tmp_path / "full")))
    full_rows = full.learn()

    cfg = config(TINY_PPO, num_episode=4, output_dir=str(tmp_path / "split"),
                 save_episode_interval=1)
    engine, mods = build_ppo(cfg)
    _fail_once(mods[model], method, iteration, exc)
    with pytest.raises((type(exc), flowrl.errors.StageError)):
        engine.learn()
    assert engine.runner.episode == 2  # episodes 1-2 done, episode 3 half applied
    rows = engine.learn(resume=True)  # same engine, same process: restarted from checkpoint 2
    assert [r["episode"] for r in rows] == [3, 4]
    assert comparable(engine.history) == comparable(full_rows)
    _assert_same_state(module_tensors(engine), module_tensors(full))
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == [1, 2, 3, 4]


# ---- resuming with a changed config -----------------------------------------------------
def test_resume_prints_config_changes_and_the_optimizer_follows_the_config(tmp_path, capsys):
    cfg = config(TINY_PPO, num_episode=1, output_dir=str(tmp_path), save_episode_interval=1)
    build_ppo(cfg)[0].learn()
    ckpt = CheckpointManager(tmp_path / "checkpoints").load_latest()
    assert json.loads(ckpt.parts["config"])["models"]["ppo_policy"]["args"]["lr"] == 0.002

    cfg["runtime_args"].update(num_episode=2, resume=True)
    cfg["models"]["ppo_policy"]["args"]["lr"] = 0.0005
    engine, mods = build_ppo(cfg)
    capsys.readouterr()
    engine.learn()
    out = capsys.readouterr().out
    assert "resume: config models.ppo_policy.args.lr: 0.002 in the checkpoint, now 0.0005" in out
    assert "resume: ppo_policy: optimizer group 0 lr: 0.002 in the checkpoint -> 0.0005" in out
    assert mods["ppo_policy"].optimizer.param_groups[0]["lr"] == 0.0005
    assert mods["ppo_value"].optimizer.param_groups[0]["lr"] == 0.002  # unchanged, kept
    assert mods["ppo_policy"].optimizer.state  # the moments came from the checkpoint


def test_a_changed_lr_under_a_scheduler_rescales_and_keeps_the_schedule():
    from flowrl import TorchModule

    class Sched(TorchModule):
        lr = 0.1

        def setup(self):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(3, 2)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr)
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 1, gamma=0.5)

    flowrl.init({"models": {"a": {}}})
    a = Sched("a")
    a.setup()
    for _ in range(2):
        a.optimizer.step(), a.scheduler.step()
    state = a.state_dict_for_checkpoint()
    flowrl.init({"models": {"a": {}}})
    b = Sched("a")
    b.lr = 0.2
    b.setup()
    b.load_checkpoint_state(state)
    assert b.optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 ** 2)
    assert b.scheduler.base_lrs == [0.2] and b.scheduler.last_epoch == 2
    assert b.resume_notes == ["optimizer group 0 initial_lr: 0.1 in the checkpoint -> 0.2 from "
                              "the current config"]
