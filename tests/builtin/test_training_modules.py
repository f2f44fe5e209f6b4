"""Built-in training-side modules on a tiny local Llama: Advantage against the algorithm
library, Actor's loss and step, CriticTrainer against hand computation, and their bad inputs
(SFTTrainer and DPOTrainer: test_preference_sft_modules.py)."""

from __future__ import annotations

import pytest
import torch

from builtin._training_utils import B, N, init, llama, rollout  # noqa: F401  (fixture)
from flowrl.algorithms import (AlgorithmSettings, apply_overlong_penalty, compute_advantages,
                               compute_policy_loss, kl_in_reward, kl_loss)
from flowrl.errors import AlgorithmError, ConfigError
from flowrl.models.builtin.actor import Actor
from flowrl.models.builtin.advantage import Advantage
from flowrl.models.builtin.trainer_backends import full_sequence
from flowrl.models.hf import response_logprobs


def advantage(alg: dict) -> Advantage:
    cfg = init({"adv": {}})
    return Advantage("adv", AlgorithmSettings.from_dict(alg)).bind(cfg)


# ------------------------------------------------------------------------------ Advantage
@pytest.mark.parametrize("estimator,inputs", [
    ("grpo", {}), ("dr_grpo", {}), ("rloo", {}), ("reinforce_pp", {}),
    ("gae", {"values": "values"}), ("remax", {"baseline_rewards": "baseline_score"})])
def test_advantage_equals_library(estimator, inputs):
    data = rollout()
    out = advantage({"advantage": {"estimator": estimator}}).forward_step(data)
    ref = compute_advantages(estimator, data["score"], data["response_mask"], group_size=2,
                             **{k: data[v] for k, v in inputs.items()})
    torch.testing.assert_close(out["advantages"], ref.advantages)
    torch.testing.assert_close(out["returns"], ref.returns)


def test_advantage_kl_in_reward_and_overlong():
    data = rollout()
    mod = advantage({"advantage": {"estimator": "gae", "options": {"lam": 0.9}},
                     "kl": {"coef": 0.1, "estimator": "k1", "placement": "reward"},
                     "overlong": {"max_length": 5, "buffer": 2}})
    out = mod.forward_step(data)
    mask = data["response_mask"]
    score = apply_overlong_penalty(data["score"], mask, max_length=5, buffer=2)
    # lengths 5, 3, 4, 2 -> penalties -2/2, 0, -1/2, 0
    torch.testing.assert_close(score, torch.tensor([0.0, 0.0, 0.0, 0.25]))
    r = kl_in_reward(score, data["logprobs"], data["ref_logprobs"], mask, kl_coef=0.1,
                     estimator="k1")
    ref = compute_advantages("gae", r, mask, values=data["values"], lam=0.9)
    torch.testing.assert_close(out["advantages"], ref.advantages)
    logged = dict((k, v) for k, v, _ in mod.drain_logged())
    assert logged["score/mean"] == pytest.approx(0.0625)
    assert {"advantages/mean", "advantages/std", "kl_reward"} <= set(logged)


def test_advantage_kl_in_loss_leaves_rewards_alone():
    data = rollout()
    out = advantage({"kl": {"coef": 0.1, "placement": "loss"}}).forward_step(data)
    ref = compute_advantages("grpo", data["score"], data["response_mask"], group_size=2)
    torch.testing.assert_close(out["advantages"], ref.advantages)


@pytest.mark.parametrize("alg,key,producer", [
    ({"advantage": {"estimator": "gae"}}, "values", "Critic"),
    ({"advantage": {"estimator": "remax"}}, "baseline_score", "baseline_step"),
    ({"kl": {"coef": 0.1, "placement": "reward"}}, "ref_logprobs", "Reference"),
    ({}, "score", "reward")])
def test_advantage_missing_key(alg, key, producer):
    data = rollout()
    del data[key]
    mod = advantage(alg)
    with pytest.raises(AlgorithmError) as e:
        mod.forward_step(data)
    msg = str(e.value)
    assert f"advantage estimator {mod.estimator!r}" in msg and repr(key) in msg
    assert producer in msg


# ---------------------------------------------------------------------------------- Actor
def actor(llama: str, alg: dict | None = None, args: dict | None = None, **runtime) -> Actor:
    cfg = init({"actor": {"model_path": llama, "optim": {"lr": 1e-2, "grad_clip": None},
                          "args": args or {}}}, **runtime)
    a = Actor("actor", AlgorithmSettings.from_dict(alg or {})).bind(cfg)
    a.setup()
    return a


