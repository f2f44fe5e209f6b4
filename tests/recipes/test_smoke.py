"""One-episode runs of the other families through ``flowrl.recipes.build``: the trainers'
weights change, the policy receives them, the metrics are there."""

from __future__ import annotations

from pathlib import Path

import torch

from flowrl.models.hf import load_causal_lm
from flowrl.recipes import build


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def _changed(before: dict, module) -> bool:
    after = module.model.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def _run(path, overrides=()):
    engine, data = build(path, list(overrides))
    engine.setup()
    before = {n: _snapshot(m) for n, m in engine.modules.items() if hasattr(m, "model")}
    try:
        rows = engine.learn()
        changed = {n: _changed(b, engine.modules[n]) for n, b in before.items()}
    finally:
        engine.shutdown()
    return rows, changed, data


def test_ppo_one_episode(train_yaml):
    (row,), changed, _ = _run(train_yaml("ppo"))
    assert changed == {"policy": True, "reference": False, "critic": True, "actor": True,
                       "critic_trainer": True}  # trainers stepped and synced; reference frozen
    for key in ("actor/pg_loss", "critic_trainer/value_loss", "advantage/advantages/std",
                "advantage/kl_reward", "reward/reward/mean"):
        assert key in row and row[key] == row[key], key  # present and not NaN


def test_dpo_one_episode(train_yaml):
    (row,), changed, data = _run(train_yaml("dpo"), ["runtime_args.num_training_epoch=3"])
    assert changed == {"actor": True}
    assert len(data.train) == 16 and {"prompt", "chosen", "rejected"} <= set(data.train[0])
    assert row["feed/samples"] == 16
    for key in ("actor/loss", "actor/margin", "actor/accuracy"):
        assert key in row, key
    assert row["actor/margin"] > 0  # three passes over the pairs: chosen pulls ahead


def test_sft_loss_falls(train_yaml):
    rows, changed, _ = _run(train_yaml("sft"), ["runtime_args.num_episode=3"])
    assert changed == {"actor": True}
    losses = [r["actor/loss"] for r in rows]
    assert losses[-1] < losses[0] * 0.8, losses


def test_flowrl_train_from_python_evaluates_the_eval_split(train_yaml):
    import flowrl

    engine = flowrl.train(train_yaml("grpo"), overrides=[
        "algorithm.kl.coef=0", "data.eval_fraction=0.25", "runtime_args.eval_episode_interval=1"])
    (row,) = engine.history
    assert engine.executor is None  # released at the end
    assert 0 <= row["eval/score"] <= 1 and "eval/reward/reward/mean" in row
    assert row["reward/reward/calls"] >= 1 and row["time/eval_s"] > 0
    # the trained policy, as a Hugging Face directory, in the run's directory
    saved = Path(engine.config.runtime_args.output_dir) / "model"
    assert (saved / "config.json").is_file() and (saved / "tokenizer_config.json").is_file()
    trained = load_causal_lm(saved, "fp32", "cpu").state_dict()
    initial = load_causal_lm(engine.config.models["policy"].model_path, "fp32", "cpu").state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_flowrl_train_takes_callbacks_that_can_stop_the_run(train_yaml):
    import flowrl

    seen = []

    def stop_after_first(engine, episode, metrics):  # a plain function: on_episode_end
        seen.append((episode, "actor/pg_loss" in metrics))
        engine.control.should_training_stop = True

    engine = flowrl.train(train_yaml("grpo"), overrides=[
        "algorithm.kl.coef=0", "runtime_args.num_episode=3"], callbacks=[stop_after_first])
    assert seen == [(1, True)] and [r["episode"] for r in engine.history] == [1]
