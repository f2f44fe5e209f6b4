"""``Policy.args.behaviour_logprobs: false`` saves the rollout's scoring forward; the Actor then
uses its own detached log-probs, which is the same update exactly when the generating weights
take one optimizer step on the batch (and an error otherwise)."""

from __future__ import annotations

import pytest
import torch

import flowrl
from flowrl.algorithms import AlgorithmSettings
from flowrl.errors import AlgorithmError
from flowrl.models.builtin.actor import Actor
from flowrl.models.builtin.policy import Policy
from flowrl.models.builtin.trainer_backends import full_sequence
from flowrl.models.hf import response_logprobs, save_tiny_llama


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return str(save_tiny_llama(tmp_path_factory.mktemp("behaviour") / "llama"))


def config(llama: str, **runtime) -> flowrl.FlowRLConfig:
    ra = {"sample_per_episode": 4, "generation_batch_size": 4, "train_global_batch_size": 4,
          "train_micro_batch_size": 2, **runtime}
    trainer = {"model_path": llama, "optim": {"lr": 1e-2, "grad_clip": None}}
    return flowrl.init({"runtime_args": ra, "models": {
        "policy": {"model_path": llama, "generation": {"max_new_tokens": 4},
                   "args": {"behaviour_logprobs": False}},
        "a": trainer, "b": trainer}})


def rollout(cfg: flowrl.FlowRLConfig) -> dict:
    policy = Policy("policy").bind(cfg)
    policy.setup()
    data = policy.build_dataset(["abc", "hello", "xy", "zzz"])
    torch.manual_seed(0)
    out = policy.forward_step(data.collate_fn([data[i] for i in range(4)]))
    assert "logprobs" not in out  # the scoring forward did not run
    return {**out, "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5])}


def actor(cfg: flowrl.FlowRLConfig, name: str) -> Actor:
    a = Actor(name, AlgorithmSettings.from_dict({"policy_loss": {"name": "grpo"}})).bind(cfg)
    a.setup()
    return a


def halves(data: dict) -> list[dict]:
    return [{k: v[:2] for k, v in data.items()}, {k: v[2:] for k, v in data.items()}]


def test_one_step_on_own_logprobs_equals_the_step_on_behaviour_logprobs(llama):
    cfg = config(llama)
    data = rollout(cfg)
    with_lp, without = actor(cfg, "a"), actor(cfg, "b")
    with torch.no_grad():  # what the policy would have logged: the same weights' log-probs
        lp = response_logprobs(with_lp.model, *full_sequence(data)) * data["response_mask"]
    stats_a = with_lp.train_step(halves({**data, "logprobs": lp}), 0)
    stats_b = without.train_step(halves(data), 0)
    assert stats_b["clipfrac"] == 0 and stats_b["pg_loss"] == pytest.approx(stats_a["pg_loss"],
                                                                            abs=1e-6)
    for (name, p), q in zip(with_lp.model.named_parameters(), without.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("runtime,named", [
    ({"num_training_epoch": 2}, "runtime_args.num_training_epoch=2"),
    ({"train_global_batch_size": 2}, "2 optimizer steps per episode"),
])
def test_missing_logprobs_off_policy_is_an_error(llama, runtime, named):
    cfg = config(llama, **runtime)
    data = rollout(cfg)
    with pytest.raises(AlgorithmError) as e:
        actor(cfg, "a").train_step(halves(data), 0)
    assert "behaviour_logprobs" in str(e.value) and named in str(e.value)
    assert str(e.value).startswith("a: ")