def with_policy(a: Actor, data: dict, advantages: torch.Tensor) -> list[dict]:
    """Behaviour log-probs from the actor's own weights (perturbed: the ratio is not 1)."""
    with torch.no_grad():
        lp = response_logprobs(a.model, *full_sequence(data)) * data["response_mask"]
    data = {**data, "logprobs": lp - 0.1 * data["response_mask"], "advantages": advantages}
    return [{k: v[:2] for k, v in data.items()}, {k: v[2:] for k, v in data.items()}]


def expected_loss(a: Actor, mbs: list[dict], alg: AlgorithmSettings, **options) -> float:
    total = 0.0
    with torch.no_grad():
        for mb in mbs:
            lp = response_logprobs(a.model, *full_sequence(mb))
            mask = mb["response_mask"].float()
            loss, _ = compute_policy_loss(alg.policy_loss.name, lp, mb["logprobs"],
                                          mb["advantages"], mask, **options)
            if alg.kl.placement == "loss" and alg.kl.coef > 0:
                loss = loss + kl_loss(lp, mb["ref_logprobs"], mask, kl_coef=alg.kl.coef,
                                      estimator=alg.kl.estimator,
                                      agg=options.get("agg", "token-mean"))[0]
            total += float(loss) / len(mbs)
    return total


def test_actor_step_loss_and_weights(llama):
    alg = {"policy_loss": {"name": "dapo", "options": {"clip_high": 0.3}}}
    a = actor(llama, alg)
    mbs = with_policy(a, rollout(), torch.tensor([1.0, -1.0, 0.5, -0.5]))
    want = expected_loss(a, mbs, a.algorithm, clip_high=0.3)
    before = [p.detach().clone() for p in a.model.parameters()]
    stats = a.train_step(mbs, 0)
    assert stats["loss"] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert stats["lr"] == pytest.approx(1e-2)
    assert {"pg_loss", "clipfrac", "kl", "entropy", "grad_norm"} <= set(stats)
    assert any(not torch.equal(b, p) for b, p in zip(before, a.model.parameters()))


def test_actor_dr_grpo_budget_from_generation(llama):
    a = actor(llama, {"policy_loss": {"name": "dr_grpo"}})
    a.bound_config.model("actor").generation.max_new_tokens = 7
    mbs = with_policy(a, rollout(), torch.tensor([1.0, -1.0, 0.5, -0.5]))
    want = expected_loss(a, mbs, a.algorithm, max_length=7)  # sum / (B * 7)
    assert a.train_step(mbs, 0)["loss"] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_actor_kl_in_loss_vs_reward(llama):
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    in_loss = {"kl": {"coef": 0.5, "estimator": "k3", "placement": "loss"}}
    a = actor(llama, in_loss)
    mbs = with_policy(a, rollout(), adv)
    want = expected_loss(a, mbs, a.algorithm)
    assert a.train_step(mbs, 0)["loss"] == pytest.approx(want, rel=1e-5, abs=1e-6)
    b = actor(llama, {"kl": {"coef": 0.5, "placement": "reward"}})
    mbs = with_policy(b, rollout(), adv)
    no_kl = expected_loss(b, mbs, AlgorithmSettings())  # fresh weights, pg only
    stats = b.train_step(mbs, 0)
    assert stats["loss"] == pytest.approx(no_kl, rel=1e-5, abs=1e-6)
    assert want != pytest.approx(no_kl)


def test_actor_kl_in_loss_needs_reference(llama):
    a = actor(llama, {"kl": {"coef": 0.1}})
    mbs = with_policy(a, rollout(), torch.ones(B))
    for mb in mbs:
        del mb["ref_logprobs"]
    with pytest.raises(AlgorithmError, match="'ref_logprobs'.*Reference"):
        a.train_step(mbs, 0)


