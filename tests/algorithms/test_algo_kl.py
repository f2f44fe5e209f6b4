"""KL estimators k1/k2/k3 by hand; KL in reward vs KL in loss."""

from __future__ import annotations

import math

import pytest
import torch

from flowrl.algorithms import kl_estimate, kl_in_reward, kl_loss
from flowrl.errors import UnknownAlgorithmError

LN2 = math.log(2.0)
# token 0: p = 0.5, q = 0.25 (d = ln 2); token 1: p = 0.25, q = 0.5 (d = -ln 2)
LP = torch.tensor([[math.log(0.5), math.log(0.25)]])
REF = torch.tensor([[math.log(0.25), math.log(0.5)]])
MASK = torch.ones(1, 2)


@pytest.mark.parametrize("name,expected", [
    ("k1", [LN2, -LN2]),
    ("k2", [LN2 ** 2 / 2, LN2 ** 2 / 2]),
    ("k3", [0.5 - 1 + LN2, 2 - 1 - LN2]),  # q/p - 1 - log(q/p)
])
def test_estimators(name, expected):
    assert kl_estimate(LP, REF, MASK, name)[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_padding_is_ignored_even_when_nan_or_inf():
    lp = torch.tensor([[math.log(0.5), float("nan"), float("inf")]])
    ref = torch.tensor([[math.log(0.25), 3.0, float("-inf")]])
    mask = torch.tensor([[1, 0, 0]])
    for name in ("k1", "k2", "k3"):
        kl = kl_estimate(lp, ref, mask, name)
        assert torch.isfinite(kl).all() and kl[0, 1:].tolist() == [0.0, 0.0]


def test_kl_in_reward():
    # score 1 on the last token; -0.1 * k1 on each token
    r = kl_in_reward(torch.tensor([1.0]), LP, REF, MASK, kl_coef=0.1, estimator="k1")
    assert r[0].tolist() == pytest.approx([-0.1 * LN2, 1 + 0.1 * LN2], abs=1e-6)
    token = kl_in_reward(torch.tensor([[0.5, 0.5]]), LP, REF, MASK, kl_coef=0.0)
    assert token[0].tolist() == [0.5, 0.5]


def test_kl_in_loss():
    lp = LP.clone().requires_grad_(True)
    loss, m = kl_loss(lp, REF, MASK, kl_coef=0.1, estimator="k3")
    # 0.1 * mean(0.1931472, 0.3068528) = 0.1 * 0.25
    assert loss.item() == pytest.approx(0.025, abs=1e-6)
    assert m["kl"].item() == pytest.approx(0.25, abs=1e-6)
    loss.backward()  # d k3 / d log p = 1 - q/p: (1 - 0.5, 1 - 2) * 0.1 / 2
    assert lp.grad[0].tolist() == pytest.approx([0.025, -0.05], abs=1e-6)
    summed, _ = kl_loss(LP, REF, MASK, kl_coef=1.0, agg="seq-mean-token-sum")
    assert summed.item() == pytest.approx(0.5, abs=1e-6)


def test_unknown_estimator():
    with pytest.raises(UnknownAlgorithmError, match="unknown KL estimator 'k4'.*registered: k1, k2, k3"):
        kl_estimate(LP, REF, MASK, "k4")
