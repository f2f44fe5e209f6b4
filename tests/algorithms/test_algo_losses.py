"""Policy losses against hand-computed values; GSPO's gradient against the sequence form."""

from __future__ import annotations

import math

import pytest
import torch

from flowrl.algorithms import compute_policy_loss
from flowrl.errors import AlgorithmError

# ratios exp(logprobs - old): row 0 [1.5, 0.5, 1.1] with A = +1, row 1 [0.7, 1.3, pad] with A = -1
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, float("nan")]])
RATIOS = torch.tensor([[1.5, 0.5, 1.1], [0.7, 1.3, 1.0]])
ADV = torch.tensor([1.0, -1.0])


def logprobs() -> torch.Tensor:
    lp = torch.where(MASK != 0, OLD + RATIOS.log(), torch.tensor(float("inf")))
    return lp.requires_grad_(True)


def loss_of(name: str, **options) -> tuple[float, dict]:
    loss, metrics = compute_policy_loss(name, logprobs(), OLD, ADV, MASK, **options)
    return loss.item(), {k: v.item() for k, v in metrics.items()}


# PPO-clip 0.2 per token: -min(1.5, 1.2) = -1.2, -0.5, -1.1 | max(0.7, 0.8) = 0.8, 1.3
@pytest.mark.parametrize("agg,expected", [
    ("token-mean", -0.7 / 5),
    ("seq-mean-token-mean", (-2.8 / 3 + 2.1 / 2) / 2),
    ("seq-mean-token-sum", (-2.8 + 2.1) / 2),
])
def test_ppo_aggregations(agg, expected):
    assert loss_of("ppo", agg=agg)[0] == pytest.approx(expected, abs=1e-6)


def test_constant_normalised_token_sum_dr_grpo():
    # sum over every token / (B * max_length) = -0.7 / (2 * 4)
    assert loss_of("ppo", agg="seq-mean-token-sum-norm", max_length=4)[0] == pytest.approx(-0.0875)
    assert loss_of("dr_grpo", max_length=4)[0] == pytest.approx(-0.0875)
    with pytest.raises(AlgorithmError, match="'seq-mean-token-sum-norm' needs max_length"):
        loss_of("ppo", agg="seq-mean-token-sum-norm")


def test_grpo_loss_is_ppo_with_sequence_mean():
    assert loss_of("grpo")[0] == pytest.approx((-2.8 / 3 + 2.1 / 2) / 2)


def test_ppo_metrics():
    _, m = loss_of("ppo")
    assert m["clipfrac"] == pytest.approx(0.4)  # 1.5 (A > 0) and 0.7 (A < 0)
    assert m["clipfrac_high"] == pytest.approx(0.2)
    assert m["clipfrac_low"] == pytest.approx(0.2)
    assert m["ratio_mean"] == pytest.approx(1.02)
    # mean of r - 1 - log r over 1.5, 0.5, 1.1, 0.7, 1.3
    kl = (0.0945349 + 0.1931472 + 0.0046898 + 0.0566749 + 0.0376357) / 5
    assert m["approx_kl"] == pytest.approx(kl, abs=1e-6)
    assert m["pg_loss"] == pytest.approx(-0.14)


def test_dapo_decoupled_clip():
    # clip range [0.8, 1.28]: -min(1.5, 1.28) = -1.28; max(1.3, 1.28) = 1.3
    loss, m = loss_of("dapo")
    assert loss == pytest.approx((-1.28 - 0.5 - 1.1 + 0.8 + 1.3) / 5)
    assert loss_of("ppo", clip_low=0.2, clip_high=0.28)[0] == pytest.approx(loss)
    assert m["clipfrac_high"] == pytest.approx(0.2) and m["clipfrac_low"] == pytest.approx(0.2)


def test_gspo_sequence_ratio():
    # s_0 = (1.5 * 0.5 * 1.1)^(1/3) = 0.9378887, A = +1: -min(s, 0.9997) = -s
    # s_1 = (0.7 * 1.3)^(1/2) = 0.9539392, A = -1: max(s, 0.9997) = 0.9997 (clipped)
    loss, m = loss_of("gspo")
    assert loss == pytest.approx((-0.9378887 + 0.9997) / 2, abs=1e-6)
    assert m["ratio_mean"] == pytest.approx((3 * 0.9378887 + 2 * 0.9539392) / 5, abs=1e-6)
    assert m["clipfrac"] == pytest.approx(2 / 5)


def test_gspo_gradient_equals_the_sequence_level_objective():
    lp = logprobs()
    loss, _ = compute_policy_loss("gspo", lp, OLD, ADV, MASK, clip_low=0.5, clip_high=0.5)
    (g_token,) = torch.autograd.grad(loss, lp)
    lp2 = logprobs()
    d = torch.where(MASK != 0, lp2 - OLD, torch.zeros(()))
    s = torch.exp(d.sum(1) / MASK.sum(1))
    seq = torch.maximum(-ADV * s, -ADV * s.clamp(0.5, 1.5)).mean()
    (g_seq,) = torch.autograd.grad(seq, lp2)
    assert loss.item() == pytest.approx(seq.item(), abs=1e-6)
    torch.testing.assert_close(g_token, g_seq)
    assert g_token[1, 2].item() == 0.0  # padding gets no gradient


def test_token_advantages_and_gradient_masking():
    lp = logprobs()
    adv_tokens = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, float("nan")]])
    loss, _ = compute_policy_loss("ppo", lp, OLD, adv_tokens, MASK)
    assert loss.item() == pytest.approx(-0.14)
    loss.backward()
    assert lp.grad[1, 2].item() == 0.0 and lp.grad[0, 0].item() == 0.0  # pad; clipped token
    assert lp.grad[0, 1].item() == pytest.approx(-0.5 / 5)  # d(-A r)/dlogp = -A r, token mean


def test_bad_inputs():
    with pytest.raises(AlgorithmError, match="unknown loss aggregation 'mean'; expected one of token-mean"):
        loss_of("ppo", agg="mean")
    with pytest.raises(AlgorithmError, match="'ppo': need 0 <= clip_low < 1 .* clip_low=1.5"):
        loss_of("ppo", clip_low=1.5)
    with pytest.raises(AlgorithmError, match=r"'ppo': old_logprobs must have the mask's shape \(2, 3\)"):
        compute_policy_loss("ppo", logprobs(), OLD[:, :2], ADV, MASK)
    with pytest.raises(AlgorithmError, match="policy loss 'dr_grpo' has no option 'max_len'"):
        loss_of("dr_grpo", max_len=4)
    assert math.isfinite(loss_of("gspo")[0])
