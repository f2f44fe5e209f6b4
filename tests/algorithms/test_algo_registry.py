"""Registries: one-decorator extension, lookups by name, errors naming kind, name and options."""

from __future__ import annotations

import pytest
import torch

from flowrl.algorithms import (ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES, AdvantageOutput, Registry,
                               advantage_inputs, compute_advantages, compute_policy_loss, kl_estimate,
                               register_advantage, register_kl, register_policy_loss)
from flowrl.errors import AlgorithmError, FlowRLError, UnknownAlgorithmError

MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_builtins_are_registered():
    assert ADVANTAGES.names() == ["dr_grpo", "gae", "grpo", "reinforce_pp", "remax", "rloo"]
    assert POLICY_LOSSES.names() == ["dapo", "dr_grpo", "grpo", "gspo", "ppo"]
    assert KL_ESTIMATORS.names() == ["k1", "k2", "k3"]


def test_user_advantage_with_one_decorator():
    @register_advantage("const_baseline")
    def const_baseline(rewards, mask, *, group_size=1, baseline=0.5):
        adv = (rewards - baseline)[:, None] * mask
        return AdvantageOutput(adv, adv)

    try:
        out = compute_advantages("const_baseline", torch.tensor([1.0, 0.0]), MASK, baseline=0.25)
        assert out.advantages.tolist() == [[0.75, 0.75, 0.0], [-0.25, -0.25, -0.25]]
        assert "const_baseline" in ADVANTAGES
    finally:
        ADVANTAGES.unregister("const_baseline")
    assert "const_baseline" not in ADVANTAGES


def test_user_policy_loss_and_kl_with_one_decorator():
    @register_policy_loss("reinforce")
    def reinforce(logprobs, old_logprobs, advantages, mask):
        return -(logprobs * advantages[:, None] * mask).sum(), {}

    @register_kl("abs")
    def abs_kl(logprobs, ref_logprobs):
        return (logprobs - ref_logprobs).abs()

    try:
        lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
        loss, _ = compute_policy_loss("reinforce", lp, lp, torch.tensor([1.0, -1.0]), MASK)
        assert loss.item() == pytest.approx(-(-3.0) + (-3.0))
        kl = kl_estimate(lp, torch.zeros_like(lp), MASK, "abs")
        assert kl.tolist() == [[1.0, 2.0, 0.0], [1.0, 1.0, 1.0]]
    finally:
        POLICY_LOSSES.unregister("reinforce")
        KL_ESTIMATORS.unregister("abs")


def test_unknown_name_names_kind_and_lists_registered():
    with pytest.raises(UnknownAlgorithmError) as e:
        compute_advantages("grpoo", torch.ones(2), MASK)
    msg = str(e.value)
    assert "unknown advantage estimator 'grpoo' (did you mean 'grpo'?)" in msg
    assert "registered: dr_grpo, gae, grpo, reinforce_pp, remax, rloo" in msg
    assert isinstance(e.value, FlowRLError) and isinstance(e.value, LookupError)
    with pytest.raises(UnknownAlgorithmError, match="unknown policy loss 'clip'.*registered: dapo"):
        POLICY_LOSSES.get("clip")
    with pytest.raises(UnknownAlgorithmError, match="unknown KL estimator 'k9'.*k1, k2, k3"):
        KL_ESTIMATORS.get("k9")


def test_registering_a_name_twice_is_an_error_unless_replace():
    reg: Registry = Registry("widget")

    @reg.register("a")
    def first():
        return 1

    with pytest.raises(AlgorithmError, match="widget 'a' is already registered .*first.*replace=True"):
        reg.register("a")(lambda: 2)

    @reg.register("a", replace=True)
    def second():
        return 2

    assert reg.get("a")() == 2
    with pytest.raises(AlgorithmError, match="widget 'b': expected a function, got int"):
        reg.register("b")(3)
    with pytest.raises(AlgorithmError, match="a widget needs a non-empty string name, got ''"):
        reg.register("")


def test_unknown_option_and_missing_input_name_the_estimator():
    with pytest.raises(AlgorithmError) as e:
        compute_advantages("grpo", torch.ones(2), MASK, group_size=2, stdd="unbiased")
    assert "advantage estimator 'grpo' has no option 'stdd'; it accepts" in str(e.value)
    assert "std, scale, eps" in str(e.value)
    with pytest.raises(AlgorithmError, match="advantage estimator 'gae' needs values"):
        compute_advantages("gae", torch.ones(2), MASK)
    with pytest.raises(AlgorithmError, match="policy loss 'ppo' has no option 'clip_eps'"):
        compute_policy_loss("ppo", torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), MASK,
                            clip_eps=0.2)


def test_advantage_inputs_tell_which_models_must_run():
    assert advantage_inputs("gae") == {"values"}
    assert advantage_inputs("remax") == {"baseline_rewards"}
    assert advantage_inputs("grpo") == set()
    assert advantage_inputs("reinforce_pp") == set()
