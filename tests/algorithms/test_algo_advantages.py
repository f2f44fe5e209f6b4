"""Advantage estimators against hand-computed values, plus properties."""

from __future__ import annotations

import math

import pytest
import torch

from flowrl.algorithms import compute_advantages, group_normalize
from flowrl.errors import AlgorithmError

NAN = float("nan")


def approx(t: torch.Tensor, expected: list, tol: float = 1e-5) -> None:
    torch.testing.assert_close(t.double(), torch.tensor(expected, dtype=torch.float64),
                               atol=tol, rtol=0)


def test_grpo_population_and_unbiased_std():
    s = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    mask = torch.ones(8, 1)
    # mean 0.25; population var 0.75/4 = 0.1875 (std 0.4330127); unbiased var 0.75/3 = 0.25
    pop = compute_advantages("grpo", s, mask, group_size=4, eps=0.0).advantages[:, 0]
    approx(pop, [1.7320508, -0.5773503, -0.5773503, -0.5773503, 0, 0, 0, 0])
    unb = compute_advantages("grpo", s, mask, group_size=4, std="unbiased", eps=0.0).advantages
    approx(unb[:, 0], [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0])
    noscale = compute_advantages("grpo", s, mask, group_size=4, scale=False).advantages
    approx(noscale[:, 0], [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    # default eps = 1e-6 is added to the std: 0.75 / (0.4330127 + 1e-6)
    default = compute_advantages("grpo", s, mask, group_size=4).advantages
    assert default[0, 0].item() == pytest.approx(0.75 / (math.sqrt(0.1875) + 1e-6), rel=1e-6)


def test_grpo_broadcasts_on_real_tokens_and_sums_token_rewards():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    token_rewards = torch.tensor([[1.0, 2.0, NAN], [0.0, NAN, NAN]])  # scores 3 and 0
    out = compute_advantages("grpo", token_rewards, mask, group_size=2, eps=0.0)
    approx(out.advantages, [[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    assert torch.equal(out.returns, out.advantages)


def test_dr_grpo_has_no_std():
    s = torch.tensor([3.0, 1.0, 0.0, 4.0])
    out = compute_advantages("dr_grpo", s, torch.ones(4, 2), group_size=2).advantages
    approx(out[:, 0], [1.0, -1.0, -2.0, 2.0])


def test_rloo_leave_one_out():
    # baselines: (0+6)/2 = 3, (3+6)/2 = 4.5, (3+0)/2 = 1.5
    out = compute_advantages("rloo", torch.tensor([3.0, 0.0, 6.0]), torch.ones(3, 1), group_size=3)
    approx(out.advantages[:, 0], [0.0, -4.5, 4.5])


def test_rloo_baseline_excludes_self():
    torch.manual_seed(0)
    s = torch.randn(12)
    mask = torch.ones(12, 1)
    base = s - compute_advantages("rloo", s, mask, group_size=4).advantages[:, 0]
    for i in range(12):
        s2 = s.clone()
        s2[i] += 10.0  # a sample's own score never enters its baseline
        b2 = s2 - compute_advantages("rloo", s2, mask, group_size=4).advantages[:, 0]
        assert b2[i].item() == pytest.approx(base[i].item(), abs=1e-5)
        others = [j for j in range(i // 4 * 4, i // 4 * 4 + 4) if j != i]
        assert all(abs(b2[j] - base[j]) > 3.0 for j in others)


@pytest.mark.parametrize("name,group_size", [("grpo", 2), ("grpo", 5), ("dr_grpo", 4),
                                             ("rloo", 3), ("rloo", 6)])
def test_group_estimators_are_zero_mean_per_group(name, group_size):
    torch.manual_seed(group_size)
    s = torch.randn(6 * group_size)
    adv = compute_advantages(name, s, torch.ones(len(s), 1), group_size=group_size).advantages
    per_group = adv[:, 0].reshape(-1, group_size)
    approx(per_group.mean(1), [0.0] * 6)
    if name == "grpo":  # unit population std (eps = 0)
        unit = group_normalize(s, group_size, eps=0.0).reshape(-1, group_size)
        approx(unit.std(1, correction=0), [1.0] * 6)


def test_reinforce_pp_kl_in_reward_discounted_and_whitened():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.1, NAN]])
    # token rewards: [-0.05, -0.1, 0.85], [0, -0.05]; returns (gamma 1): [0.7, 0.75, 0.85], [-0.05, -0.05]
    out = compute_advantages("reinforce_pp", torch.tensor([1.0, 0.0]), mask, kl=kl, kl_coef=0.5,
                             eps=0.0)
    approx(out.returns, [[0.70, 0.75, 0.85], [-0.05, -0.05, 0.0]])
    # mean 0.44, population var 0.1624, std 0.4029888
    approx(out.advantages, [[0.645179, 0.769252, 1.017398], [-1.215914, -1.215914, 0.0]])
    half = compute_advantages("reinforce_pp", torch.tensor([1.0, 0.0]), mask, kl=kl, kl_coef=0.5,
                              gamma=0.5).returns
    approx(half, [[0.1125, 0.325, 0.85], [-0.025, -0.05, 0.0]])


def test_gae_hand_values():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [0.2, NAN, NAN]])
    out = compute_advantages("gae", torch.tensor([1.0, 1.0]), mask, values=values, gamma=0.9, lam=0.5)
    # deltas: 0.7, -0.13, -0.14 ; A2 = 0.7, A1 = -0.13 + 0.45*0.7, A0 = -0.14 + 0.45*A1
    approx(out.advantages, [[-0.05675, 0.185, 0.7], [0.8, 0.0, 0.0]])
    approx(out.returns, [[0.44325, 0.585, 1.0], [1.0, 0.0, 0.0]])
    mc = compute_advantages("gae", torch.tensor([1.0, 1.0]), mask, values=values, gamma=1.0, lam=1.0)
    approx(mc.advantages[0], [0.5, 0.6, 0.7])
    w = compute_advantages("gae", torch.tensor([1.0, 1.0]), mask, values=values, whiten=True)
    assert w.advantages[mask != 0].mean().item() == pytest.approx(0.0, abs=1e-6)


def test_remax_subtracts_the_greedy_reward():
    out = compute_advantages("remax", torch.tensor([1.0, 0.0, 0.5]), torch.ones(3, 2),
                             baseline_rewards=torch.tensor([0.5, 0.5, 0.5]))
    approx(out.advantages, [[0.5, 0.5], [-0.5, -0.5], [0.0, 0.0]])
    with pytest.raises(AlgorithmError, match=r"'remax': baseline_rewards must be \[B\] = \(3,\), got \(2,\)"):
        compute_advantages("remax", torch.ones(3), torch.ones(3, 2), baseline_rewards=torch.ones(2))


def test_bad_inputs_name_the_estimator_and_argument():
    m = torch.ones(6, 2)
    with pytest.raises(AlgorithmError, match="the batch has 6 samples, not a multiple of group_size=4"):
        compute_advantages("grpo", torch.ones(6), m, group_size=4)
    with pytest.raises(AlgorithmError, match="'rloo': group_size must be >= 2"):
        compute_advantages("rloo", torch.ones(6), m, group_size=1)
    with pytest.raises(AlgorithmError, match="std='unbiased' needs group_size >= 2"):
        compute_advantages("grpo", torch.ones(6), m, group_size=1, std="unbiased")
    with pytest.raises(AlgorithmError, match="std must be 'population' or 'unbiased', got 'sample'"):
        compute_advantages("grpo", torch.ones(6), m, group_size=2, std="sample")
    with pytest.raises(AlgorithmError, match=r"'grpo': rewards must be \[B\] sequence scores or \[B, T\]"):
        compute_advantages("grpo", torch.ones(5), m, group_size=1)
    shape = r"'gae': values must have the mask's shape \(6, 2\), got \(6, 3\)"
    with pytest.raises(AlgorithmError, match=shape):
        compute_advantages("gae", torch.ones(6), m, values=torch.ones(6, 3))
    with pytest.raises(AlgorithmError, match="group_size must be a positive int, got True"):
        compute_advantages("dr_grpo", torch.ones(6), m, group_size=True)
