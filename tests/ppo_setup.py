"""The tiny PPO config and engine builder shared by tests (a uniquely named module, so it
is never confused with another directory's conftest)."""

from __future__ import annotations

TINY_PPO = {
    "runtime_args": {
        "num_episode": 2, "sample_per_episode": 16, "generation_batch_size": 8,
        "train_global_batch_size": 8, "train_micro_batch_size": 4, "num_training_epoch": 1,
        "seed": 3, "progress": False,
    },
    "models": {
        "policy": {"args": {"max_prompt_len": 8, "max_new_tokens": 8, "d_model": 32}},
        "reference": {"args": {"d_model": 32}},
        "reward": {"args": {"kl_coef": 0.02}},
        "value": {"args": {"d_model": 32}},
        "ppo_policy": {"args": {"lr": 0.002, "d_model": 32}},
        "ppo_value": {"args": {"lr": 0.002, "d_model": 32}},
    },
}


def build_ppo(config: dict):
    """flowrl.init + the six tiny modules + RLHFEngine, with prompts set."""
    import flowrl
    from fixtures.tiny_ppo import (PolicyInference, PolicyReference, PolicyTrainer,
                                   RewardInference, ValueInference, ValueTrainer, make_prompts)

    flowrl.init(config)
    mods = dict(policy=PolicyInference("policy"), reference=PolicyReference("reference"),
                reward=RewardInference("reward"), value=ValueInference("value"),
                ppo_policy=PolicyTrainer("ppo_policy"), ppo_value=ValueTrainer("ppo_value"))
    engine = flowrl.RLHFEngine(*mods.values())
    engine.set_dataset(make_prompts(64))
    return engine, mods
