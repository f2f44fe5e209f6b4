"""`flowrl train` skips the policy's scoring forward exactly when the Actor's own detached
log-probs are the behaviour ones (one optimizer step per rollout, no KL-in-reward)."""

from __future__ import annotations

import copy

import pytest

from flowrl.recipes.config import load_train_config

BASE = {
    "algorithm": {"name": "grpo", "kl": {"coef": 0.0}},
    "model": {"path": "no/such/model"},
    "data": {"path": "data.jsonl"},
    "reward": {"function": "rewards.py:score"},
    "runtime_args": {"num_inference_per_prompt": 4, "sample_per_episode": 16,
                     "generation_batch_size": 16, "train_global_batch_size": 16,
                     "train_micro_batch_size": 8},
    "models": {"policy": {"generation": {"max_new_tokens": 8}}},
}


def policy_args(**changes) -> dict:
    data = copy.deepcopy(BASE)
    for section, values in changes.items():
        data[section] = {**data[section], **values}
    return load_train_config(data).models["policy"].args


def test_one_step_per_rollout_skips_the_scoring_forward():
    assert policy_args()["behaviour_logprobs"] is False


@pytest.mark.parametrize("changes", [
    {"runtime_args": {"num_training_epoch": 2}},
    {"runtime_args": {"train_global_batch_size": 8}},
    {"runtime_args": {"max_staleness": 1}},
    {"algorithm": {"name": "rloo", "kl": {"coef": 0.05, "placement": "reward"}}},
])
def test_behaviour_logprobs_kept_when_needed(changes):
    assert "behaviour_logprobs" not in policy_args(**changes)


def test_the_users_value_wins():
    args = policy_args(models={"policy": {"args": {"behaviour_logprobs": True},
                                          "generation": {"max_new_tokens": 8}}})
    assert args["behaviour_logprobs"] is True
