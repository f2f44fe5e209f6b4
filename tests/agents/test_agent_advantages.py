"""Advantages on multi-turn batches: GAE skips the observations between turns; GRPO and RLOO
read the episode return."""

from __future__ import annotations

import torch

from flowrl import algorithms as algo
from flowrl.agents import multi_turn_gae

MASK = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0]]).float()  # row 0: two turns
REWARDS = torch.tensor([[0, 0.25, 0, 0, 0, 1.0], [0, 0, 1.0, 0, 0, 0]])
VALUES = torch.tensor([[0.5, 0.5, 9, 9, 0.5, 0.5], [0.2, 0.3, 0.4, 7, 7, 7]])


def test_gae_carries_later_turns_rewards_back_across_observations():
    out = multi_turn_gae(REWARDS, VALUES, MASK, gamma=1.0, lam=1.0)
    # the first turn's tokens see the second turn's reward (Monte-Carlo return 1.25)
    assert out.returns[0].tolist() == [1.25, 1.25, 0, 0, 1.0, 1.0]
    assert out.advantages[0].tolist() == [0.75, 0.75, 0, 0, 0.5, 0.5]
    # the kernel alone stops at the first 0 of the mask: the first turn never sees the 1.0
    plain = algo.compute_advantages("gae", REWARDS, MASK, values=VALUES, gamma=1.0, lam=1.0)
    assert plain.returns[0, 0].item() == 0.25


def test_gae_equals_the_kernel_on_single_turn_rows():
    single = MASK[1:]
    ours = multi_turn_gae(REWARDS[1:], VALUES[1:], single, gamma=0.99, lam=0.95)
    ref = algo.compute_advantages("gae", REWARDS[1:], single, values=VALUES[1:], gamma=0.99,
                                  lam=0.95)
    torch.testing.assert_close(ours.advantages, ref.advantages * single)
    torch.testing.assert_close(ours.returns, ref.returns * single)


def test_group_estimators_put_the_episode_advantage_on_policy_tokens_only():
    score = torch.tensor([1.25, 1.0, 0.0, 0.5])
    mask = torch.cat([MASK, MASK])
    for name in ("grpo", "rloo"):
        adv = algo.compute_advantages(name, score, mask, group_size=2).advantages
        assert (adv[mask == 0] == 0).all()
        assert torch.allclose(adv[0][mask[0] == 1], adv[0, 0].expand(4))
