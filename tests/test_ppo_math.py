"""PPO math against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from flowrl.engines import ppo


def test_gae_matches_hand_computed_values():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 1.0, 1.5], [1.0, 2.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2: last token is padding
    from flowrl import kernels

    adv, ret = kernels.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # delta_t = r_t + gamma * V_{t+1} - V_t ; A_t = delta_t + gamma * lam * A_{t+1}
    assert torch.allclose(adv, torch.tensor([[1.9112, 0.71, 0.5], [0.08, -1.0, 0.0]]), atol=1e-5)
    assert torch.allclose(ret, torch.tensor([[2.4112, 1.71, 2.0], [1.08, 1.0, 0.0]]), atol=1e-5)


def test_kl_estimators():
    lp, ref = torch.tensor([0.0]), torch.tensor([-0.5])
    assert ppo.kl_estimate(lp, ref, "k1").item() == pytest.approx(0.5)
    assert ppo.kl_estimate(lp, ref, "k2").item() == pytest.approx(0.125)
    assert ppo.kl_estimate(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)
    with pytest.raises(ValueError, match="unknown KL estimator 'k9'"):
        ppo.kl_estimate(lp, ref, "k9")


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    r = ppo.token_rewards(torch.tensor([1.0, 2.0, 3.0]), kl, mask, kl_coef=0.5)
    expected = torch.tensor([[-0.05, -0.1, 1.0 - 0.15, 0.0], [2.0 - 0.25, 0, 0, 0], [0, 0, 0, 0.0]])
    assert torch.allclose(r, expected)


def test_ppo_advantages_combine_kl_penalty_and_gae():
    mask = torch.tensor([[1.0, 1.0]])
    out = ppo.ppo_advantages(torch.tensor([1.0]), torch.tensor([[0.2, 0.0]]),
                             torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]]), mask,
                             kl_coef=0.5, gamma=1.0, lam=1.0)
    assert torch.allclose(out["token_rewards"], torch.tensor([[-0.1, 1.0]]))
    assert torch.allclose(out["advantages"], torch.tensor([[0.9, 1.0]]))
    assert torch.allclose(out["returns"], torch.tensor([[0.9, 1.0]]))


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    lp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.5), 3.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding: ignored
    loss, stats = ppo.policy_loss(lp, old, adv, mask, clip_eps=0.2)
    # per token max(-A r, -A clip(r)): max(-1.5,-1.2)=-1.2, max(-0.5,-0.8)=-0.5, max(1.5,1.2)=1.5
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5) / 3, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)


def test_policy_loss_gradient_is_zero_where_clipped():
    lp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = ppo.policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2))
    loss.backward()
    assert lp.grad[0, 0] == 0.0 and lp.grad[0, 1] == pytest.approx(-1.1 / 2)


def test_clipped_value_loss_by_hand():
    loss, stats = ppo.value_loss(torch.tensor([[1.5, 2.0]]), torch.tensor([[1.0, 2.0]]),
                                 torch.tensor([[2.0, 2.5]]), torch.tensor([[1.0, 0.0]]), 0.2)
    # clip(1.5, 1.0 +- 0.2) = 1.2 -> max((1.5-2)^2, (1.2-2)^2) = 0.64 -> 0.5 * 0.64
    assert loss.item() == pytest.approx(0.32)
    assert stats["vf_clipfrac"].item() == pytest.approx(1.0)


def test_whitening_ignores_padding():
    adv = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = ppo.whiten_advantages(adv, mask)
    assert w[0, 3] == 0.0
    assert ppo.masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert ppo.masked_mean(w.square(), mask).item() == pytest.approx(1.0, abs=1e-4)


def test_masked_mean_and_adaptive_kl():
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    m = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert ppo.masked_mean(x, m).item() == pytest.approx(13 / 3)
    assert torch.allclose(ppo.masked_mean(x, m, dim=1), torch.tensor([1.0, 6.0]))
    assert ppo.masked_mean(x, torch.zeros(2, 2)).item() == 0.0
    ctl = ppo.KLController(0.1, target=1.0, horizon=100)
    assert ctl.update(observed_kl=2.0, n_samples=10) == pytest.approx(0.1 * 1.02)
    assert ppo.KLController(0.1).update(5.0, 10) == 0.1