def test_actor_stale_samples_corrected(llama):
    from flowrl.algorithms.off_policy import correct_policy_loss

    a = actor(llama, max_staleness=1)
    mbs = with_policy(a, rollout(), torch.tensor([1.0, -1.0, 0.5, -0.5]))
    for mb in mbs:
        mb["weight_version"] = torch.tensor([0, 1])
    prox = a.proximal_logprobs(mbs)["proximal_logprobs"]
    assert len(prox) == 2 and prox[0].shape == (2, N)
    want = 0.0  # PPO token-mean, clip 0.2: the library's corrected loss (tis by default)
    with torch.no_grad():
        for mb in mbs:
            lp = response_logprobs(a.model, *full_sequence(mb))
            want += float(correct_policy_loss(lp, mb, mb["advantages"],
                                              mb["response_mask"].float(), 0.2,
                                              a.runtime_args.off_policy, 1)[0]) / 2
    stats = a.train_step(mbs, 4)  # iteration 4: version 1, the first rows are stale
    assert "off_policy/is_weight_mean" in stats
    assert stats["loss"] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_actor_entropy_bonus(llama):
    a = actor(llama, args={"entropy_coef": 0.1})
    mbs = with_policy(a, rollout(), torch.tensor([1.0, -1.0, 0.5, -0.5]))
    pg = expected_loss(a, mbs, a.algorithm)
    stats = a.train_step(mbs, 0)
    assert stats["loss"] == pytest.approx(pg - 0.1 * stats["entropy"], rel=1e-4, abs=1e-6)


def test_actor_unknown_backend(llama):
    init({"actor": {"model_path": llama, "args": {"backend": "jax"}}})
    with pytest.raises(ConfigError, match="models.actor.args.backend.*'jax'"):
        Actor("actor", AlgorithmSettings())


# --------------------------------------------------------------------------- CriticTrainer
def test_critic_trainer_value_loss(llama):
    from flowrl.models.builtin.critic_trainer import CriticTrainer, clipped_value_loss
    from flowrl.models.hf import response_values

    cfg = init({"critic": {"model_path": llama, "optim": {"lr": 1e-2},
                           "args": {"clip_eps": 0.1}}})
    c = CriticTrainer("critic").bind(cfg)
    c.setup()
    data = rollout()
    data["returns"] = torch.randn(B, N) * data["response_mask"]
    mbs = [{k: v[:2] for k, v in data.items()}, {k: v[2:] for k, v in data.items()}]
    want = 0.0
    with torch.no_grad():
        for mb in mbs:
            v = response_values(c.model, *full_sequence(mb))
            m = mb["response_mask"].float()
            err = (v - mb["returns"]).square()
            clipped = mb["values"] + (v - mb["values"]).clamp(-0.1, 0.1)
            per = torch.maximum(err, (clipped - mb["returns"]).square())
            want += float(0.5 * (per * m).sum() / m.sum()) / 2
    stats = c.train_step(mbs, 0)
    assert stats["value_loss"] == pytest.approx(want, rel=1e-5)
    assert {"vf_clipfrac", "grad_norm", "lr"} <= set(stats)
    # 2 rows by hand: V = [1, 3], V_old = [0, 0], R = [2, 2], eps = 0.5 -> per-token
    # max((V-R)^2, (clip - R)^2) = max(1, 2.25), max(1, 2.25) -> 0.5 * 2.25
    one = torch.ones(2, 1)
    loss, s = clipped_value_loss(torch.tensor([[1.0], [3.0]]), 0 * one, 2 * one, one, 0.5)
    assert float(loss) == pytest.approx(1.125) and float(s["vf_clipfrac"]) == 1.0
    del mbs[0]["returns"]
    with pytest.raises(AlgorithmError, match="'returns'.*Advantage"):
        c.train_step(mbs, 1)


def test_critic_trainer_rejects_megatron(llama):
    from flowrl.models.builtin.critic_trainer import CriticTrainer

    init({"critic": {"model_path": llama, "args": {"backend": "megatron"}}})
    with pytest.raises(ConfigError, match="models.critic.args.backend.*hf, deepspeed.*'megatron'"):
        CriticTrainer("critic")


@pytest.mark.parametrize("temperature,used", [(0.5, 0.5), (0.0, 1.0)])
def test_actor_logprobs_at_the_policy_temperature(llama, temperature, used):
    cfg = init({"actor": {"model_path": llama, "generation": {"temperature": temperature}}})
    a = Actor("actor", AlgorithmSettings()).bind(cfg)
    a.setup()
    data = rollout()
    tokens, attn, p = full_sequence(data)
    with torch.no_grad():
        want = response_logprobs(a.model, tokens, attn, p, used)
        got = a.proximal_logprobs(data)["proximal_logprobs"]
    torch.testing.assert_close(got, want * data["response_mask"])
