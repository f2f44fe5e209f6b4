"""The library reproduces the math the built-in engines carry today, so they can switch to it."""

from __future__ import annotations

import pytest
import torch

from flowrl.algorithms import compute_advantages, compute_policy_loss, kl_estimate, kl_in_reward, kl_loss
from flowrl.engines import grpo as grpo_engine
from flowrl.engines import ppo as ppo_engine


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float32)
    old = -torch.rand(4, 4, generator=g) * 2
    lp = old + 0.3 * torch.randn(4, 4, generator=g)
    ref = old + 0.2 * torch.randn(4, 4, generator=g)
    return lp, old, ref, mask


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimators_match_ppo_engine(kind):
    lp, _, ref, mask = _batch()
    torch.testing.assert_close(kl_estimate(lp, ref, mask, kind), ppo_engine.kl_estimate(lp, ref, kind) * mask)


def test_ppo_loss_matches_ppo_engine():
    lp, old, _, mask = _batch(1)
    adv = torch.randn(4, 4, generator=torch.Generator().manual_seed(2)) * mask
    ours, m = compute_policy_loss("ppo", lp, old, adv, mask, clip_low=0.1)
    theirs, s = ppo_engine.policy_loss(lp, old, adv, mask, clip_eps=0.1)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(m["clipfrac"], s["clipfrac"])


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_grpo_loss_plus_kl_loss_matches_grpo_engine(agg):
    lp, old, ref, mask = _batch(3)
    adv = torch.tensor([1.0, -0.5, 0.25, -1.0])
    pg, _ = compute_policy_loss("grpo", lp, old, adv, mask, clip_low=0.2, agg=agg)
    kl, _ = kl_loss(lp, ref, mask, kl_coef=0.04, estimator="k3", agg=agg)
    theirs, _ = grpo_engine.grpo_loss(lp, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.04,
                                      kl_kind="k3", loss_agg=agg)
    torch.testing.assert_close(pg + kl, theirs)


def test_grpo_and_gae_advantages_match_the_engines():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.2, 0.9])
    ours = compute_advantages("grpo", scores, torch.ones(8, 1), group_size=4).advantages[:, 0]
    torch.testing.assert_close(ours, grpo_engine.group_advantages(scores, 4))
    lp, _, ref, mask = _batch(4)
    values = torch.randn(4, 4, generator=torch.Generator().manual_seed(5))
    score = torch.tensor([1.0, -1.0, 0.5, 0.0])
    rewards = kl_in_reward(score, lp, ref, mask, kl_coef=0.05, estimator="k1")
    out = compute_advantages("gae", rewards, mask, values=values, gamma=0.99, lam=0.9)
    theirs = ppo_engine.ppo_advantages(score, lp, ref, values, mask, kl_coef=0.05, gamma=0.99,
                                       lam=0.9, kl_kind="k1")
    torch.testing.assert_close(rewards, theirs["token_rewards"])
    torch.testing.assert_close(out.advantages, theirs["advantages"])
    torch.testing.assert_close(out.returns, theirs["returns"])
